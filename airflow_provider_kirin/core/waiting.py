"""Waiting for a Kirin task: one engine for every waiter, and the one verdict on a task.

- :func:`outcome_of` answers "has this task ended, is it usable, and if not, which typed error?"
  for every caller: the waits, the idempotent submit (may a task be reused?), the batch, the
  operators' results.
- :class:`Wait` is where one wait stands. Asked :meth:`Wait.next`, it says what to do now:
  :class:`~airflow_provider_kirin.core.steps.Sleep` this long, :class:`Check` the task now (within
  this many seconds), or done with this :class:`Outcome`. It does no I/O and never sleeps.
- :func:`wait_plan` drives a :class:`Wait` as a plan (``steps.py``), so the sync hook, the task
  trigger and the batch trigger all wait the same way in a few lines; the sensor's poke mode
  runs one :func:`check_plan` per poke on the same :class:`Wait`.

The schedule (defaults and why in ``defaults.py``): the first check after ``first_check_at`` plus
a random phase of up to 10 % of the interval, so waits started together do not poll in
lock-step; then every ``poll_interval`` (a hard bound on the gap), twice as often around the time
the generation is expected to finish while the average stays within one check per interval
(:meth:`Wait.is_due`); a last check at the deadline, then :class:`KirinTaskTimeoutError`. The
deadline is absolute wall-clock time, so a trigger that moves to another triggerer keeps it.

Every check gets the same budget: what is left of the wait (at least :data:`MIN_CHECK_SECONDS`),
cut to the connection's read ``timeout`` (a check's answer is one small body: a read's time is
all it needs, and then the transport arms one timer per check instead of one per read) and by the
transport to its ``request_timeout``, so a server that drips bytes cannot hold a wait past its
deadline.

A failed check (429, 5xx, timeout, reset, an unreadable answer) is "not yet". Failed checks end a
wait only once they have gone on for ``max_error_seconds`` (from the first failed check of the
run, with no good answer since) — a span of time, not a count, so an outage is ridden out for
the same time whatever the poll interval.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_kirin.core.defaults import MAX_POLL_ERROR_SECONDS, POLL_INTERVAL
from airflow_provider_kirin.core.retry import TransientKirinError
from airflow_provider_kirin.core.steps import Plan, Send, Sleep
from airflow_provider_kirin.exceptions import (
    KirinError,
    KirinResultParsingError,
    KirinTaskTimeoutError,
    exception_class_for,
)

if TYPE_CHECKING:
    from airflow_provider_kirin.models import KirinTask
    from airflow_provider_kirin.protocol import ApiCall, KirinProtocol

log = logging.getLogger(__name__)
#: The first check is delayed by a random phase of up to this fraction of the interval.
POLL_JITTER = 0.1
#: While a generation is due, checks come this much closer together (budget permitting).
DUE_FACTOR = 0.5
#: The least time a status check gets, even the last one at the deadline: a wait may end this
#: much after its deadline, never more.
MIN_CHECK_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a task (or a wait for it) ended: the task as last seen, and the typed error if it is not
    a usable, completed generation. :meth:`result` gives the task or raises the error."""

    task: KirinTask | None
    error: KirinError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def result(self) -> KirinTask:
        if self.error is not None:
            raise self.error
        if self.task is None:  # pragma: no cover - an Outcome without error always has a task
            raise KirinError("A Kirin wait ended without a task.")
        return self.task


def outcome_of(task: KirinTask) -> Outcome | None:
    """The one verdict on a task: ``None`` while it is not finished (any status but ``completed``
    and ``failed``); an ok :class:`Outcome` for a completed task with a video; else the typed error.

    A ``failed`` task raises the class of its code (``exceptions.exception_class_for``). A
    ``completed`` task without a video URL is a :class:`KirinResultParsingError`: there is nothing
    to keep, and no retry could succeed with it (so an idempotent submit does not reuse it).
    """
    if task.is_completed:
        if task.video_urls:
            return Outcome(task)
        error: KirinError = KirinResultParsingError(
            "Kirin reports the task completed but its output holds no video URL (http or https).",
            task_id=task.task_id,
        )
        return Outcome(task, error)
    if task.is_failed:
        error_cls = exception_class_for(task.error_code)
        message = task.error_message or "no error message"
        error = error_cls(f"Kirin generation failed: {message}", code=task.error_code, task_id=task.task_id)
        return Outcome(task, error)
    return None


