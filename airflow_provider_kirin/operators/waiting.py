"""What :class:`~airflow_provider_kirin.operators.kirin.KirinTextToVideoOperator` and
:class:`~airflow_provider_kirin.sensors.kirin.KirinTaskSensor` share once a Kirin task exists:
defer to :class:`~airflow_provider_kirin.triggers.kirin.KirinTaskTrigger`, and finish with the
completed task (or its typed error).

Kept in one place so the two cannot drift apart: the same deferral deadline, the same XComs, the
same "Kirin video" link, the same log line. Imports nothing heavy at DAG parse time.
"""

from __future__ import annotations

import time
import warnings
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict

from airflow_provider_kirin.core.defaults import DEFER_TIMEOUT_MARGIN

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_kirin.models import KirinTask

#: XCom keys the operators push besides ``return_value``.
KIRIN_TASK_ID_XCOM_KEY = "kirin_task_id"
KIRIN_RESULT_XCOM_KEY = "kirin_result"
KIRIN_REQUEST_XCOM_KEY = "kirin_request"


def resolve_error_seconds(seconds: float, deprecated_count: int | None, poll_interval: float) -> float:
    """``max_poll_error_seconds``, or its deprecated count form ``max_consecutive_poll_errors``
    turned into the span those checks took on the plain schedule (with a ``DeprecationWarning``)."""
    if deprecated_count is None:
        return float(seconds)
    from airflow_provider_kirin.core.waiting import error_seconds_from_count

    converted = error_seconds_from_count(deprecated_count, poll_interval)
    warnings.warn(
        f"max_consecutive_poll_errors={deprecated_count} is deprecated; use "
        f"max_poll_error_seconds={converted:g} (how long failed status checks may go on).",
        DeprecationWarning,
        stacklevel=3,
    )
    return converted


def defer_timeout(seconds: float, execution_timeout: timedelta | None) -> timedelta:
    """How long a deferral may last: the trigger's own ``seconds`` plus
    :data:`~airflow_provider_kirin.core.defaults.DEFER_TIMEOUT_MARGIN` (so the trigger's clean
    timeout event wins over Airflow's generic one), never past the task's ``execution_timeout``."""
    backstop = timedelta(seconds=max(0.0, seconds) + DEFER_TIMEOUT_MARGIN)
    return min(backstop, execution_timeout) if execution_timeout else backstop


class WaitSettings(TypedDict):
    """How to wait for one task: the same keywords for :meth:`KirinWaitMixin.defer_until_done`
    (in the triggerer) and ``KirinHook.wait_for_task`` (in the worker)."""

    poll_interval: float
    timeout: float
    first_poll_delay: float
    max_poll_error_seconds: float
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
        max_poll_error_seconds: float,
        expected_seconds: float | None = None,
        resume_kwargs: dict[str, Any] | None = None,
    ) -> NoReturn:
        """Hand the wait to the triggerer; Airflow resumes the task in ``execute_complete`` (with
        ``resume_kwargs`` as keyword arguments: small, JSON-serialisable facts of this try).

        All times become absolute epoch seconds, so the trigger keeps the same deadline when it
        moves to another triggerer.
        """
        from airflow_provider_kirin.triggers.kirin import KirinTaskTrigger

        now = time.time()
        self.defer(
            trigger=KirinTaskTrigger(
                kirin_task_id=kirin_task_id,
                kirin_conn_id=self.kirin_conn_id,
                poll_interval=poll_interval,
                deadline=now + timeout,
                first_poll_at=now + first_poll_delay,
                max_poll_error_seconds=max_poll_error_seconds,
                started_at=now,
                expected_seconds=expected_seconds,
            ),
            method_name="execute_complete",
            kwargs=resume_kwargs,
            timeout=defer_timeout(timeout + poll_interval, self.execution_timeout),
        )

    def finish(
        self,
        context: Context,
        task: KirinTask,
        *,
        reused: bool | None = None,
        max_cost: str | None = None,
    ) -> dict[str, Any]:
        """The result dict of a completed task (also pushed as ``kirin_result``), with the video
        link recorded; a failed task, or a completed one without a video, raises its typed error.

        With ``reused`` (the operator knows it; a sensor does not) the result says whether an
        earlier try paid for the generation. Past a ``max_cost`` it records the overshoot and a
        warning names it: failing now would not return the money, and a retry would reuse the
        same generation."""
        from decimal import Decimal

        from airflow_provider_kirin.core.budget import parse_cost
        from airflow_provider_kirin.core.waiting import completed, log_result

        task = completed(task)  # a reused task may have ended failed or without a video
        self.kirin_video_url = task.video_urls[0]  # the "Kirin video" link
        result = task.to_result()
        if reused is not None:
            result["reused"] = reused
        if max_cost is not None:
            result["max_cost"] = max_cost
            result["over_max_cost"] = parse_cost(task.cost) > Decimal(max_cost)
            if result["over_max_cost"]:
                self.log.warning(
                    "Kirin reported $%s for generation %s, over max_cost $%s: recorded in kirin_result "
                    "(the task succeeds: failing would not return the money).",
                    task.cost,
                    task.task_id,
                    max_cost,
                )
        context["ti"].xcom_push(key=KIRIN_RESULT_XCOM_KEY, value=result)
        log_result(self.log, task)
        return result

    def finish_event(self, context: Context, event: dict[str, Any] | None, **resume: Any) -> dict[str, Any]:
        """:meth:`finish` for the event a :class:`KirinTaskTrigger` fired (``resume``: what
        :meth:`defer_until_done` handed over)."""
        from airflow_provider_kirin.triggers.kirin import task_from_event

        return self.finish(context, task_from_event(event), **resume)
