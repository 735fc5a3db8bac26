"""Retry decisions that fit the error: :class:`KirinRetryPolicy`, the default ``retry_policy`` of
the provider's operators and sensor from Airflow 3.3.

Airflow retries a failed task ``retries`` times, whatever failed. A retry cannot fix a request
Kirin rejects as invalid, a key it refuses or a spend ceiling reached, so the policy fails those at
once; when the server said when to come back (``Retry-After``), the retry waits exactly that; the
rest follows the task's own ``retries`` and ``retry_delay``. The decision itself is
``core/task_retry.py``; an error class opts out of retries with ``retryable = False``.

A retry after a failed generation (``KirinTaskFailedError``) pays for a new one:
``retry_failed_generations=False`` fails the task instead::

    from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator

    KirinTextToVideoOperator(
        task_id="generate",
        prompt="a red fox",
        retries=3,
        retry_failed_generations=False,  # a failed generation fails the task; 429s and outages retry
    )

To combine it with a policy of your own, pass ``retry_policy=`` yourself (e.g. common-compat's
``ChainRetryPolicy([KirinRetryPolicy(), mine])``). Airflow 3.0-3.2 have no retry policies: there the
operators raise ``AirflowFailException`` for a ``fail`` decision, and a ``Retry-After`` cannot
change the task's ``retry_delay`` (docs/compatibility.md).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_kirin._compat import HAS_RETRY_POLICY, RetryDecision, RetryPolicy
from airflow_provider_kirin.core.task_retry import decide

if TYPE_CHECKING:
    from airflow.sdk import Context


class KirinRetryPolicy(RetryPolicy):
    """Fail at once on errors a retry cannot fix; retry after ``Retry-After``; else the task's
    settings (see the module docstring). Airflow 3.3+.

    :param retry_failed_generations: Whether a failed generation (``KirinTaskFailedError``) may be
        retried; each retry pays for a new generation. Default ``True``.
    """

    def __init__(self, retry_failed_generations: bool = True) -> None:
        if not HAS_RETRY_POLICY:
            raise RuntimeError(
                "KirinRetryPolicy needs Airflow 3.3 (retry_policy); before it the Kirin operators "
                "fail at once on errors a retry cannot fix by themselves."
            )
        self.retry_failed_generations = retry_failed_generations

    def __repr__(self) -> str:
        return f"KirinRetryPolicy(retry_failed_generations={self.retry_failed_generations!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, KirinRetryPolicy)
            and other.retry_failed_generations == self.retry_failed_generations
        )

    def __hash__(self) -> int:
        return hash((KirinRetryPolicy, self.retry_failed_generations))

    def evaluate(
        self,
        exception: BaseException,
        try_number: int,
        max_tries: int,
        context: Context | None = None,
    ) -> Any:
        """The ``RetryDecision`` for ``exception`` (``core/task_retry.decide``)."""
        verdict = decide(exception, retry_failed_generations=self.retry_failed_generations)
        if verdict.action == "fail":
            return RetryDecision.fail(verdict.reason)
        if verdict.action == "retry":
            delay = timedelta(seconds=verdict.delay) if verdict.delay is not None else None
            return RetryDecision.retry(delay, verdict.reason)
        return RetryDecision.default()

    def serialize(self) -> dict[str, Any]:
        return {"__type": "KirinRetryPolicy", "retry_failed_generations": self.retry_failed_generations}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> KirinRetryPolicy:
        return cls(retry_failed_generations=bool(data.get("retry_failed_generations", True)))