def completed(task: KirinTask) -> KirinTask:
    """``task`` if it completed with a video; the typed error (:func:`outcome_of`) if it ended
    otherwise; a :class:`KirinError` if it has not ended yet (there is nothing to use yet)."""
    outcome = outcome_of(task)
    if outcome is None:
        raise KirinError(
            f"Kirin task {task.task_id} is {task.status}, not completed: nothing to use yet.",
            task_id=task.task_id,
        )
    return outcome.result()


def log_result(logger: Any, task: KirinTask) -> None:
    """The one closing log line of a wait: cost and video URL(s)."""
    logger.info(
        "Kirin task %s completed: cost %s USD, video %s",
        task.task_id,
        task.cost if task.cost is not None else "unknown",
        ", ".join(task.video_urls),
    )


def error_seconds_from_count(count: int, poll_interval: float) -> float:
    """The error span that ``count`` failed checks in a row took on the plain schedule (the
    deprecated ``max_consecutive_poll_errors``): ``count - 1`` intervals after the first failure."""
    return max(0, int(count) - 1) * float(poll_interval)


@dataclass(frozen=True, slots=True)
class Check:
    """Step of a :class:`Wait`: check the task now, in all within ``budget`` seconds (``None``: no
    deadline; the transport still caps it at the connection's ``request_timeout``)."""

    budget: float | None


@dataclass(slots=True)
class Wait:
    """Where one wait for ``task_id`` stands (see the module docstring); ask :meth:`next`.

    :param task_id: The Kirin task being waited for.
    :param deadline: Absolute wall-clock time (``time.time()`` seconds) after which waiting stops.
    :param poll_interval: Seconds between checks; a hard upper bound.
    :param first_check_at: Absolute time of the first check (plus the random phase); ``None``: now.
    :param max_error_seconds: How long failed checks may go on before they end the wait.
    :param expected_seconds: How long the generation should take, if known; around then checks
        come more often (:meth:`is_due`).
    :param started: When the wait began: elapsed times in the logs, and the clock of
        ``expected_seconds``.
    :param paced_by_caller: The caller decides when to check (the sensor's poke mode, paced by
        Airflow): no random phase, and a check is due whenever the first check's time has passed.
    :param logger: Where status changes and failed checks are logged.
    """

    task_id: str
    deadline: float = math.inf
    poll_interval: float = POLL_INTERVAL
    first_check_at: float | None = None
    max_error_seconds: float = MAX_POLL_ERROR_SECONDS
    expected_seconds: float | None = None
    started: float = field(default_factory=time.time)
    paced_by_caller: bool = False
    logger: Any = field(default=log, repr=False)
    #: The last task seen, its status, and how many checks were made.
    last_task: KirinTask | None = field(default=None, init=False, repr=False)
    last_status: str | None = field(default=None, init=False)
    checks: int = field(default=0, init=False)
    #: When the current run of failed checks began (``None``: the last check was good).
    failing_since: float | None = field(default=None, init=False)
    failed_checks: int = field(default=0, init=False)
    outcome: Outcome | None = field(default=None, init=False)
    next_check_at: float | None = field(default=None, init=False)

    # -- what to do next -------------------------------------------------------------------------
    def next(self, now: float | None = None) -> Sleep | Check | Outcome:
        """Sleep this long, check now, or the wait's outcome."""
        if self.outcome is not None:
            return self.outcome
        now = time.time() if now is None else now
        if self.next_check_at is None:
            self.next_check_at = self._first_check(now)
        due = self.first_check_at or 0.0 if self.paced_by_caller else self.next_check_at
        if now < due:
            return Sleep(due - now)
        remaining = self.deadline - now
        return Check(None if math.isinf(remaining) else max(remaining, MIN_CHECK_SECONDS))

    def _first_check(self, now: float) -> float:
        first = now if self.first_check_at is None else max(self.first_check_at, now)
        phase = 0.0 if self.paced_by_caller else random.uniform(0.0, POLL_JITTER * self.poll_interval)
        return min(first + phase, max(self.deadline, now))

    # -- what a check found ------------------------------------------------------------------------
    def record(self, task: KirinTask, now: float | None = None) -> None:
        """A check answered with ``task``: the wait ends if the task has (:func:`outcome_of`)."""
        now = time.time() if now is None else now
        self.checks += 1
        self.failing_since, self.failed_checks = None, 0
        self.last_task = task
        if task.status != self.last_status:
            self.logger.info(
                "Kirin task %s is %s (was %s) after %.1f s",
                self.task_id,
                task.status,
                self.last_status or "submitted",
                now - self.started,
            )
            self.last_status = task.status
        self.outcome = outcome_of(task)
        if self.outcome is None:
            self._schedule(now)

    def record_error(self, error: TransientKirinError, now: float | None = None) -> None:
        """A check failed in a way worth another try: "not yet", until failed checks have gone on
        for ``max_error_seconds``; then the wait ends with the last check's own typed error."""
        now = time.time() if now is None else now
        self.checks += 1
        self.failed_checks += 1
        if self.failing_since is None:
            self.failing_since = now
        failing_for = now - self.failing_since
        last = error.final
        if failing_for >= self.max_error_seconds:
            self.end(
                type(last)(
                    f"{self.failed_checks} status checks in a row failed over {failing_for:.0f} s "
                    f"(max_poll_error_seconds={self.max_error_seconds:g}); last: {last.message}",
                    code=last.code,
                    task_id=self.task_id,
                    http_status=last.http_status,
                )
            )
            return
        self.logger.warning(
            "Kirin status check of task %s failed (%d in a row, for %.0f of %g s allowed): %s",
            self.task_id,
            self.failed_checks,
            failing_for,
            self.max_error_seconds,
            last.message,
        )
        self._schedule(now, error.retry_after)

    def end(self, error: KirinError) -> None:
        """End the wait with ``error`` (a check's final error, e.g. a 404 or a refused key)."""
        if error.task_id is None:
            error.task_id = self.task_id
        self.outcome = Outcome(self.last_task, error)

    def _schedule(self, now: float, retry_after: float | None = None) -> None:
        if now >= self.deadline:
            self.outcome = Outcome(self.last_task, self.timeout_error(now))
            return
        delay = self.poll_interval * (DUE_FACTOR if self.is_due(now) else 1.0)
        if retry_after is not None:
            delay = max(delay, retry_after)
        self.next_check_at = now + min(delay, self.deadline - now)

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
        return (self.checks + 1) * self.poll_interval <= next_at

    def timeout_error(self, now: float | None = None) -> KirinTaskTimeoutError:
        waited = (time.time() if now is None else now) - self.started
        failing = f"; the last {self.failed_checks} checks failed" if self.failed_checks else ""
        return KirinTaskTimeoutError(
            f"Kirin task did not finish within the deadline (waited {waited:.0f} s, "
            f"last status {self.last_status or 'unknown'}{failing}).",
            task_id=self.task_id,
        )


