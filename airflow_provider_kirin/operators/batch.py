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
    from decimal import Decimal

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
        ``<index>[-<key>].mp4`` (``~2``, ``~3``... before ``.mp4`` for a generation's extra videos)
        with its ``.json`` sidecar (file names come from the item, never from the server).
    :param overwrite: Replace existing files in ``destination`` even when they are not this
        batch's: by default a video or sidecar is replaced only when its sidecar names the same
        generation, and ``manifest.jsonl`` only when it names one of this batch's generations (a
        retry); anything else fails with ``KirinStorageError`` naming the file. Symlinks and
        directories at a file's name are always refused.
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
    :param keep_concurrency: Videos kept at once (each streamed to storage; a CDN's time to first
        byte, not bandwidth, is what makes one at a time slow).
    :param max_cost: The batch's spend ceiling in USD (a decimal string or a number, templated),
        across every try of this task instance: generations reused from earlier tries count with
        the cost Kirin reported. An item whose estimate does not fit is not submitted and ends
        ``over_budget`` (it counts against ``max_failed``); a retry with a larger ceiling creates
        only those. Estimates come from the connection's ``prices`` extra, or are learned (see
        ``docs/spend.md``). ``None``: no ceiling.
    :param dry_run: Validate every item, look up which generations exist and are reusable, and
        return the plan (would create, would reuse, estimated cost by kind, items over
        ``max_cost``) without creating anything.

    OpenLineage (with the OpenLineage provider installed): the manifest and the kept videos and
    sidecars as output datasets, and a ``kirin`` run facet with the item counts by status, the
    number failed and the total cost (not one row per item). From Airflow 3.3 its default
    ``retry_policy`` is ``KirinRetryPolicy``; a retry pays only for the items that did not complete.
    """

    lineage_operation = "batch"

    template_fields: Sequence[str] = ("prompts", "negative_prompt", "destination", "variant", "max_cost")
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
        keep_concurrency: int = defaults.KEEP_CONCURRENCY,
        max_cost: str | float | None = None,
        dry_run: bool = False,
        overwrite: bool = False,
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
        self.keep_concurrency = keep_concurrency
        self.max_cost = max_cost
        # Not ``self.dry_run``: that name is BaseOperator's (render the templates, run nothing).
        self.plan_only = dry_run
        self.overwrite = overwrite

    @cached_property
    def hook(self) -> KirinHook:
        from airflow_provider_kirin.hooks.kirin import KirinHook

        return KirinHook(kirin_conn_id=self.kirin_conn_id)

    # -- items -------------------------------------------------------------------------------------
    def _items(self, context: Context) -> list[BatchItem]:
        """Every item validated (nothing is spent on a bad one), each with its derived id."""
        from airflow_provider_kirin.core.batch import check_max_failed, parse_items, with_derived_ids
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
        self._ceiling()  # a bad max_cost fails before anything is sent
        shared = {name: getattr(self, name) for name in VIDEO_ARGS if name != "prompt"}
        items = parse_items(self.prompts, shared)
        return with_derived_ids(
            items, context, variant=self.variant or "", namespace=self.external_id_namespace
        )

    def _ceiling(self) -> Decimal | None:
        from airflow_provider_kirin.core.budget import parse_usd

        return None if self.max_cost in (None, "") else parse_usd("max_cost", self.max_cost)

    # -- run ---------------------------------------------------------------------------------------
    @kirin_errors
    def execute(self, context: Context) -> dict[str, Any]:
        items = self._items(context)
        if self.plan_only:
            return self._dry_run(items)
        trigger = self._trigger(items)
        self.log.info(
            "Kirin batch of %d items, at most %d in flight, deadline in %.0f s%s",
            len(items),
            self.max_in_flight,
            (trigger.deadline or 0) - time.time(),
            f", max_cost ${trigger.max_cost}" if trigger.max_cost is not None else "",
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
        ceiling = self._ceiling()
        return KirinBatchTrigger(
            items=pack_items(items),
            kirin_conn_id=self.kirin_conn_id,
            max_in_flight=self.max_in_flight,
            poll_interval=self.poll_interval,
            deadline=time.time() + timeout,
            first_poll_delay=self.first_poll_delay,
            max_poll_error_seconds=self.max_poll_error_seconds,
            expected_seconds=defaults.EXPECTED_SECONDS.get((first.mode, first.duration)),
            max_cost=str(ceiling) if ceiling is not None else None,
        )

    def _dry_run(self, items: list[BatchItem]) -> dict[str, Any]:
        """What the batch would create, reuse and cost: lookups only, nothing created."""
        requests = [item.request for item in items]
        plan = self.hook.estimate(requests, max_cost=self._ceiling(), concurrency=self.max_in_flight)
        self.log.info("Kirin batch dry run of %d items: %s", len(items), plan.sentence())
        return plan.to_xcom()

    @kirin_errors
    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, items: list[BatchItem] | None = None
    ) -> dict[str, Any]:
        """Turn the trigger's event into the kept videos, the manifest, the summary and the task's
        outcome (``max_failed``)."""
        from airflow_provider_kirin.core.batch import BatchTally, too_many_failed
        from airflow_provider_kirin.core.budget import Budget
        from airflow_provider_kirin.exceptions import KirinBudgetExceededError, KirinError
        from airflow_provider_kirin.triggers.batch import BatchEvent

        results = BatchEvent.decode(event).results
        items = items if items is not None else self._items(context)
        if sorted(result.index for result in results) != [item.index for item in items]:
            raise KirinError("The Kirin batch trigger's event does not match the task's items.")
        by_index = {item.index: item for item in items}
        tally = BatchTally(total=len(items), budget=Budget(self._ceiling()))
        for result in results:
            tally.record(result, by_index[result.index])
            if result.status != "completed":
                self.log.warning(
                    "%s %s: %s %s",
                    by_index[result.index].label,
                    result.status,
                    result.error_code or "no code",
                    result.error_message or "",
                )
        kept = self._keep_videos(results, by_index) if self.keep_videos else {}
        manifest = self._write_manifest(results, by_index, kept) if self.destination is not None else None
        ledger = {
            "total_cost": tally.total_cost(),
            "spent_total": tally.total_cost(),
            "spent_this_try": tally.budget.usd(tally.budget.spent_this_try),
        }
        counts = dict(sorted(tally.counts.items()))
        summary: dict[str, Any] = {
            "counts": counts,
            **ledger,
            "max_cost": str(tally.budget.max_cost) if tally.budget.max_cost is not None else None,
            "manifest": manifest,
            "items": len(items),
            "failed": tally.failed,
        }
        self.log.info(
            "Kirin batch: %s (this try paid $%s); manifest %s",
            tally.progress(),
            ledger["spent_this_try"],
            manifest or "not written",
        )
        stored = [path for _, paths in kept.values() for path in paths]
        self.record_lineage(
            {
                "items": len(items),
                "counts": counts,
                "failed": tally.failed,
                "total_cost": tally.total_cost(),
                "spent_this_try": ledger["spent_this_try"],
                "manifest": manifest,
                "stored": len(stored),
            },
            outputs=[
                *([manifest] if manifest else []),
                *(n for path in stored for n in (path, f"{path}.json")),  # + sidecar_path
            ],
        )
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = {"manifest": manifest, "counts": dict(counts), **ledger}
        if too_many_failed(tally.failed, len(items), self.max_failed):
            message = (
                f"{tally.failed} of {len(items)} Kirin batch items did not complete "
                f"(counts {summary['counts']}), more than max_failed={self.max_failed!r}; "
                f"see the manifest ({manifest or 'not written'})."
            )
            if tally.failed == counts.get("over_budget", 0):  # a retry with the same ceiling changes nothing
                raise KirinBudgetExceededError(
                    f"{message} Raise max_cost to create the rest; nothing else is retried."
                )
            raise KirinError(f"{message} A retry regenerates only those.")
        return summary

    # -- results -----------------------------------------------------------------------------------
    def _keep_videos(
        self, results: list[ItemResult], items: dict[int, BatchItem]
    ) -> dict[int, tuple[list[str], list[str]]]:
        """Stream each completed item's videos to ``destination``, ``keep_concurrency`` at a time;
        the task is read again first, for freshly signed URLs. Returns each item's
        ``(video URLs, stored paths)``."""
        import threading
        from concurrent.futures import ThreadPoolExecutor

        from airflow_provider_kirin.core.batch import item_file_stem
        from airflow_provider_kirin.exceptions import KirinError, KirinStorageError
        from airflow_provider_kirin.hooks.kirin import KirinHook
        from airflow_provider_kirin.io.storage import destination_dir, keep_task_videos

        directory = destination_dir(self.destination)
        local = threading.local()  # one hook (one pooled HTTP session) per thread

        def keep(result: ItemResult) -> tuple[int, tuple[list[str], list[str]]]:
            hook = local.__dict__.setdefault("hook", KirinHook(kirin_conn_id=self.kirin_conn_id))
            item = items[result.index]
            task = hook.get_task(str(result.task_id))
            stored = keep_task_videos(
                hook,
                task,
                directory,
                item_file_stem(item.index, item.key),
                item.request.to_payload(),
                max_bytes=self.max_bytes,
                log=self.log,
                overwrite=self.overwrite,
            )
            return result.index, (task.video_urls, stored)

        completed = [result for result in results if result.status == "completed" and result.task_id]
        with ThreadPoolExecutor(max_workers=max(1, int(self.keep_concurrency))) as pool:
            futures = [pool.submit(keep, result) for result in completed]
        # Every video is tried before a failure is raised: what was kept, a retry does not fetch again.
        kept, failures = {}, []
        for future in futures:
            try:
                index, value = future.result()
            except KirinError as err:
                failures.append(err)
            else:
                kept[index] = value
        if failures:
            raise KirinStorageError(
                f"{len(failures)} of {len(completed)} videos could not be kept (the others were); a retry "
                f"keeps only those. The first: {failures[0].message}"
            )
        return kept

    def _write_manifest(
        self,
        results: list[ItemResult],
        items: dict[int, BatchItem],
        kept: dict[int, tuple[list[str], list[str]]],
    ) -> str:
        from airflow_provider_kirin.core.redaction import redact_json
        from airflow_provider_kirin.io.storage import destination_dir, location, write_file

        directory = destination_dir(self.destination)
        path = directory / MANIFEST_NAME
        lines = []
        for result in sorted(results, key=lambda r: r.index):
            urls, stored = kept.get(result.index, ([], []))
            row = result.manifest_row(items[result.index], video_urls=urls, stored=stored)
            # ensure_ascii: U+2028/U+2029/U+0085 and every control character are written as \u
            # escapes, so any reader, splitting lines however it likes, sees one object per line.
            lines.append(json.dumps(redact_json(row), sort_keys=True, ensure_ascii=True))
        ours = {item.request.external_task_id for item in items.values()}
        data = ("\n".join(lines) + "\n").encode("ascii")
        write_file(path, data, may_replace=lambda existing: _names_a_generation_of(existing, ours),
                   overwrite=self.overwrite)  # fmt: skip
        self.log.info("Wrote the manifest of %d items to %s", len(lines), path)
        return location(path)


def _names_a_generation_of(path: Any, external_ids: set[str | None]) -> bool:
    """Whether an existing manifest is this batch's own: a Kirin manifest (a JSON object per line)
    with a row naming one of ``external_ids`` (the derived ids name the task instance, so only a
    try of this task instance writes them; ``.g2``... are the same ids' later generations)."""
    import re

    from airflow_provider_kirin.io.storage import read_small

    data = read_small(path)
    if not data:
        return False
    try:
        rows = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    except ValueError:
        return False
    if not rows or not all(
        isinstance(row, dict) and isinstance(row.get("external_task_id"), str) for row in rows
    ):
        return False  # not a Kirin manifest: someone else's file
    return any(re.sub(r"\.g\d+$", "", row["external_task_id"]) in external_ids for row in rows)


async def _first_event(trigger: KirinBatchTrigger) -> dict[str, Any]:
    """Run the batch trigger in this process (non-deferrable mode): the same logic as the triggerer."""
    async for event in trigger.run():
        return dict(event.payload)
    raise RuntimeError("the Kirin batch trigger ended without an event")  # pragma: no cover
