"""Waiting for a Kirin task, as pure logic shared by the sync hook, the sensor and the trigger.

The defaults, and why, are in ``defaults.py``.

The deadline is an absolute wall-clock time (epoch seconds), so a trigger that moves to another
triggerer keeps it. Delays are jittered downwards only, so ``poll_interval`` stays a hard bound
and a thousand waits started together do not poll in lock-step.
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
    KirinStatusCheckError,
    KirinTaskTimeoutError,
    exception_class_for,
)

if TYPE_CHECKING:
    from airflow_provider_kirin.models import KirinTask
    from airflow_provider_kirin.retry import TransientKirinError

log = logging.getLogger(__name__)
#: Delays are shortened by up to this fraction, at random.
POLL_JITTER = 0.1


def raise_for_outcome(task: KirinTask) -> KirinTask | None:
    """The completed task, ``None`` while it is not finished, or the typed error of a failed one.

    A ``completed`` task without a video URL is a :class:`KirinResultParsingError`: there is
    nothing to keep, and waiting longer would not change it.
    """
    if task.is_completed:
        if not task.video_urls:
            raise KirinResultParsingError(
                "Kirin reports the task completed but its output holds no video URL.",
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
    """

    task_id: str
    deadline: float
    poll_interval: float = POLL_INTERVAL
    max_consecutive_errors: int = MAX_CONSECUTIVE_POLL_ERRORS
    started: float = field(default_factory=time.time)
    last_status: str | None = None
    consecutive_errors: int = 0
    polls: int = 0
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
        """Record a failed check as "not yet"; raise :class:`KirinStatusCheckError` after too many in a row.

        Returns the server's ``Retry-After`` (seconds), if it sent one, for the next delay.
        """
        self.polls += 1
        self.consecutive_errors += 1
        if self.consecutive_errors >= self.max_consecutive_errors:
            raise KirinStatusCheckError(
                f"{self.consecutive_errors} status checks in a row failed; last: {error.final.message}",
                task_id=self.task_id,
                http_status=error.final.http_status,
            )
        self.logger.warning(
            "Kirin status check %d of %d allowed failures for task %s: %s",
            self.consecutive_errors,
            self.max_consecutive_errors,
            self.task_id,
            error.final.message,
        )
        return error.retry_after

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.deadline

    def next_delay(self, retry_after: float | None = None, now: float | None = None) -> float:
        """Seconds until the next check: the interval less up to 10 % jitter, stretched to a
        ``Retry-After`` if the server asked, and never past the deadline (so the last check
        happens at the deadline, before a timeout is reported)."""
        delay = self.poll_interval * (1.0 - random.uniform(0.0, POLL_JITTER))
        if retry_after is not None:
            delay = max(delay, retry_after)
        remaining = self.deadline - (time.time() if now is None else now)
        return max(0.0, min(delay, remaining))

    def first_delay(self, first_poll_delay: float, now: float | None = None) -> float:
        remaining = self.deadline - (time.time() if now is None else now)
        return max(0.0, min(first_poll_delay, remaining))

    def timeout_error(self) -> KirinTaskTimeoutError:
        waited = time.time() - self.started
        return KirinTaskTimeoutError(
            f"Kirin task did not finish within the deadline (waited {waited:.0f} s, "
            f"last status {self.last_status or 'unknown'}).",
            task_id=self.task_id,
        )
