"""The trigger that drives a whole batch of Kirin generations in the triggerer: one trigger row,
one event, however many prompts.

``KirinBatchTextToVideoOperator`` creates it for you. What it does:

- keeps ``max_in_flight`` workers busy: each takes the next item, submits it idempotently
  (``idempotency.submit_plan``: look the derived id up, reuse, next ``.gN`` suffix after a failed
  generation, create, 409 -> lookup) and waits for it (``waiting.wait_plan``), then takes the next
  one; items are started as slots free up, never all at once. Once a generation of a kind has been
  seen done, later items of that kind are first checked that long after their create
  (``batch.LearnedDurations``). All requests are paced by one
  :class:`~airflow_provider_kirin.core.retry.SharedPause`, so a 429 slows the whole batch;
- logs a progress line every ``progress_interval`` seconds
  (``312/500 done, 4 failed, 22 in flight, $109.20 so far``) and each failed item with its code;
- yields one :class:`BatchEvent` when every item has ended or the deadline passed: one short row
  per item (no envelopes), the counts and the total cost; or an error event if the batch could
  not run at all. :meth:`BatchEvent.decode` turns it back into results for the operator.

Its state lives in its kwargs (the items and their derived ids, deterministic) and in the API:
after a triggerer restart, or while two copies run during a takeover, every item is looked up
before it is created and a 409 is resolved by lookup, so no item is paid for twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

# Imported here, not on first use, so that the import never runs inside the triggerer's event loop.
import aiohttp  # noqa: F401
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_kirin.core.batch import (
    BatchItem,
    BatchTally,
    ItemResult,
    LearnedDurations,
    item_plan,
    unpack_items,
)
from airflow_provider_kirin.core.defaults import DEFAULT_CONN_ID, MAX_POLL_ERROR_SECONDS, POLL_INTERVAL
from airflow_provider_kirin.core.redaction import redact, redact_json
from airflow_provider_kirin.core.retry import SharedPause
from airflow_provider_kirin.core.waiting import Wait, error_seconds_from_count
from airflow_provider_kirin.exceptions import KirinError, error_from_event
from airflow_provider_kirin.hooks.kirin import KirinAsyncHook
from airflow_provider_kirin.models import KirinTask

#: Seconds between two progress lines in the triggerer log.
PROGRESS_INTERVAL = 30.0
#: Extra seconds after the deadline for the items' last checks before the batch is cut short.
DEADLINE_GRACE = 30.0


@dataclass(frozen=True)
class BatchEvent:
    """What a :class:`KirinBatchTrigger` reports: every item's result, the counts and the total."""

    results: list[ItemResult]
    counts: dict[str, int]
    total_cost: str

    def to_payload(self) -> dict[str, Any]:
        return {
            "status": "done",
            "rows": [redact_json(result.to_row()) for result in self.results],
            "counts": dict(self.counts),
            "total_cost": self.total_cost,
        }

    @classmethod
    def decode(cls, event: dict[str, Any] | None) -> BatchEvent:
        """The event a :class:`KirinBatchTrigger` fired, or the typed error it describes raised."""
        if not isinstance(event, dict) or event.get("status") not in ("done", "error"):
            raise KirinError(f"The Kirin batch trigger returned no valid event (got {type(event).__name__}).")
        if event["status"] == "error":
            raise error_from_event(event.get("error") or {})
        try:
            results = [ItemResult.from_row(row) for row in event.get("rows") or []]
        except (TypeError, ValueError) as err:
            raise KirinError(f"The Kirin batch trigger's event holds an unreadable row: {err}") from None
        return cls(results, dict(event.get("counts") or {}), str(event.get("total_cost") or "0.00"))


