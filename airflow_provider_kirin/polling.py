"""Waiting for a Kirin task, as pure logic shared by the sync hook, the sensor and the trigger.

The defaults, and why, are in ``defaults.py``.

The deadline is an absolute wall-clock time (epoch seconds), so a trigger that moves to another
triggerer keeps it. Checks come every ``poll_interval`` seconds, a hard bound on the gap between
two checks, so completion is noticed within one interval and a wait makes at most one request
per interval on average; the first check gets a random phase, so a thousand waits started
together do not poll in lock-step. Around the time a generation is expected to finish, checks
come twice as often, paid for by the quiet first delay (see :meth:`PollState.is_due`).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_kirin.defaults import MAX_CONSECUTIVE_POLL_ERRORS, POLL_INTERVAL
from airflow_provider_kirin.exceptions import (
    KirinResultParsingError,
    KirinTaskTimeoutError,
    exception_class_for,
)

if TYPE_CHECKING:
    from airflow_provider_kirin.models import KirinTask
    from airflow_provider_kirin.retry import TransientKirinError

log = logging.getLogger(__name__)
#: The first check is delayed by a random phase of up to this fraction of the interval.
POLL_JITTER = 0.1
#: While a generation is due, checks come this much closer together (budget permitting).
DUE_FACTOR = 0.5
#: The least time a status check gets, even the last one at the deadline: a wait may end this
#: much after its deadline, never more (a request is otherwise cut to what is left of the wait).
MIN_CHECK_SECONDS = 1.0


def raise_for_outcome(task: KirinTask) -> KirinTask | None:
    """The completed task, ``None`` while it is not finished, or the typed error of a failed one.

    A ``completed`` task without a video URL is a :class:`KirinResultParsingError`: there is
    nothing to keep, and waiting longer would not change it.
    """
    if task.is_completed:
        if not task.video_urls:
            raise KirinResultParsingError(
                "Kirin reports the task completed but its output holds no video URL (http or https).",
                task_id=task.task_id,
            )
        return task
    if task.is_failed:
        error_cls = exception_class_for(task.error_code)
        message = task.error_message or "no error message"
        raise error_cls(f"Kirin generation failed: {message}", code=task.error_code, task_id=task.task_id)
    return None


def log_result(logger: Any, task: KirinTask) -> None:
    """The one closing log line of a wait: cost and video URL(s)."""
    logger.info(
        "Kirin task %s completed: cost %s USD, video %s",
        task.task_id,
        task.cost if task.cost is not None else "unknown",
        ", ".join(task.video_urls),
    )


@dataclass
class PollState:
    """Where one wait stands: the schedule, the last status seen, and transient errors in a row.

    :param task_id: The Kirin task being waited for.
    :param deadline: Absolute wall-clock time (``time.time()`` seconds) after which waiting stops.
    :param poll_interval: Seconds between checks; a hard upper bound.
    :param max_consecutive_errors: Failed checks in a row that end the wait.
    :param expected_seconds: How long the generation is expected to take, if known; around then
        checks come more often (see :meth:`is_due`).
    """

    task_id: str
    deadline: float
    poll_interval: float = POLL_INTERVAL
    max_consecutive_errors: int = MAX_CONSECUTIVE_POLL_ERRORS
    started: float = field(default_factory=time.time)
    last_status: str | None = None
    consecutive_errors: int = 0
    polls: int = 0
    expected_seconds: float | None = None
    logger: Any = field(default=log, repr=False)

    def observe(self, task: KirinTask) -> KirinTask | None:
        """Record one status check; return the completed task, ``None``, or raise its typed error."""
        self.polls += 1
        self.consecutive_errors = 0
        if task.status != self.last_status:
            self.logger.info(
                "Kirin task %s is %s (was %s) after %.1f s",
                self.task_id,
                task.status,
                self.last_status or "submitted",
                time.time() - self.started,
            )
            self.last_status = task.status
        return raise_for_outcome(task)

    def observe_error(self, error: TransientKirinError) -> float | None:
        """Record a failed check as "not yet"; after too many in a row, raise the last check's own
        typed error (e.g. :class:`KirinUnreachableError`, :class:`KirinBadResponseError`,
        :class:`KirinRateLimitError`), saying how many checks failed.

        Returns the server's ``Retry-After`` (seconds), if it sent one, for the next delay.
        """
        self.polls += 1
        self.consecutive_errors += 1
        if self.consecutive_errors >= self.max_consecutive_errors:
            last = error.final
            raise type(last)(
                f"{self.consecutive_errors} status checks in a row failed; last: {last.message}",
                code=last.code,
                task_id=self.task_id,
                http_status=last.http_status,
            )
        self.logger.warning(
            "Kirin status check %d of %d allowed failures for task %s: %s",
            self.consecutive_errors,
            self.max_consecutive_errors,
            self.task_id,
            error.final.message,
        )
        return error.retry_after

    def request_budget(self, request_timeout: float, now: float | None = None) -> float:
        """Seconds one status check may take in all: the connection's ``request_timeout``, cut to
        what is left of the wait (at least :data:`MIN_CHECK_SECONDS`), so a server that drips bytes
        cannot hold a wait past its deadline."""
        remaining = self.deadline - (time.time() if now is None else now)
        return min(request_timeout, max(remaining, MIN_CHECK_SECONDS))

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.deadline

    def next_delay(self, retry_after: float | None = None, now: float | None = None) -> float:
        """Seconds until the next check: the interval (halved while the generation is due, see
        :meth:`is_due`), stretched to a ``Retry-After`` if the server asked, and never past the
        deadline (so the last check happens at the deadline, before a timeout is reported)."""
        now = time.time() if now is None else now
        delay = self.poll_interval * (DUE_FACTOR if self.is_due(now) else 1.0)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return max(0.0, min(delay, self.deadline - now))

    def is_due(self, now: float) -> bool:
        """Whether to check twice as often now: the generation is near its expected length
        (``expected_seconds`` x 1 to 2, when it is most likely to finish), and the checks so far,
        plus the next one, still average at most one per ``poll_interval`` since the start. The
        quiet first delay pays for the extra checks; the request budget of the plain schedule is
        never exceeded."""
        if not self.expected_seconds:
            return False
        elapsed = now - self.started
        if not self.expected_seconds <= elapsed <= 2.0 * self.expected_seconds:
            return False
        next_at = elapsed + self.poll_interval * DUE_FACTOR
        return (self.polls + 1) * self.poll_interval <= next_at

    def first_delay(self, first_poll_delay: float, now: float | None = None) -> float:
        """Seconds until the first check: ``first_poll_delay`` plus a random phase of up to 10 % of
        the interval, so that waits started together (a burst of submissions, or every trigger
        after a triggerer restart) spread out instead of polling in lock-step."""
        remaining = self.deadline - (time.time() if now is None else now)
        phase = random.uniform(0.0, POLL_JITTER * self.poll_interval)
        return max(0.0, min(max(0.0, first_poll_delay) + phase, remaining))

    def timeout_error(self) -> KirinTaskTimeoutError:
        waited = time.time() - self.started
        return KirinTaskTimeoutError(
            f"Kirin task did not finish within the deadline (waited {waited:.0f} s, "
            f"last status {self.last_status or 'unknown'}).",
            task_id=self.task_id,
        )
