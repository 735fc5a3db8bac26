"""The sensor that waits for a Kirin task submitted earlier in the DAG.

::

    from airflow_provider_kirin.sensors.kirin import KirinTaskSensor

    wait = KirinTaskSensor(
        task_id="wait_for_video",
        kirin_task_id="{{ ti.xcom_pull(task_ids='submit') }}",  # or submit.output
        deferrable=True,  # wait in the triggerer, not in a worker slot
    )

It succeeds when the task is ``completed`` and returns the result dict (XCom ``return_value``,
also under ``kirin_result``); a ``failed`` task raises the typed error of its code; the timeout
raises :class:`~airflow_provider_kirin.exceptions.KirinTaskTimeoutError`, which ``soft_fail=True``
turns into a skip.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_kirin import defaults
from airflow_provider_kirin._compat import AirflowSensorTimeout, conf
from airflow_provider_kirin.links.kirin import KirinVideoLink
from airflow_provider_kirin.operators.waiting import KirinWaitMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_kirin.hooks.kirin import KirinHook


class KirinTaskSensor(KirinWaitMixin, BaseSensorOperator):
    """Wait until a Kirin task is ``completed`` (success) or ``failed`` (typed error).

    :param kirin_task_id: The Kirin task id (templated), e.g. ``submit.output``.
    :param kirin_conn_id: The ``kirin`` connection.
    :param poke_interval: Seconds between status checks.
    :param timeout: Seconds to wait in all before :class:`KirinTaskTimeoutError`.
    :param first_poll_delay: Seconds before the first status check.
    :param deferrable: Defer to :class:`~airflow_provider_kirin.triggers.kirin.KirinTaskTrigger`
        at once instead of poking from a worker.
    :param max_consecutive_poll_errors: Deferrable mode: failed status checks in a row that end the wait.
    """

    template_fields: Sequence[str] = ("kirin_task_id",)
    operator_extra_links = (KirinVideoLink(),)
    ui_color = "#f3e8ff"

    def __init__(
        self,
        *,
        kirin_task_id: str,
        kirin_conn_id: str = defaults.DEFAULT_CONN_ID,
        poke_interval: float = defaults.POLL_INTERVAL,
        timeout: float = defaults.TIMEOUT,
        first_poll_delay: float = defaults.FIRST_POLL_DELAY,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        max_consecutive_poll_errors: int = defaults.MAX_CONSECUTIVE_POLL_ERRORS,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.kirin_task_id = kirin_task_id
        self.kirin_conn_id = kirin_conn_id
        self.first_poll_delay = first_poll_delay
        self.deferrable = deferrable
        self.max_consecutive_poll_errors = max_consecutive_poll_errors
        self._first_poll_at = 0.0
        self.kirin_video_url: str | None = None

    @cached_property
    def hook(self) -> KirinHook:
        from airflow_provider_kirin.hooks.kirin import KirinHook

        return KirinHook(kirin_conn_id=self.kirin_conn_id)

    def execute(self, context: Context) -> Any:
        if self.deferrable:
            self.defer_until_done(
                self.kirin_task_id,
                poll_interval=float(self.poke_interval),
                timeout=float(self.timeout),
                first_poll_delay=self.first_poll_delay,
                max_consecutive_errors=self.max_consecutive_poll_errors,
            )
        self._first_poll_at = self._start_time(context) + self.first_poll_delay
        try:
            return super().execute(context)
        except AirflowSensorTimeout as err:
            from airflow_provider_kirin.exceptions import KirinTaskTimeoutError

            if isinstance(err, KirinTaskTimeoutError):
                raise
            raise KirinTaskTimeoutError(
                f"Kirin task did not finish within {self.timeout:.0f} s.", task_id=self.kirin_task_id
            ) from None

    def _start_time(self, context: Context) -> float:
        if self.reschedule:  # each reschedule is a new process: measure from the first try
            first = context["ti"].get_first_reschedule_date(context)
            if first is not None:
                return first.timestamp()
        return time.time()

    def poke(self, context: Context) -> bool | PokeReturnValue:
        if time.time() < self._first_poll_at:
            self.log.debug("Kirin task %s: first status check not due yet.", self.kirin_task_id)
            return False
        task = self.hook.get_task(self.kirin_task_id)
        if not task.is_terminal:
            self.log.info("Kirin task %s is %s.", self.kirin_task_id, task.status)
            return False
        return PokeReturnValue(is_done=True, xcom_value=self.finish(context, task))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: return the result, or raise the typed error."""
        return self.finish_event(context, event)
