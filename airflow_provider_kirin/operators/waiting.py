"""What :class:`~airflow_provider_kirin.operators.kirin.KirinTextToVideoOperator` and
:class:`~airflow_provider_kirin.sensors.kirin.KirinTaskSensor` share once a Kirin task exists:
defer to :class:`~airflow_provider_kirin.triggers.kirin.KirinTaskTrigger`, and finish with the
completed task (or its typed error).

Kept in one place so the two cannot drift apart: the same deferral deadline, the same XComs, the
same "Kirin video" link, the same log line. Imports nothing heavy at DAG parse time.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_kirin.models import KirinTask

#: XCom keys the operators push besides ``return_value``.
KIRIN_TASK_ID_XCOM_KEY = "kirin_task_id"
KIRIN_RESULT_XCOM_KEY = "kirin_result"
KIRIN_REQUEST_XCOM_KEY = "kirin_request"

#: Extra seconds the deferral may outlive the trigger's own deadline, so the trigger's clean
#: ``timeout`` event (after a last status check) wins over Airflow's generic deferral timeout.
DEFER_TIMEOUT_MARGIN = 60.0


class WaitSettings(TypedDict):
    """How to wait for one task: the same keywords for :meth:`KirinWaitMixin.defer_until_done`
    (in the triggerer) and ``KirinHook.wait_for_task`` (in the worker)."""

    poll_interval: float
    timeout: float
    first_poll_delay: float
    max_consecutive_errors: int
    expected_seconds: float | None


class KirinWaitMixin:
    """Defer-or-finish for an operator waiting on one Kirin task (mixed into a ``BaseOperator``)."""

    kirin_conn_id: str
    kirin_video_url: str | None
    execution_timeout: timedelta | None

    if TYPE_CHECKING:

        def defer(self, **kwargs: Any) -> NoReturn: ...

        @property
        def log(self) -> Any: ...

    def defer_until_done(
        self,
        kirin_task_id: str,
        *,
        poll_interval: float,
        timeout: float,
        first_poll_delay: float,
        max_consecutive_errors: int,
        expected_seconds: float | None = None,
    ) -> NoReturn:
        """Hand the wait to the triggerer; Airflow resumes the task in ``execute_complete``.

        All times become absolute epoch seconds, so the trigger keeps the same deadline when it
        moves to another triggerer.
        """
        from airflow_provider_kirin.triggers.kirin import KirinTaskTrigger

        now = time.time()
        backstop = timedelta(seconds=timeout + poll_interval + DEFER_TIMEOUT_MARGIN)
        self.defer(
            trigger=KirinTaskTrigger(
                kirin_task_id=kirin_task_id,
                kirin_conn_id=self.kirin_conn_id,
                poll_interval=poll_interval,
                deadline=now + timeout,
                first_poll_at=now + first_poll_delay,
                max_consecutive_errors=max_consecutive_errors,
                started_at=now,
                expected_seconds=expected_seconds,
            ),
            method_name="execute_complete",
            timeout=min(backstop, self.execution_timeout) if self.execution_timeout else backstop,
        )

    def finish(self, context: Context, task: KirinTask) -> dict[str, Any]:
        """The result dict of a completed task (also pushed as ``kirin_result``), with the video
        link recorded; a failed task, or a completed one without a video, raises its typed error."""
        from airflow_provider_kirin.polling import log_result, raise_for_outcome

        raise_for_outcome(task)  # a reused task may have ended failed or without a video
        self.kirin_video_url = task.video_urls[0]  # the "Kirin video" link
        result = task.to_result()
        context["ti"].xcom_push(key=KIRIN_RESULT_XCOM_KEY, value=result)
        log_result(self.log, task)
        return result

    def finish_event(self, context: Context, event: dict[str, Any] | None) -> dict[str, Any]:
        """:meth:`finish` for the event a :class:`KirinTaskTrigger` fired."""
        from airflow_provider_kirin.triggers.kirin import task_from_event

        return self.finish(context, task_from_event(event))
