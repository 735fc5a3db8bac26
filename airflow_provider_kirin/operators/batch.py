"""Many prompts in one task: one trigger, one manifest, the account's concurrency respected.

A mapped ``KirinTextToVideoOperator`` costs two task processes and one trigger per video; for a
catalogue of hundreds of clips Airflow's per-task machinery costs far more than the work. This
operator submits and waits for a whole list of prompts in one task and one trigger::

    from airflow.sdk import Asset

    from airflow_provider_kirin.operators.batch import KirinBatchTextToVideoOperator

    KirinBatchTextToVideoOperator(
        task_id="catalogue",
        prompts=[
            "a red fox in fresh snow",
            {"key": "sale-banner", "prompt": "confetti over a shop window", "aspect_ratio": "9:16"},
        ],
        duration=5,  # shared defaults; any item may override them
        max_in_flight=10,  # the account's concurrent generations
        max_failed=0.05,  # fail the task if more than 5 % of the items fail
        destination="s3://my-bucket/kirin/{{ ds }}/",  # manifest.jsonl (+ videos if keep_videos)
        keep_videos=True,
        outlets=[Asset("kirin-catalogue")],
    )

Returns a small summary (XCom ``return_value``): ``counts`` (item status -> number),
``total_cost`` (USD string), ``manifest`` (where it was written, or None), ``items``, ``failed``.
This module imports nothing heavy at DAG parse time.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_kirin._compat import conf
from airflow_provider_kirin.core import defaults
from airflow_provider_kirin.operators.common import KirinLineageMixin, default_retry_policy, kirin_errors
from airflow_provider_kirin.operators.waiting import defer_timeout, resolve_error_seconds

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_kirin.core.batch import BatchItem, ItemResult
    from airflow_provider_kirin.hooks.kirin import KirinHook
    from airflow_provider_kirin.triggers.batch import KirinBatchTrigger

#: The manifest's file name in ``destination``.
MANIFEST_NAME = "manifest.jsonl"


class KirinBatchTextToVideoOperator(KirinLineageMixin, BaseOperator):
    """Generate a video for every item of ``prompts`` in one task (see the module docstring).

    Every item is validated before anything is spent. Each item gets its own derived
    ``external_task_id`` (task instance + the item's ``key``, else its index, + a fingerprint of
    its inputs), with the single operator's rules: a task retry reuses every generation that
    exists and is usable, pays only for items whose generation failed (``.g2``, ``.g3``, ...),
    and a changed item gets a new id. While it waits, one trigger drives the batch: at most
    ``max_in_flight`` generations unfinished at once, a 429 pauses the whole batch, progress lines
    in the triggerer log. The result is a manifest (one JSON row per item: index, key, inputs
    fingerprint, external id, task id, status, video URLs, cost, error code and message), written
    to ``destination`` when given, optionally with the videos and their sidecars. Failed items are
    counted, logged with their code and listed in the manifest; ``max_failed`` decides when the
    task fails. Each outlet asset gets an event whose extras name the manifest.

    :param prompts: A list of prompt strings, or of dicts with any of ``prompt``,
        ``negative_prompt``, ``duration``, ``aspect_ratio``, ``mode``, ``watermark`` and an
        optional stable, unique ``key`` (templated; an ``XComArg`` works, and ``.expand()`` over
        chunks of prompts).
    :param negative_prompt: Default for every item (templated).
    :param duration: Default for every item: 5 or 10 seconds.
    :param aspect_ratio: Default for every item: ``16:9``, ``9:16`` or ``1:1``.
    :param mode: Default for every item: ``std`` or ``pro``.
    :param watermark: Default for every item.
    :param max_in_flight: At most this many of the batch's generations unfinished at once (set it to
        the account's concurrency limit).
    :param max_failed: How many items may fail (``failed``, ``error``, ``timeout``, not submitted)
        before the task fails: a count (int) or a fraction of the items (float in [0, 1]). Default 0:
        any failure fails the task, after the manifest is written.
    :param destination: Directory for ``manifest.jsonl`` (and the videos): an ``ObjectStoragePath``,
        a URL Airflow's object storage understands, or a local path (templated). None: no manifest
        file (the summary still says what happened).
    :param keep_videos: Also stream each completed video to ``destination`` as
        ``<index>[-<key>].mp4`` with its ``.json`` sidecar (file names come from the item, never from
        the server).
    :param poll_interval: Seconds between two status checks of one item (an upper bound).
    :param first_poll_delay: Seconds between an item's create and its first check.
    :param timeout: Seconds the whole batch may take. Default: 30 minutes per "wave" of
        ``max_in_flight`` items.
    :param deferrable: Wait in the triggerer (one trigger for the batch) instead of a worker slot;
        otherwise the same batch logic runs in the worker.
    :param kirin_conn_id: The ``kirin`` connection.
    :param max_poll_error_seconds: How long failed status checks of one item may go on before they
        end that item with ``error`` (default five minutes).
    :param max_consecutive_poll_errors: Deprecated: the same budget as a count of checks.
    :param external_id_namespace: Mixed into derived ids, for deployments sharing one account.
    :param variant: A deliberate fresh take of every item (templated), mixed into the derived ids.
    :param max_bytes: Refuse a video larger than this when keeping videos.

    OpenLineage (with the OpenLineage provider installed): the manifest and the kept videos and
    sidecars as output datasets, and a ``kirin`` run facet with the item counts by status, the
    number failed and the total cost (not one row per item). From Airflow 3.3 its default
    ``retry_policy`` is ``KirinRetryPolicy``; a retry pays only for the items that did not complete.
    """

    lineage_operation = "batch"

    template_fields: Sequence[str] = ("prompts", "negative_prompt", "destination", "variant")
    template_fields_renderers = {"prompts": "json"}
    ui_color = "#f3e8ff"

    def __init__(
        self,
        *,
        prompts: Any,
        negative_prompt: str | None = None,
        duration: int | str | None = None,
        aspect_ratio: str | None = None,
        mode: str | None = None,
        watermark: bool | None = None,
        max_in_flight: int = 10,
        max_failed: int | float = 0,
        destination: Any = None,
        keep_videos: bool = False,
        poll_interval: float = defaults.POLL_INTERVAL,
        first_poll_delay: float = defaults.FIRST_POLL_DELAY,
        timeout: float | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        kirin_conn_id: str = defaults.DEFAULT_CONN_ID,
        max_poll_error_seconds: float = defaults.MAX_POLL_ERROR_SECONDS,
        max_consecutive_poll_errors: int | None = None,
        external_id_namespace: str = "",
        variant: str | None = None,
        max_bytes: int = defaults.DEFAULT_MAX_BYTES,
        **kwargs: Any,
    ) -> None:
        default_retry_policy(kwargs, retry_failed_generations=True)
        super().__init__(**kwargs)
        self.prompts = prompts
        self.negative_prompt = negative_prompt
        self.duration = duration
        self.aspect_ratio = aspect_ratio
        self.mode = mode
        self.watermark = watermark
        self.max_in_flight = max_in_flight
        self.max_failed = max_failed
        self.destination = destination
        self.keep_videos = keep_videos
        self.poll_interval = poll_interval
        self.first_poll_delay = first_poll_delay
        self.timeout = timeout
        self.deferrable = deferrable
        self.kirin_conn_id = kirin_conn_id
        self.max_poll_error_seconds = resolve_error_seconds(
            max_poll_error_seconds, max_consecutive_poll_errors, poll_interval
        )
        self.external_id_namespace = external_id_namespace
        self.variant = variant
        self.max_bytes = max_bytes

    @cached_property
    def hook(self) -> KirinHook:
        from airflow_provider_kirin.hooks.kirin import KirinHook

        return KirinHook(kirin_conn_id=self.kirin_conn_id)

    # -- items -------------------------------------------------------------------------------------
    def _items(self, context: Context) -> list[BatchItem]:
        """Every item validated (nothing is spent on a bad one), each with its derived id."""
        from dataclasses import replace

        from airflow_provider_kirin.core.batch import check_max_failed, parse_items
        from airflow_provider_kirin.core.idempotency import with_derived_external_task_id
        from airflow_provider_kirin.exceptions import KirinValidationError
        from airflow_provider_kirin.models import VIDEO_ARGS

        if (
            isinstance(self.max_in_flight, bool)
            or not isinstance(self.max_in_flight, int)
            or self.max_in_flight < 1
        ):
            raise KirinValidationError(
                f"max_in_flight={self.max_in_flight!r} is invalid; allowed: an int >= 1"
            )
        check_max_failed(self.max_failed)
        if self.keep_videos and self.destination is None:
            raise KirinValidationError(
                "keep_videos=True is invalid without a destination; allowed: set destination"
            )
        shared = {name: getattr(self, name) for name in VIDEO_ARGS if name != "prompt"}
        items = parse_items(self.prompts, shared)
        return [
            replace(
                item,
                request=with_derived_external_task_id(
                    item.request,
                    context,
                    variant=self.variant or "",
                    namespace=self.external_id_namespace,
                    item=item.item_id,
                ),
            )
            for item in items
        ]

    # -- run ---------------------------------------------------------------------------------------
    @kirin_errors
    def execute(self, context: Context) -> dict[str, Any]:
        items = self._items(context)
        trigger = self._trigger(items)
        self.log.info(
            "Kirin batch of %d items, at most %d in flight, deadline in %.0f s",
            len(items),
            self.max_in_flight,
            (trigger.deadline or 0) - time.time(),
        )
        if self.deferrable:
            from airflow_provider_kirin.triggers.batch import DEADLINE_GRACE

            seconds = (trigger.deadline or 0) - time.time() + DEADLINE_GRACE
            self.defer(
                trigger=trigger,
                method_name="execute_complete",
                timeout=defer_timeout(seconds, self.execution_timeout),
            )
        return self.execute_complete(context, asyncio.run(_first_event(trigger)), items=items)

    def _trigger(self, items: list[BatchItem]) -> KirinBatchTrigger:
        from airflow_provider_kirin.core.batch import pack_items
        from airflow_provider_kirin.triggers.batch import KirinBatchTrigger

        waves = math.ceil(len(items) / self.max_in_flight)
        timeout = self.timeout if self.timeout is not None else defaults.TIMEOUT * waves
        first = items[0].request
        return KirinBatchTrigger(
            items=pack_items(items),
            kirin_conn_id=self.kirin_conn_id,
            max_in_flight=self.max_in_flight,
            poll_interval=self.poll_interval,
            deadline=time.time() + timeout,
            first_poll_delay=self.first_poll_delay,
            max_poll_error_seconds=self.max_poll_error_seconds,
            expected_seconds=defaults.EXPECTED_SECONDS.get((first.mode, first.duration)),
        )

    @kirin_errors
    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, items: list[BatchItem] | None = None
    ) -> dict[str, Any]:
        """Turn the trigger's event into the manifest, the kept videos, the summary and the
        task's outcome (``max_failed``)."""
        from airflow_provider_kirin.core.batch import BatchTally, too_many_failed
        from airflow_provider_kirin.exceptions import KirinError
        from airflow_provider_kirin.triggers.batch import BatchEvent

        results = BatchEvent.decode(event).results
        items = items if items is not None else self._items(context)
        if sorted(result.index for result in results) != [item.index for item in items]:
            raise KirinError("The Kirin batch trigger's event does not match the task's items.")
        by_index = {item.index: item for item in items}
        tally = BatchTally(total=len(items))
        for result in results:
            tally.record(result)
            if result.status != "completed":
                self.log.warning(
                    "%s %s: %s %s",
                    by_index[result.index].label,
                    result.status,
                    result.error_code or "no code",
                    result.error_message or "",
                )
        stored = self._keep_videos(results, by_index) if self.keep_videos else {}
        manifest = self._write_manifest(results, by_index, stored) if self.destination is not None else None
        counts = dict(sorted(tally.counts.items()))
        summary: dict[str, Any] = {
            "counts": counts,
            "total_cost": tally.total_cost(),
            "manifest": manifest,
            "items": len(items),
            "failed": tally.failed,
        }
        self.log.info("Kirin batch: %s; manifest %s", tally.progress(), manifest or "not written")
        kept = [name for paths in stored.values() for path in paths for name in (path, f"{path}.json")]
        self.record_lineage(
            {
                "items": len(items),
                "counts": counts,
                "failed": tally.failed,
                "total_cost": tally.total_cost(),
                "manifest": manifest,
                "stored": sum(len(paths) for paths in stored.values()),
            },
            outputs=[*([manifest] if manifest else []), *kept],
        )
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = {
                "manifest": manifest,
                "counts": dict(counts),
                "total_cost": tally.total_cost(),
            }
        if too_many_failed(tally.failed, len(items), self.max_failed):
            raise KirinError(
                f"{tally.failed} of {len(items)} Kirin batch items did not complete "
                f"(counts {summary['counts']}), more than max_failed={self.max_failed!r}; "
                f"see the manifest ({manifest or 'not written'}). A retry regenerates only those."
            )
        return summary

    # -- results -----------------------------------------------------------------------------------
    def _keep_videos(self, results: list[ItemResult], items: dict[int, BatchItem]) -> dict[int, list[str]]:
        """Stream each completed item's videos (freshly signed URLs: the task is read again)."""
        from airflow_provider_kirin.core.batch import item_file_stem
        from airflow_provider_kirin.io.storage import destination_dir, keep_task_videos

        directory = destination_dir(self.destination)
        stored: dict[int, list[str]] = {}
        for result in results:
            if result.status != "completed" or not result.task_id:
                continue
            item = items[result.index]
            task = self.hook.get_task(result.task_id)
            stored[result.index] = keep_task_videos(
                self.hook,
                task,
                directory,
                item_file_stem(item.index, item.key),
                item.request.to_payload(),
                max_bytes=self.max_bytes,
                log=self.log,
            )
        return stored

    def _write_manifest(
        self, results: list[ItemResult], items: dict[int, BatchItem], stored: dict[int, list[str]]
    ) -> str:
        from airflow_provider_kirin.core.redaction import redact_json
        from airflow_provider_kirin.io.storage import destination_dir, location

        directory = destination_dir(self.destination)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / MANIFEST_NAME
        lines = []
        for result in sorted(results, key=lambda r: r.index):
            item = items[result.index]
            row = result.manifest_row(item, item.request.external_task_id)
            row["stored"] = stored.get(result.index, [])
            lines.append(json.dumps(redact_json(row), sort_keys=True, ensure_ascii=False))
        path.write_text("\n".join(lines) + "\n")
        self.log.info("Wrote the manifest of %d items to %s", len(lines), path)
        return location(path)


async def _first_event(trigger: KirinBatchTrigger) -> dict[str, Any]:
    """Run the batch trigger in this process (non-deferrable mode): the same logic as the triggerer."""
    async for event in trigger.run():
        return dict(event.payload)
    raise RuntimeError("the Kirin batch trigger ended without an event")  # pragma: no cover
