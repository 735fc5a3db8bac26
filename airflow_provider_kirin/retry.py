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

Polling is different: one failed status check is "not yet"; ``max_consecutive_poll_errors`` in a
row (see ``polling.py``) raise the last check's typed error.
"""

from __future__ import annotations

import logging
import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, NoReturn

from tenacity import (
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)
from tenacity.wait import wait_base

from airflow_provider_kirin.exceptions import KirinError

if TYPE_CHECKING:
    from airflow_provider_kirin.config import KirinConnectionConfig

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
