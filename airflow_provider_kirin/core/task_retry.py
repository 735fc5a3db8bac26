"""Whether another try of the *Airflow task* can help after it failed with a Kirin error.

Not the retries of one HTTP request (``retry.py``): those happen inside a try. This is the one
decision behind both ways the provider tells Airflow what to do once a try has failed:

- from Airflow 3.3, :class:`~airflow_provider_kirin.retry_policy.KirinRetryPolicy` (the operators'
  default ``retry_policy``) turns it into a ``RetryDecision``;
- on 3.0-3.2, which have no retry policies, the operators raise an ``AirflowFailException`` for a
  ``fail`` decision (``operators/common.py``), and a ``retry`` decision's delay cannot be passed
  on: the task's own ``retry_delay`` applies.

The decision, for an error ``e``:

1. ``type(e).retryable`` is ``False`` (a request Kirin rejects, a refused or unauthorised key, bad
   input, a spend ceiling reached): **fail** now; the next try would fail the same way.
2. The generation failed (:class:`~airflow_provider_kirin.exceptions.KirinTaskFailedError`) and the
   operator has ``retry_failed_generations=False``: **fail** now (a retry pays for a new
   generation).
3. The server said when to come back (``Retry-After`` on the last answer): **retry** after that
   many seconds.
4. Anything else: the task's own ``retries`` and ``retry_delay`` (**default**).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from airflow_provider_kirin.exceptions import KirinError, KirinTaskFailedError

Action = Literal["fail", "retry", "default"]


@dataclass(frozen=True)
class TaskRetry:
    """What to do after a failed try: ``fail`` now, ``retry`` after ``delay`` seconds, or leave
    it to the task's settings (``default``); ``reason`` is logged and stored by Airflow."""

    action: Action
    delay: float | None = None
    reason: str | None = None


DEFAULT = TaskRetry("default")


def decide(error: BaseException, *, retry_failed_generations: bool = True) -> TaskRetry:
    """The decision for ``error`` (see the module docstring); any non-Kirin error is ``default``."""
    if not isinstance(error, KirinError):
        return DEFAULT
    name = type(error).__name__
    code = f" (code {error.code})" if error.code else ""
    if not getattr(type(error), "retryable", True):
        return TaskRetry("fail", reason=f"{name}{code} cannot be fixed by a retry: {error.hint}")
    if isinstance(error, KirinTaskFailedError) and not retry_failed_generations:
        return TaskRetry(
            "fail",
            reason=f"the generation failed{code} and retry_failed_generations=False "
            "(a retry would pay for a new generation)",
        )
    if error.retry_after is not None:
        return TaskRetry(
            "retry",
            delay=error.retry_after,
            reason=f"{name}{code}: Kirin asked to come back in {error.retry_after:g} s (Retry-After)",
        )
    return DEFAULT
