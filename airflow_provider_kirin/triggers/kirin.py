"""The trigger that waits for a Kirin task in the triggerer, without holding a worker slot.

Operators and sensors create it for you when ``deferrable=True``; to defer on it yourself::

    self.defer(
        trigger=KirinTaskTrigger(kirin_task_id, poll_interval=10, deadline=time.time() + 1800),
        method_name="execute_complete",
    )

    def execute_complete(self, context, event=None):
        task = task_from_event(event)  # the completed task, or the typed error raised
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from typing import Any

# Imported here, not on first use, so that the import never runs inside the triggerer's event loop.
import aiohttp  # noqa: F401
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_kirin.core.defaults import DEFAULT_CONN_ID, MAX_POLL_ERROR_SECONDS, POLL_INTERVAL
from airflow_provider_kirin.core.redaction import redact
from airflow_provider_kirin.core.waiting import Outcome, Wait, error_seconds_from_count
from airflow_provider_kirin.exceptions import (
    KirinBadResponseError,
    KirinError,
    KirinTaskFailedError,
    KirinTaskTimeoutError,
    error_from_event,
)
from airflow_provider_kirin.hooks.kirin import KirinAsyncHook
from airflow_provider_kirin.models import KirinTask

#: The statuses a :class:`KirinTaskTrigger` event can carry.
EVENT_STATUSES = ("success", "failed", "timeout", "error")


class KirinTaskTrigger(BaseTrigger):
    """Poll a Kirin task until it is ``completed`` or ``failed``, or its deadline passes.

    Yields exactly one event ``{"status": ..., "kirin_task_id": ..., "task": <envelope or None>,
    "error": <error dict or None>}`` with status ``success``, ``failed``, ``timeout`` or ``error``.
    Turn it back into the task or the typed exception with :func:`task_from_event`.

    Everything it needs is serialized, with times as absolute epoch seconds, so a triggerer
    restart or a move to another triggerer resumes polling the same task against the same
    deadline. The wait itself is the core's (``core/waiting.py``): transient errors (429, 5xx,
    timeouts, resets) are "not yet" until they have gone on for ``max_poll_error_seconds``.

    :param kirin_task_id: The Kirin task to wait for.
    :param kirin_conn_id: The ``kirin`` connection.
    :param poll_interval: Seconds between status checks (an upper bound on the gap).
    :param deadline: Absolute wall-clock deadline (``time.time()`` seconds); None waits forever.
    :param first_poll_at: Absolute time of the first status check; None checks at once.
    :param max_poll_error_seconds: How long failed status checks may go on before they end the wait
        with an error event.
    :param started_at: When the wait began (epoch seconds): elapsed times in the logs, and the
        clock of ``expected_seconds``.
    :param expected_seconds: How long the generation should take; around then the trigger checks
        twice as often, within the request budget of the plain schedule.
    :param max_consecutive_errors: Deprecated count form of ``max_poll_error_seconds``, still read
        so that a trigger serialized by an earlier release resumes after an upgrade.
    """

    def __init__(
        self,
        kirin_task_id: str,
        kirin_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = POLL_INTERVAL,
        deadline: float | None = None,
        first_poll_at: float | None = None,
        max_poll_error_seconds: float = MAX_POLL_ERROR_SECONDS,
        started_at: float | None = None,
        expected_seconds: float | None = None,
        max_consecutive_errors: int | None = None,
    ) -> None:
        super().__init__()
        self.kirin_task_id = kirin_task_id
        self.kirin_conn_id = kirin_conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = deadline
        self.first_poll_at = first_poll_at
        if max_consecutive_errors is not None:
            max_poll_error_seconds = error_seconds_from_count(max_consecutive_errors, self.poll_interval)
        self.max_poll_error_seconds = float(max_poll_error_seconds)
        self.started_at = time.time() if started_at is None else started_at
        self.expected_seconds = expected_seconds

    def __repr__(self) -> str:
        return (
            f"KirinTaskTrigger(kirin_task_id={self.kirin_task_id!r}, kirin_conn_id={self.kirin_conn_id!r}, "
            f"poll_interval={self.poll_interval}, deadline={self.deadline})"
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "kirin_task_id": self.kirin_task_id,
                "kirin_conn_id": self.kirin_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "first_poll_at": self.first_poll_at,
                "max_poll_error_seconds": self.max_poll_error_seconds,
                "started_at": self.started_at,
                "expected_seconds": self.expected_seconds,
            },
        )

    def _wait(self) -> Wait:
        return Wait(
            self.kirin_task_id,
            deadline=self.deadline if self.deadline is not None else math.inf,
            poll_interval=self.poll_interval,
            first_check_at=self.first_poll_at,
            max_error_seconds=self.max_poll_error_seconds,
            expected_seconds=self.expected_seconds,
            started=self.started_at,
            logger=self.log,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            async with KirinAsyncHook(self.kirin_conn_id) as hook:
                outcome = await hook.wait(self._wait())
        except KirinError as err:  # bad input, or the connection could not be read
            yield self._event("error", error=err)
            return
        except Exception as err:  # never let a bug become a silent, endlessly retried trigger
            self.log.exception("Unexpected error while waiting for Kirin task %s", self.kirin_task_id)
            wrapped = KirinError(
                f"Waiting for the Kirin task failed unexpectedly: {type(err).__name__}: {err}"
            )
            yield self._event("error", error=wrapped)
            return
        yield self._outcome_event(outcome)

    def _outcome_event(self, outcome: Outcome) -> TriggerEvent:
        error = outcome.error
        if error is None:
            return self._event("success", task=outcome.task)
        if isinstance(error, KirinTaskTimeoutError):
            return self._event("timeout", error=error)
        if isinstance(error, KirinTaskFailedError) and outcome.task is not None and outcome.task.is_terminal:
            return self._event("failed", task=outcome.task, error=error)
        return self._event("error", error=error)

    def _event(
        self, status: str, *, task: KirinTask | None = None, error: KirinError | None = None
    ) -> TriggerEvent:
        if error is not None and error.task_id is None:
            error.task_id = self.kirin_task_id
        # Both parts are clean and bounded where they were made (``KirinTask``, ``KirinError``):
        # events are stored in the metadata DB.
        return TriggerEvent(
            {
                "status": status,
                "kirin_task_id": self.kirin_task_id,
                "task": task.to_event() if task is not None else None,
                "error": error.to_dict() if error is not None else None,
            }
        )

    async def on_kill(self) -> None:
        """The API has no cancel endpoint: say so, with the task id, so the spend can be traced.

        Airflow calls this from 3.3 on; older triggerers only cancel the trigger (docs/compatibility.md).
        """
        self.log.warning(
            "The Airflow task was killed, but Kirin has no cancel endpoint: generation %s continues "
            "on Kirin's side and will still be billed.",
            self.kirin_task_id,
        )


def task_from_event(event: dict[str, Any] | None) -> KirinTask:
    """The completed :class:`~airflow_provider_kirin.models.KirinTask` a :class:`KirinTaskTrigger`
    event carries, or the typed error it describes raised. A missing event or an unknown status is
    an error, never a success."""
    if not isinstance(event, dict):
        raise KirinError(f"The Kirin trigger returned no event (got {type(event).__name__}).")
    status = event.get("status")
    if status not in EVENT_STATUSES:
        raise KirinError(f"The Kirin trigger returned an unknown status {redact(str(status))[:50]!r}.")
    if status == "success":
        if not isinstance(event.get("task"), dict):
            raise KirinError("The Kirin trigger reported success without the task.")
        try:
            return KirinTask.model_validate(event["task"])
        except ValueError as err:  # pydantic's ValidationError
            raise KirinBadResponseError(f"The Kirin trigger's event holds no valid task: {err}") from None
    error = event.get("error")
    if not isinstance(error, dict):
        raise KirinError(f"The Kirin trigger reported {status} without an error description.")
    raise error_from_event(error)
