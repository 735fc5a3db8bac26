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

from airflow_provider_kirin._compat import AirflowSensorTimeout, conf
from airflow_provider_kirin.core import defaults
from airflow_provider_kirin.links.kirin import KirinVideoLink
from airflow_provider_kirin.operators.common import default_retry_policy, kirin_errors
from airflow_provider_kirin.operators.waiting import KirinWaitMixin, resolve_error_seconds

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_kirin.core.waiting import Wait
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
    :param max_poll_error_seconds: How long failed status checks may go on before they end the
        wait with the last check's error (a failed check is "not yet" until then). In reschedule
        mode each poke is a new process, so there only the sensor's ``timeout`` ends a run of
        failed checks.
    :param max_consecutive_poll_errors: Deprecated: the same budget as a count of checks.

    Every mode waits with the core's wait engine (``core/waiting.py``): one check per poke,
    within the same per-check time budget as the triggerer's. From Airflow 3.3 its default
    ``retry_policy`` is ``KirinRetryPolicy`` (a refused key fails at once, whatever ``retries``).
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
        max_poll_error_seconds: float = defaults.MAX_POLL_ERROR_SECONDS,
        max_consecutive_poll_errors: int | None = None,
        **kwargs: Any,
    ) -> None:
        default_retry_policy(kwargs, retry_failed_generations=True)
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.kirin_task_id = kirin_task_id
        self.kirin_conn_id = kirin_conn_id
        self.first_poll_delay = first_poll_delay
        self.deferrable = deferrable
        self.max_poll_error_seconds = resolve_error_seconds(
            max_poll_error_seconds, max_consecutive_poll_errors, poke_interval
        )
        self._wait: Wait | None = None
        self.kirin_video_url: str | None = None

    @cached_property
    def hook(self) -> KirinHook:
        from airflow_provider_kirin.hooks.kirin import KirinHook

        return KirinHook(kirin_conn_id=self.kirin_conn_id)

    @kirin_errors
    def execute(self, context: Context) -> Any:
        from airflow_provider_kirin.core.waiting import Wait

        if self.deferrable:
            self.defer_until_done(
                self.kirin_task_id,
                poll_interval=float(self.poke_interval),
                timeout=float(self.timeout),
                first_poll_delay=self.first_poll_delay,
                max_poll_error_seconds=self.max_poll_error_seconds,
            )
        started = self._start_time(context)
        self._wait = Wait(
            str(self.kirin_task_id),
            deadline=started + float(self.timeout),
            poll_interval=float(self.poke_interval),
            first_check_at=started + self.first_poll_delay,
            max_error_seconds=self.max_poll_error_seconds,
            started=started,
            paced_by_caller=True,  # Airflow paces the pokes
            logger=self.log,
        )
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
        """One step of the wait engine (``waiting.check_plan``): a status check once the first is
        due; a failed check is "not yet" within ``max_poll_error_seconds``; done when it ends."""
        from airflow_provider_kirin.core.waiting import check_plan

        if self._wait is None:  # pragma: no cover - execute() sets it before the first poke
            raise RuntimeError("KirinTaskSensor.poke() before execute()")
        self.hook.metrics.watch(self._wait.task_id)  # an unfinished generation: its end is counted
        outcome = self.hook.run(check_plan(self.hook.protocol, self._wait))
        if outcome is None:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self.finish(context, outcome.result()))

    @kirin_errors
    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: return the result, or raise the typed error."""
        return self.finish_event(context, event)