def check_plan(protocol: KirinProtocol, wait: Wait, call: ApiCall | None = None) -> Plan[Outcome | None]:
    """One step of ``wait``: a status check if one is due now (else nothing); return the wait's
    outcome if it has ended, else ``None``. A check's final error (a 404, a refused key) ends the
    wait like any other outcome. ``call`` is ``protocol.check(wait.task_id)``, if already built."""
    step = wait.next()
    if isinstance(step, Check):
        yield from _check(protocol, wait, call or protocol.check(wait.task_id), step)
    return wait.outcome


def wait_plan(protocol: KirinProtocol, wait: Wait) -> Plan[Outcome]:
    """Drive ``wait`` to its :class:`Outcome`, sleeping between checks: every ending is an
    outcome; only bad input (an invalid task id) or a bug raises."""
    call = protocol.check(wait.task_id)
    while True:
        step = wait.next()
        if isinstance(step, Outcome):
            return step
        if isinstance(step, Sleep):
            yield step
        else:
            yield from _check(protocol, wait, call, step)


def _check(protocol: KirinProtocol, wait: Wait, call: ApiCall, step: Check) -> Plan[None]:
    """Send the status check ``step`` calls for and record what it found on ``wait``."""
    read = protocol.config.timeout
    budget = read if step.budget is None or step.budget > read else step.budget
    try:
        task = protocol.one_task(call, (yield Send(call, budget)))
    except TransientKirinError as err:
        wait.record_error(err)
    except KirinError as err:
        wait.end(err)
    else:
        wait.record(task)
