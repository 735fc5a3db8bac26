"""The operator that turns a prompt into a Kirin video generation.

Submit, and let a sensor wait::

    from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator
    from airflow_provider_kirin.sensors.kirin import KirinTaskSensor

    submit = KirinTextToVideoOperator(task_id="submit", prompt="a red fox in fresh snow", duration=5)
    wait = KirinTaskSensor(task_id="wait", kirin_task_id=submit.output, deferrable=True)

Or submit and wait in one task, deferring to the triggerer::

    KirinTextToVideoOperator(
        task_id="generate",
        prompt="prompts/fox.txt",  # a .txt/.j2 file is read and templated
        mode="pro",
        wait_for_completion=True,
        deferrable=True,
    )

This module imports nothing heavy (no aiohttp, no pydantic models) at DAG parse time.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_kirin._compat import conf
from airflow_provider_kirin.core import defaults
from airflow_provider_kirin.links.kirin import KirinVideoLink
from airflow_provider_kirin.operators.common import KirinLineageMixin, default_retry_policy, kirin_errors
from airflow_provider_kirin.operators.waiting import (
    KIRIN_REQUEST_XCOM_KEY,
    KIRIN_TASK_ID_XCOM_KEY,
    KirinWaitMixin,
    WaitSettings,
    resolve_error_seconds,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_kirin.hooks.kirin import KirinHook
    from airflow_provider_kirin.models import KirinVideoRequest


class KirinTextToVideoOperator(KirinWaitMixin, KirinLineageMixin, BaseOperator):
    """Submit a Kirin V2.5 Turbo text-to-video generation; optionally wait for the video.

    Returns the Kirin task id (XCom ``return_value``, and key ``kirin_task_id``); the validated
    request fields go to XCom key ``kirin_request`` (for sidecars and audits). With
    ``wait_for_completion=True`` it also pushes the result dict under ``kirin_result``:
    ``task_id``, ``external_task_id``, ``status``, ``videos`` (``url``, ``type``, ``size``),
    ``cost`` (USD string), ``discount``, ``metadata``.

    Every argument is validated after templating and before any request, so a bad value fails the
    task without spending anything. Retries never pay twice: the task always sends an
    ``external_task_id`` (yours, or one derived from the task instance and its inputs) and looks it up
    before creating; see ``docs/reliability.md``. A create answered 409 (another try of the same
    inputs won a race) is resolved by looking the id up and reusing that generation.

    :param prompt: 1 to 2500 characters (templated; a ``.txt``/``.j2`` file name is read as a template).
    :param negative_prompt: Up to 2500 characters (templated).
    :param duration: 5 or 10 seconds (default 5).
    :param aspect_ratio: ``16:9`` (default), ``9:16`` or ``1:1``.
    :param mode: ``std`` (default) or ``pro``.
    :param watermark: Whether Kirin also generates a watermarked result (default no).

    Request fields left ``None`` take the request model's default (``models.KirinVideoRequest``,
    where every field, its rule and its default are declared once).
    :param callback_url: http(s) URL Kirin notifies on status changes (templated).
    :param external_task_id: Your idempotency id (templated), used exactly as given: it alone then
        decides what is reused. When not given, one is derived from the task instance (dag, run,
        task, map index) and a fingerprint of every input that shapes the video, so a retry or a
        cleared task with the same inputs reuses its generation and any changed input (prompt,
        negative prompt, duration, aspect ratio, mode, watermark) makes a new one.
    :param variant: Ask for a deliberate fresh take of the same inputs in the same run (templated,
        any string, e.g. ``"2"`` or ``"{{ params.take }}"``); mixed into the derived id. Ignored
        when ``external_task_id`` is given.
    :param kirin_conn_id: The ``kirin`` connection.
    :param wait_for_completion: Wait until the generation ends.
    :param deferrable: Wait in the triggerer instead of a worker slot.
    :param poll_interval: Seconds between status checks while waiting (an upper bound).
    :param first_poll_delay: Seconds before the first status check (a generation takes 30 s or more).
    :param timeout: Seconds to wait for the generation before :class:`KirinTaskTimeoutError`.
    :param max_poll_error_seconds: How long failed status checks (429, 5xx, timeouts) may go on
        before they end the wait with the last check's error; until then a failed check is "not
        yet" (default five minutes, ``core/defaults.py``).
    :param max_consecutive_poll_errors: Deprecated: the same budget as a count of checks.
    :param external_id_namespace: Mixed into derived ids, for deployments sharing one account.
    :param max_cost: A ceiling in USD for this generation (templated): with a price for its kind in
        the connection's ``prices``, a request estimated over it fails before anything is sent, and
        no retry repeats it; what Kirin reports past it is recorded in ``kirin_result``
        (``over_max_cost``) with a warning.
    :param expected_seconds: How long the generation should take (default: by mode and duration,
        ``defaults.EXPECTED_SECONDS``); around then, status checks come twice as often within the
        same request budget.
    :param retry_failed_generations: Whether a failed generation (``KirinTaskFailedError``) may be
        retried by the task's ``retries``; each retry **pays for a new generation**. ``False``
        fails the task at once instead. Errors a retry cannot fix (a rejected request, a refused
        key) never retry, and a ``Retry-After`` sets the delay (Airflow 3.3+): see
        ``retry_policy.KirinRetryPolicy``, the default ``retry_policy`` from Airflow 3.3.

    OpenLineage (with the OpenLineage provider installed): the generated videos (at their URL,
    without its query) as outputs and a ``kirin`` run facet (model, mode, duration, aspect ratio,
    ids, reuse, cost; the error's class and code on failure). See ``airflow_provider_kirin.lineage``.
    """

    template_fields: Sequence[str] = (
        "prompt",
        "negative_prompt",
        "external_task_id",
        "callback_url",
        "variant",
        "max_cost",
    )
    template_ext: Sequence[str] = (".txt", ".j2")
    template_fields_renderers = {"prompt": "md", "negative_prompt": "md"}
    operator_extra_links = (KirinVideoLink(),)
    ui_color = "#f3e8ff"

    def __init__(
        self,
        *,
        prompt: str,
        negative_prompt: str | None = None,
        duration: int | str | None = None,
        aspect_ratio: str | None = None,
        mode: str | None = None,
        watermark: bool | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        kirin_conn_id: str = defaults.DEFAULT_CONN_ID,
        wait_for_completion: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = defaults.POLL_INTERVAL,
        first_poll_delay: float = defaults.FIRST_POLL_DELAY,
        timeout: float = defaults.TIMEOUT,
        max_poll_error_seconds: float = defaults.MAX_POLL_ERROR_SECONDS,
        max_consecutive_poll_errors: int | None = None,
        external_id_namespace: str = "",
        expected_seconds: float | None = None,
        variant: str | None = None,
        max_cost: str | float | None = None,
        retry_failed_generations: bool = True,
        **kwargs: Any,
    ) -> None:
        default_retry_policy(kwargs, retry_failed_generations)
        super().__init__(**kwargs)
        self.retry_failed_generations = retry_failed_generations
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        self.duration = duration
        self.aspect_ratio = aspect_ratio
        self.mode = mode
        self.watermark = watermark
        self.callback_url = callback_url
        self.external_task_id = external_task_id
        self.kirin_conn_id = kirin_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.first_poll_delay = first_poll_delay
        self.timeout = timeout
        self.max_poll_error_seconds = resolve_error_seconds(
            max_poll_error_seconds, max_consecutive_poll_errors, poll_interval
        )
        self.external_id_namespace = external_id_namespace
        self.expected_seconds = expected_seconds
        self.variant = variant
        self.max_cost = max_cost
        self.kirin_task_id: str | None = None
        self.kirin_video_url: str | None = None

    @cached_property
    def hook(self) -> KirinHook:
        from airflow_provider_kirin.hooks.kirin import KirinHook

        return KirinHook(kirin_conn_id=self.kirin_conn_id)

    @kirin_errors
    def execute(self, context: Context) -> str:
        from airflow_provider_kirin.core.idempotency import with_derived_external_task_id
        from airflow_provider_kirin.models import BUILD_ARGS, KirinVideoRequest

        request = KirinVideoRequest.build(**{name: getattr(self, name) for name in BUILD_ARGS})
        request = with_derived_external_task_id(
            request, context, variant=self.variant or "", namespace=self.external_id_namespace
        )
        ceiling = self._check_ceiling(request)
        task, reused = self.hook.submit_idempotent(request)
        self.kirin_task_id = task.task_id
        facts = {
            "model": request.model,
            "mode": request.mode,
            "duration": int(request.duration),
            "aspect_ratio": request.aspect_ratio,
            "external_task_id": task.external_task_id or request.external_task_id,
            "kirin_task_id": task.task_id,
            "reused": reused,
        }
        self.record_lineage(facts)
        context["ti"].xcom_push(key=KIRIN_TASK_ID_XCOM_KEY, value=task.task_id)
        context["ti"].xcom_push(key=KIRIN_REQUEST_XCOM_KEY, value=request.to_payload())
        self.log.info(
            "%s Kirin task %s (external id %s, mode %s, duration %s s, status %s): %s",
            "Reusing" if reused else "Submitted",
            task.task_id,
            task.external_task_id or request.external_task_id,
            request.mode,
            request.duration,
            task.status,
            self._reuse_reason(reused),
        )
        if not self.wait_for_completion:
            return task.task_id
        resume = {"reused": reused, "max_cost": ceiling}
        if not task.is_terminal:
            wait: WaitSettings = {
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
                "first_poll_delay": self.first_poll_delay,
                "max_poll_error_seconds": self.max_poll_error_seconds,
                "expected_seconds": self.expected_seconds
                or defaults.EXPECTED_SECONDS.get((request.mode, request.duration)),
            }
            if self.deferrable:
                self.defer_until_done(task.task_id, **wait, resume_kwargs={"kirin_lineage": facts, **resume})
            task = self.hook.wait_for_task(task.task_id, **wait)
        self._finish_with_lineage(context, task, **resume)
        return task.task_id

    def _finish_with_lineage(self, context: Context, task: Any, **resume: Any) -> dict[str, Any]:
        self.record_lineage({"kirin_task_id": task.task_id, "cost": task.cost})
        result = self.finish(context, task, **resume)
        self.record_lineage(outputs=[str(video["url"]) for video in result["videos"] if video.get("url")])
        return result

    def _check_ceiling(self, request: KirinVideoRequest) -> str | None:
        """Refuse, before any request, a generation whose price is over ``max_cost``; return the
        ceiling. With no price known for its kind it goes ahead: one generation is the smallest
        step, and what Kirin reports is recorded against the ceiling."""
        from airflow_provider_kirin.core.budget import ceiling_error_message, kind_of, parse_usd
        from airflow_provider_kirin.exceptions import KirinBudgetExceededError

        if self.max_cost in (None, ""):
            return None
        ceiling = parse_usd("max_cost", self.max_cost)
        estimate = self.hook.config.price_table.price(kind_of(request))
        if estimate is not None and estimate > ceiling:
            raise KirinBudgetExceededError(ceiling_error_message(request, estimate, ceiling))
        return str(ceiling)

    def _reuse_reason(self, reused: bool) -> str:
        """Why this try reused a generation or paid for a new one, for the task log."""
        if self.external_task_id:
            return (
                "an earlier try already created your external_task_id, which decides reuse"
                if reused
                else "your external_task_id has no usable generation yet"
            )
        take = f" (variant {self.variant!r})" if self.variant else ""
        if reused:
            return f"an earlier try of this task instance asked for the same inputs{take}"
        return (
            f"no earlier try of this task instance asked for these inputs{take}: "
            "a first run, changed inputs or a new variant"
        )

    @kirin_errors
    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        kirin_lineage: dict[str, Any] | None = None,
        **resume: Any,
    ) -> str:
        """Resume after the trigger fired: the completed task's id, or its typed error raised.
        ``kirin_lineage``: what the deferring try knew (request fields, ids, reuse); ``resume``:
        whether the generation was reused and the ceiling (``finish``)."""
        from airflow_provider_kirin.triggers.kirin import task_from_event

        self.record_lineage(kirin_lineage if kirin_lineage is not None else self._request_facts(context))
        if isinstance(event, dict) and isinstance(event.get("kirin_task_id"), str):
            self.record_lineage({"kirin_task_id": event["kirin_task_id"]})  # also when it failed
        return str(self._finish_with_lineage(context, task_from_event(event), **resume)["task_id"])

    def _request_facts(self, context: Context) -> dict[str, Any]:
        """The lineage facts of the deferring try, read back from its ``kirin_request`` XCom: for
        when Airflow resumes the task without the deferral's kwargs (``airflow dags test`` runs
        the trigger inline and keeps only the event, on every 3.x line). Whether it reused a
        generation is then unknown."""
        try:
            ti = context["ti"]
            request = ti.xcom_pull(
                task_ids=self.task_id, key=KIRIN_REQUEST_XCOM_KEY, map_indexes=ti.map_index
            )
        except Exception:  # lineage is never worth failing the task for
            self.log.debug("Could not read the request back for lineage", exc_info=True)
            return {}
        if not isinstance(request, dict):
            return {}
        names = ("model", "mode", "duration", "aspect_ratio", "external_task_id")
        return {name: request.get(name) for name in names}

    def on_kill(self) -> None:
        if self.kirin_task_id:
            self.log.warning(
                "Killed, but Kirin has no cancel endpoint: generation %s continues on Kirin's side and "
                "will still be billed.",
                self.kirin_task_id,
            )