class KirinBatchTrigger(BaseTrigger):
    """Submit and wait for every item of a batch (see the module docstring).

    :param items: ``batch.pack_items`` of the validated items, each request carrying its derived
        ``external_task_id``.
    :param kirin_conn_id: The ``kirin`` connection.
    :param max_in_flight: At most this many of the batch's generations unfinished at once.
    :param poll_interval: Seconds between two status checks of one item (an upper bound).
    :param deadline: Absolute wall-clock deadline of the whole batch (``time.time()`` seconds).
    :param first_poll_delay: Seconds between an item's create and its first status check.
    :param max_poll_error_seconds: How long failed checks of one item may go on before they end
        that item with ``error``.
    :param expected_seconds: How long one generation should take (checks come more often then).
    :param progress_interval: Seconds between progress log lines.
    :param max_consecutive_errors: Deprecated count form of ``max_poll_error_seconds`` (read so a
        trigger serialized by an earlier release resumes after an upgrade).
    """

    def __init__(
        self,
        items: dict[str, Any],
        kirin_conn_id: str = DEFAULT_CONN_ID,
        max_in_flight: int = 10,
        poll_interval: float = POLL_INTERVAL,
        deadline: float | None = None,
        first_poll_delay: float = 0.0,
        max_poll_error_seconds: float = MAX_POLL_ERROR_SECONDS,
        expected_seconds: float | None = None,
        progress_interval: float = PROGRESS_INTERVAL,
        max_consecutive_errors: int | None = None,
    ) -> None:
        super().__init__()
        self.items = items
        self.kirin_conn_id = kirin_conn_id
        self.max_in_flight = int(max_in_flight)
        self.poll_interval = float(poll_interval)
        self.deadline = deadline
        self.first_poll_delay = float(first_poll_delay)
        if max_consecutive_errors is not None:
            max_poll_error_seconds = error_seconds_from_count(max_consecutive_errors, self.poll_interval)
        self.max_poll_error_seconds = float(max_poll_error_seconds)
        self.expected_seconds = expected_seconds
        self.progress_interval = float(progress_interval)

    def __repr__(self) -> str:
        return (
            f"KirinBatchTrigger({len(self.items.get('items', []))} items, "
            f"kirin_conn_id={self.kirin_conn_id!r}, "
            f"max_in_flight={self.max_in_flight}, deadline={self.deadline})"
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "items": self.items,
                "kirin_conn_id": self.kirin_conn_id,
                "max_in_flight": self.max_in_flight,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "first_poll_delay": self.first_poll_delay,
                "max_poll_error_seconds": self.max_poll_error_seconds,
                "expected_seconds": self.expected_seconds,
                "progress_interval": self.progress_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            items = unpack_items(self.items)
            async with KirinAsyncHook(self.kirin_conn_id, pause=SharedPause()) as hook:
                event = await self._run_batch(hook, items)
            yield TriggerEvent(event.to_payload())
        except KirinError as err:
            yield TriggerEvent({"status": "error", "error": err.to_dict()})
        except Exception as err:  # never let a bug become a silent, endlessly retried trigger
            self.log.exception("The Kirin batch failed unexpectedly")
            wrapped = KirinError(f"The Kirin batch failed unexpectedly: {type(err).__name__}: {err}")
            yield TriggerEvent({"status": "error", "error": wrapped.to_dict()})

    async def _run_batch(self, hook: KirinAsyncHook, items: list[BatchItem]) -> BatchEvent:
        """Run ``max_in_flight`` workers over the items until all ended or the deadline passed."""
        deadline = self.deadline if self.deadline is not None else math.inf
        tally = BatchTally(total=len(items))
        results: dict[int, ItemResult] = {}
        learned = LearnedDurations()
        queue = iter(items)
        self.log.info("Kirin batch of %d items, at most %d in flight", len(items), self.max_in_flight)
        workers = [
            asyncio.create_task(self._worker(hook, queue, results, tally, deadline, learned))
            for _ in range(min(self.max_in_flight, len(items)))
        ]
        reporter = asyncio.create_task(self._report(tally))
        try:
            budget = max(0.0, deadline - time.time()) + DEADLINE_GRACE if self.deadline is not None else None
            await asyncio.wait(workers, timeout=budget)
        finally:
            for task in (*workers, reporter):
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*workers, reporter, return_exceptions=True)
        for item in items:  # cut short by the deadline: still running, or never started
            if item.index not in results:
                results[item.index] = ItemResult.cut_short(item, started=item.index in tally.running)
                tally.record(results[item.index])
        self.log.info("Kirin batch finished: %s", tally.progress())
        return BatchEvent([results[item.index] for item in items], dict(tally.counts), tally.total_cost())

    async def _worker(
        self,
        hook: KirinAsyncHook,
        queue: Iterator[BatchItem],
        results: dict[int, ItemResult],
        tally: BatchTally,
        deadline: float,
        learned: LearnedDurations,
    ) -> None:
        """Take items until none is left: each submitted and waited for in this worker's slot."""
        protocol = await hook.get_protocol()
        for item in queue:
            if time.time() >= deadline:
                result = ItemResult.cut_short(item, started=False)
            else:
                tally.start(item.index)
                submitted = time.monotonic()

                def new_wait(task: KirinTask, reused: bool, item: BatchItem = item) -> Wait:
                    first = 0.0 if reused else learned.first_delay(item.request, self.first_poll_delay)
                    return Wait(
                        task.task_id,
                        deadline=deadline,
                        poll_interval=self.poll_interval,
                        first_check_at=time.time() + first,
                        max_error_seconds=self.max_poll_error_seconds,
                        expected_seconds=self.expected_seconds,
                        logger=_Quiet(self.log),
                    )

                # Not in ``finally``: an item cut short by the deadline stays "running" (a timeout).
                result = await hook.run(item_plan(protocol, item, new_wait))
                tally.finish(item.index)
                if result.status == "completed" and not result.reused:
                    learned.ended(item.request, time.monotonic() - submitted)
            results[item.index] = result
            tally.record(result)
            if result.status != "completed":
                self.log.warning(
                    "Kirin batch %s %s: %s %s",
                    item.label,
                    result.status,
                    result.error_code or "no code",
                    redact(result.error_message or ""),
                )

    async def _report(self, tally: BatchTally) -> None:
        while True:
            await asyncio.sleep(self.progress_interval)
            self.log.info("Kirin batch: %s", tally.progress())


class _Quiet:
    """A logger for the per-item waits: status changes of 1,000 items go to debug; warnings stay."""

    def __init__(self, logger: Any) -> None:
        self._logger = logger

    def info(self, *args: Any, **kwargs: Any) -> None:
        self._logger.debug(*args, **kwargs)

    def warning(self, *args: Any, **kwargs: Any) -> None:
        self._logger.warning(*args, **kwargs)
