"""The trigger that drives a whole batch of Kirin generations in the triggerer: one trigger row,
one event, however many prompts.

``KirinBatchTextToVideoOperator`` creates it for you. What it does:

- keeps ``max_in_flight`` workers busy: each takes the next item, looks its derived id up
  (``idempotency.find_plan``: reuse, or the next ``.gN`` after a failed generation), creates it if
  nothing is reusable (``create_plan``: 409 -> lookup) and waits for it (``waiting.wait_plan``),
  then takes the next one; items are started as slots free up, never all at once. Once a
  generation of a kind has been seen done, later items of that kind are first checked that long
  after their create (``batch.LearnedDurations``). All requests are paced by one
  :class:`~airflow_provider_kirin.core.retry.SharedPause`, so a 429 slows the whole batch;
- with ``max_cost``, admits creates in item order against the batch's ledger
  (``budget.Budget``: what every generation of every try cost, plus an estimate of those in flight):
  an item that does not fit ends ``over_budget`` without spending anything;
- logs a progress line every ``progress_interval`` seconds
  (``312/500 done, 4 failed, 22 in flight, $109.20 so far``) and each failed item with its code;
- yields one :class:`BatchEvent` when every item has ended or the deadline passed: a short,
  compressed row per item (``batch.encode_results``: no envelope, no URL, error text capped), the
  counts and the cost; or an error event if the batch could not run at all.
  :meth:`BatchEvent.decode` turns it back into results for the operator.

Its state lives in its kwargs (the items and their derived ids, deterministic) and in the API:
after a triggerer restart, or while two copies run during a takeover, every item is looked up
before it is created and a 409 is resolved by lookup, so no item is paid for twice.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import math
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

# Imported here, not on first use, so that the import never runs inside the triggerer's event loop.
import aiohttp  # noqa: F401
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_kirin.core.batch import (
    BatchItem,
    BatchTally,
    ItemResult,
    LearnedDurations,
    PackedItems,
    decode_results,
    encode_results,
    read_items,
)
from airflow_provider_kirin.core.budget import Budget, Decision, kind_of, over_budget_reason
from airflow_provider_kirin.core.defaults import DEFAULT_CONN_ID, MAX_POLL_ERROR_SECONDS, POLL_INTERVAL
from airflow_provider_kirin.core.idempotency import create_plan, find_plan
from airflow_provider_kirin.core.redaction import redact
from airflow_provider_kirin.core.retry import SharedPause
from airflow_provider_kirin.core.waiting import Wait, error_seconds_from_count, outcome_of, wait_plan
from airflow_provider_kirin.exceptions import KirinError, error_from_event
from airflow_provider_kirin.hooks.kirin import KirinAsyncHook
from airflow_provider_kirin.models import KirinTask
from airflow_provider_kirin.protocol import KirinProtocol

#: Seconds between two progress lines in the triggerer log.
PROGRESS_INTERVAL = 30.0
#: Extra seconds after the deadline for the items' last checks before the batch is cut short.
DEADLINE_GRACE = 30.0


@dataclass(frozen=True)
class BatchEvent:
    """What a :class:`KirinBatchTrigger` reports: every item's result, the counts and the cost."""

    results: list[ItemResult]
    counts: dict[str, int]
    total_cost: str

    def to_payload(self) -> dict[str, Any]:
        return {
            "status": "done",
            "results": encode_results(self.results),  # clean where each value entered
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
            results = decode_results(str(event.get("results")))
        except (TypeError, ValueError, zlib.error, binascii.Error) as err:
            raise KirinError(f"The Kirin batch trigger's event holds unreadable results: {err}") from None
        return cls(results, dict(event.get("counts") or {}), str(event.get("total_cost") or "0.00"))


class _Admissions:
    """Admits the batch's creates one item at a time, in item order, against the ledger (only with
    ``max_cost``): so the same inputs, prices and ceiling admit the same items in every run, and a
    dry run predicts them. An item waits for its turn, then for the ledger when it says ``wait``."""

    def __init__(self, budget: Budget, order: list[int]) -> None:
        self.budget = budget
        self.order = order
        self.turn = 0
        self.changed = asyncio.Condition()

    async def admit(self, item: BatchItem, *, reusable: bool) -> Decision:
        """Item ``item``'s turn: a reusable generation is booked in flight; a new one is created
        (``"create"``, booked) or not (``"over_budget"``). Call :meth:`skip` if it never gets here."""
        kind = kind_of(item.request)
        async with self.changed:
            await self.changed.wait_for(
                lambda: (
                    self.order[self.turn] == item.index and (reusable or self.budget.admit(kind) != "wait")
                )
            )
            decision = "create" if reusable else self.budget.admit(kind)
            if decision == "create":
                self.budget.started(item.index, kind)
            self.turn += 1
            self.changed.notify_all()
            return decision

    async def skip(self, item: BatchItem) -> None:
        """An item that ended before its turn (its lookup failed) gives its turn up."""
        async with self.changed:
            await self.changed.wait_for(lambda: self.order[self.turn] == item.index)
            self.turn += 1
            self.changed.notify_all()

    async def ended(self) -> None:
        """A generation ended: the ledger changed, so a waiting item may fit now."""
        async with self.changed:
            self.changed.notify_all()


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
    :param max_cost: The batch's spend ceiling in USD (a decimal string), across every try of the
        task instance; ``None``: none. Prices come from the connection's ``prices`` extra.
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
        max_cost: str | None = None,
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
        self.max_cost = max_cost

    def __repr__(self) -> str:
        return (
            f"KirinBatchTrigger({self.items.get('count', '?')} items, "
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
                "max_cost": self.max_cost,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            # Validating 10,000 items, or encoding their results, would hold the loop: a thread.
            items = await asyncio.to_thread(read_items, self.items)
            async with KirinAsyncHook(self.kirin_conn_id, pause=SharedPause()) as hook:
                event = await self._run_batch(hook, items)
            yield TriggerEvent(await asyncio.to_thread(event.to_payload))
        except KirinError as err:
            yield TriggerEvent({"status": "error", "error": err.to_dict()})
        except Exception as err:  # never let a bug become a silent, endlessly retried trigger
            self.log.exception("The Kirin batch failed unexpectedly")
            wrapped = KirinError(f"The Kirin batch failed unexpectedly: {type(err).__name__}: {err}")
            yield TriggerEvent({"status": "error", "error": wrapped.to_dict()})

    async def _run_batch(self, hook: KirinAsyncHook, items: PackedItems) -> BatchEvent:
        """Run ``max_in_flight`` workers over the items until all ended or the deadline passed."""
        deadline = self.deadline if self.deadline is not None else math.inf
        config = await hook.get_config()
        budget = Budget(Decimal(self.max_cost) if self.max_cost is not None else None, config.price_table)
        tally = BatchTally(total=len(items), budget=budget)
        order = items.indices
        admissions = _Admissions(budget, order) if budget.max_cost is not None else None
        results: dict[int, ItemResult] = {}
        run = _Run(hook, await hook.get_protocol(), tally, admissions, deadline, LearnedDurations())
        queue = iter(items)  # each item built when a worker takes it
        self.log.info("Kirin batch of %d items, at most %d in flight", len(items), self.max_in_flight)
        workers = [
            asyncio.create_task(self._worker(run, queue, results))
            for _ in range(min(self.max_in_flight, len(items)))
        ]
        reporter = asyncio.create_task(self._report(tally))
        try:
            budget_seconds = max(0.0, deadline - time.time()) + DEADLINE_GRACE if self.deadline else None
            await asyncio.wait(workers, timeout=budget_seconds)
        finally:
            for task in (*workers, reporter):
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*workers, reporter, return_exceptions=True)
        for position, index in enumerate(order):  # cut short by the deadline: running, or never started
            if index not in results:
                item = items.item(position)
                results[index] = ItemResult.cut_short(item, started=index in tally.running)
                tally.record(results[index], item)
        self.log.info("Kirin batch finished: %s", tally.progress())
        return BatchEvent([results[index] for index in order], dict(tally.counts), tally.total_cost())

    async def _worker(self, run: _Run, queue: Iterator[BatchItem], results: dict[int, ItemResult]) -> None:
        """Take items until none is left: each submitted and waited for in this worker's slot."""
        tally = run.tally
        for item in queue:
            if time.time() >= run.deadline:
                result = ItemResult.cut_short(item, started=False)
            else:
                tally.start(item.index)
                # Not in ``finally``: an item cut short by the deadline stays "running" (a timeout).
                result = await self._run_item(run, item)
                tally.finish(item.index)
            results[item.index] = result
            tally.record(result, item)
            if run.admissions is not None:
                await run.admissions.ended()
            if result.status != "completed":
                self.log.warning(
                    "Kirin batch %s %s: %s %s",
                    item.label,
                    result.status,
                    result.error_code or "no code",
                    redact(result.error_message or ""),
                )

    async def _run_item(self, run: _Run, item: BatchItem) -> ItemResult:
        """Find or create the item's generation (admitted by the ledger), then wait for it."""
        hook, protocol = run.hook, run.protocol
        try:
            found = await hook.run(find_plan(protocol, item.request))
        except KirinError as err:
            if run.admissions is not None:
                await run.admissions.skip(item)
            return ItemResult.not_submitted(item, err)
        if run.admissions is not None:
            decision = await run.admissions.admit(item, reusable=found.task is not None)
            if decision == "over_budget":
                return ItemResult.over_budget(
                    item, over_budget_reason(run.tally.budget, kind_of(item.request))
                )
        elif found.task is None or not found.task.is_terminal:
            run.tally.budget.started(item.index, kind_of(item.request))
        submitted = time.monotonic()
        try:
            # A 409 answered by a lookup is a generation another copy of this batch created: reused.
            task, reused = (
                (found.task, True) if found.task else await hook.run(create_plan(protocol, found.request))
            )
        except KirinError as err:
            return ItemResult.not_submitted(item, err)
        outcome = outcome_of(task)
        if outcome is None:
            outcome = await hook.run(wait_plan(protocol, self._wait(run, item, task, reused)))
        if outcome.ok and not reused:
            run.learned.ended(item.request, time.monotonic() - submitted)
        return ItemResult.of(item, outcome, reused, found.generation)

    def _wait(self, run: _Run, item: BatchItem, task: KirinTask, reused: bool) -> Wait:
        first = 0.0 if reused else run.learned.first_delay(item.request, self.first_poll_delay)
        return Wait(
            task.task_id,
            deadline=run.deadline,
            poll_interval=self.poll_interval,
            first_check_at=time.time() + first,
            max_error_seconds=self.max_poll_error_seconds,
            expected_seconds=self.expected_seconds,
            logger=_Quiet(self.log),
        )

    async def _report(self, tally: BatchTally) -> None:
        while True:
            await asyncio.sleep(self.progress_interval)
            self.log.info("Kirin batch: %s", tally.progress())


@dataclass
class _Run:
    """What every worker of one batch run shares."""

    hook: KirinAsyncHook
    protocol: KirinProtocol
    tally: BatchTally
    admissions: _Admissions | None
    deadline: float
    learned: LearnedDurations


class _Quiet:
    """A logger for the per-item waits: status changes of 1,000 items go to debug; warnings stay."""

    def __init__(self, logger: Any) -> None:
        self._logger = logger

    def info(self, *args: Any, **kwargs: Any) -> None:
        self._logger.debug(*args, **kwargs)

    def warning(self, *args: Any, **kwargs: Any) -> None:
        self._logger.warning(*args, **kwargs)
