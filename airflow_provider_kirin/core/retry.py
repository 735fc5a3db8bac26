"""The retry policy of every Kirin request, in one place (both transports use it through tenacity).

Retried, with exponential backoff and full jitter (a random wait of up to 0.5 s, 1 s, 2 s, ...
capped at ``retry_max_wait``), at most ``max_retries`` times and ``retry_total_seconds`` in all
(connection extras):

- HTTP 429 and every 5xx; ``Retry-After`` (seconds or HTTP-date) is honoured as a lower bound on
  the wait, capped at ``max_retry_after`` so a hostile value cannot park a task for hours;
- connect and read timeouts, refused or reset connections;
- a 2xx body that is not a task envelope (not JSON, missing fields, too large).

Not retried, raised at once as their typed error: 400, 401, 403, 404, 409, 422 and every other 4xx.

A create (``POST``) is retried only when that cannot buy a second generation: when the request
never reached the server, or when it carries an ``external_task_id``, in which case every retry
first looks the id up and returns the task it finds (see ``hooks/kirin.py``). When retries run out
the error's typed form is raised: :class:`~airflow_provider_kirin.exceptions.KirinRateLimitError`
for 429; for a 5xx the class of its seed code if it carries one, else
:class:`~airflow_provider_kirin.exceptions.KirinBadResponseError` (also for unparseable bodies);
:class:`~airflow_provider_kirin.exceptions.KirinUnreachableError` for transport failures. The
last two are the "could not talk to Kirin" family, ``KirinServiceError``, never a failed
generation.

The policy runs as a plan (:func:`retried`, see ``steps.py``): tenacity decides whether and how
long to wait, the transport does the waiting, so the same policy serves ``requests`` and
``aiohttp`` without a second copy.

Polling is different: one failed status check is "not yet"; failed checks end a wait only after
``max_poll_error_seconds`` without a good answer (see ``waiting.py``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from tenacity import (
    DoAttempt,
    DoSleep,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)
from tenacity.wait import wait_base

from airflow_provider_kirin.core.steps import Plan, Sleep
from airflow_provider_kirin.exceptions import KirinError

if TYPE_CHECKING:
    from airflow_provider_kirin.core.config import KirinConnectionConfig

T = TypeVar("T")

log = logging.getLogger(__name__)


class TransientKirinError(Exception):
    """A failure worth another try. Internal: it never escapes a hook; ``final`` is raised instead.

    :param final: The typed error to raise when no try is left.
    :param retry_after: The server's ``Retry-After`` in seconds, already capped, if it sent one.
    :param may_have_created: For a create: whether the task may exist on the server now.
    """

    def __init__(
        self, final: KirinError, *, retry_after: float | None = None, may_have_created: bool = False
    ):
        super().__init__(final.message)
        self.final = final
        self.retry_after = retry_after
        self.may_have_created = may_have_created


def parse_retry_after(value: str | None, *, cap: float, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), capped at ``cap``.

    Returns None for a missing or unreadable header; never a negative number.
    """
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, min(seconds, cap))


class wait_retry_after_or_backoff(wait_base):
    """Wait the larger of the jittered exponential backoff and the server's (capped) ``Retry-After``."""

    def __init__(self, backoff: wait_base) -> None:
        self.backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = float(self.backoff(retry_state))
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        hinted = getattr(error, "retry_after", None)
        return max(wait, hinted) if hinted is not None else wait


def _raise_final(retry_state: RetryCallState) -> NoReturn:
    outcome = retry_state.outcome
    error = outcome.exception() if outcome is not None else None
    if isinstance(error, TransientKirinError):
        raise error.final
    raise error if error is not None else RuntimeError("retry ended without an outcome")


def retry_kwargs(config: KirinConnectionConfig, what: str) -> dict[str, Any]:
    """Keyword arguments for ``tenacity.Retrying`` or ``tenacity.AsyncRetrying``: the one policy."""

    def before_sleep(retry_state: RetryCallState) -> None:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        sleep = retry_state.next_action.sleep if retry_state.next_action else 0.0
        log.warning(
            "Kirin %s failed (try %d of %d): %s; retrying in %.1f s",
            what,
            retry_state.attempt_number,
            config.max_retries + 1,
            error,
            sleep,
        )

    return {
        "retry": retry_if_exception_type(TransientKirinError),
        "stop": stop_after_attempt(config.max_retries + 1) | stop_before_delay(config.retry_total_seconds),
        # "Full jitter": a random wait between 0 and min(retry_max_wait, 0.5 s * 2**try).
        "wait": wait_retry_after_or_backoff(
            wait_random_exponential(multiplier=0.5, max=config.retry_max_wait)
        ),
        "before_sleep": before_sleep,
        "retry_error_callback": _raise_final,
    }


def retried(config: KirinConnectionConfig, what: str, attempt: Callable[[], Plan[T]]) -> Plan[T]:
    """Run the plan ``attempt()`` under the retry policy: a ``TransientKirinError`` it raises is
    retried after a :class:`~airflow_provider_kirin.core.steps.Sleep` the transport carries out;
    when the policy gives up, the error's typed form is raised. Any other error ends at once.

    tenacity decides (``Retrying.iter``: attempt, sleep how long, or stop); this generator only
    hands its sleeps to the transport instead of blocking, so one policy serves both transports.
    """
    retrying = Retrying(**retry_kwargs(config, what))
    retrying.begin()
    state = RetryCallState(retry_object=retrying, fn=None, args=(), kwargs={})
    while True:
        action = retrying.iter(retry_state=state)
        if isinstance(action, DoAttempt):
            try:
                state.set_result((yield from attempt()))
            except TransientKirinError:
                state.set_exception(sys.exc_info())  # type: ignore[arg-type]
        elif isinstance(action, DoSleep):
            state.prepare_for_next_attempt()
            yield Sleep(float(action), retry=True)
        else:
            return action


class SharedPause:
    """One pause shared by many requests: when any of them is told to slow down (429, or a
    ``Retry-After``), every request sent through the same pause waits it out, so a batch of
    generations backs off as one client instead of each item hammering on alone.

    Pure bookkeeping on wall-clock times; the transport does the waiting (``KirinAsyncHook``).
    """

    #: Seconds to pause on a 429 that names no ``Retry-After``.
    DEFAULT_SECONDS = 1.0

    def __init__(self) -> None:
        self.until = 0.0
        self.pauses = 0

    def observe(self, error: TransientKirinError, now: float | None = None) -> None:
        """Pause everyone after a 429 or any answer with ``Retry-After``."""
        seconds = error.retry_after
        if seconds is None and error.final.http_status == 429:
            seconds = self.DEFAULT_SECONDS
        if seconds is None:
            return
        until = (time.time() if now is None else now) + seconds
        if until > self.until:
            self.until = until
            self.pauses += 1
            log.warning("Kirin asked to slow down (%s); pausing every request for %.1f s", error, seconds)

    def remaining(self, now: float | None = None) -> float:
        """Seconds every request still has to wait."""
        return max(0.0, self.until - (time.time() if now is None else now))
