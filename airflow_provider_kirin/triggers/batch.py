"""The trigger that drives a whole batch of Kirin generations in the triggerer: one trigger row,
one event, however many prompts.

``KirinBatchTextToVideoOperator`` creates it for you. What it does:

- submits the items idempotently (``idempotency.submit_plan`` over ``KirinAsyncHook``: look the
  derived id up, reuse, next ``.gN`` suffix after a failed generation, create, 409 -> lookup),
  keeping at most ``max_in_flight`` of them unfinished at once, the next one submitted as soon as
  one ends;
- polls the unfinished ones (``polling.PollState`` per item; once a generation of a kind has been
  seen done, later items of that kind are first checked that long after their create, see
  ``batch.LearnedDurations``), all requests paced by one
  :class:`~airflow_provider_kirin.retry.SharedPause`, so a 429 slows the whole batch;
- logs a progress line every ``progress_interval`` seconds
  (``312/500 done, 4 failed, 22 in flight, $109.20 so far``) and each failed item with its code;
- yields one event when every item has ended or the deadline passed:
  ``{"status": "done", "rows": [...], "counts": {...}, "total_cost": "..."}`` with one short
  row per item (no envelopes: 1,000 items stay well under a megabyte), or
  ``{"status": "error", "error": {...}}`` if the batch could not run at all.

Its state lives in its kwargs (the items and their derived ids, deterministic) and in the API:
after a triggerer restart, or while two copies run during a takeover, every item is looked up
before it is created and a 409 is resolved by lookup, so no item is paid for twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

# Imported here, not on first use, so that the import never runs inside the triggerer's event loop.
import aiohttp  # noqa: F401
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_kirin.batch import BatchItem, BatchTally, ItemResult, LearnedDurations, unpack_items
from airflow_provider_kirin.defaults import DEFAULT_CONN_ID, MAX_CONSECUTIVE_POLL_ERRORS, POLL_INTERVAL
from airflow_provider_kirin.exceptions import KirinError
from airflow_provider_kirin.polling import PollState
from airflow_provider_kirin.redaction import redact, redact_json

#: Seconds between two progress lines in the triggerer log.
PROGRESS_INTERVAL = 30.0
#: Extra seconds after the deadline for the items' last checks before the batch is cut short.
DEADLINE_GRACE = 30.0


class _Quiet:
    """A logger for the per-item ``PollState``: status changes of 1,000 items go to debug; warnings stay."""

    def __init__(self, logger: logging.Logger | Any) -> None:
        self._logger = logger

    def info(self, *args: Any, **kwargs: Any) -> None:
        self._logger.debug(*args, **kwargs)

    def warning(self, *args: Any, **kwargs: Any) -> None:
        self._logger.warning(*args, **kwargs)


class KirinBatchTrigger(BaseTrigger):
    """Submit and wait for every item of a batch (see the module docstring).

    :param items: ``batch.pack_items`` of the validated items, each request carrying its derived
        ``external_task_id``.
    :param kirin_conn_id: The ``kirin`` connection.
    :param max_in_flight: At most this many of the batch's generations unfinished at once.
    :param poll_interval: Seconds between two status checks of one item (an upper bound).
    :param deadline: Absolute wall-clock deadline of the whole batch (``time.time()`` seconds).
    :param first_poll_delay: Seconds between an item's create and its first status check.
    :param max_consecutive_errors: Failed checks in a row that end an item with ``error``.
    :param expected_seconds: How long one generation should take (checks come more often then).
    :param progress_interval: Seconds between progress log lines.
    """

    def __init__(
        self,
        items: dict[str, Any],
        kirin_conn_id: str = DEFAULT_CONN_ID,
        max_in_flight: int = 10,
        poll_interval: float = POLL_INTERVAL,
        deadline: float | None = None,
        first_poll_delay: float = 0.0,
        max_consecutive_errors: int = MAX_CONSECUTIVE_POLL_ERRORS,
        expected_seconds: float | None = None,
        progress_interval: float = PROGRESS_INTERVAL,
    ) -> None:
        super().__init__()
        self.items = items
        self.kirin_conn_id = kirin_conn_id
        self.max_in_flight = int(max_in_flight)
        self.poll_interval = float(poll_interval)
        self.deadline = deadline
        self.first_poll_delay = float(first_poll_delay)
        self.max_consecutive_errors = int(max_consecutive_errors)
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
                "max_consecutive_errors": self.max_consecutive_errors,
                "expected_seconds": self.expected_seconds,
                "progress_interval": self.progress_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_kirin.hooks.kirin import KirinAsyncHook
        from airflow_provider_kirin.retry import SharedPause

        hook = KirinAsyncHook(self.kirin_conn_id, pause=SharedPause())
        slots = asyncio.Semaphore(self.max_in_flight)
        deadline = self.deadline if self.deadline is not None else float("inf")
        workers: list[asyncio.Task[ItemResult]] = []
        reporter: asyncio.Task[None] | None = None
        try:
            items = unpack_items(self.items)
            tally = BatchTally(total=len(items))
            learned = LearnedDurations()
            await hook.get_config()
            self.log.info("Kirin batch of %d items, at most %d in flight", len(items), self.max_in_flight)
            workers = [
                asyncio.create_task(self._run_item(hook, item, slots, tally, deadline, learned))
                for item in items
            ]
            reporter = asyncio.create_task(self._report(tally))
            budget = max(0.0, deadline - time.time()) + DEADLINE_GRACE if self.deadline is not None else None
            done, _ = await asyncio.wait(workers, timeout=budget)
            results = {
                item.index: worker.result() if worker in done else self._cut_short(item, tally)
                for item, worker in zip(items, workers, strict=True)
            }
            self.log.info("Kirin batch finished: %s", tally.progress())
            yield TriggerEvent(
                {
                    "status": "done",
                    "rows": [redact_json(results[item.index].to_row()) for item in items],
                    "counts": dict(tally.counts),
                    "total_cost": tally.total_cost(),
                }
            )
        except KirinError as err:
            yield TriggerEvent({"status": "error", "error": err.to_dict()})
        except Exception as err:  # never let a bug become a silent, endlessly retried trigger
            self.log.exception("The Kirin batch failed unexpectedly")
            wrapped = KirinError(f"The Kirin batch failed unexpectedly: {type(err).__name__}: {err}")
            yield TriggerEvent({"status": "error", "error": wrapped.to_dict()})
        finally:
            for task in [*workers, *([reporter] if reporter else [])]:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*workers, *([reporter] if reporter else []), return_exceptions=True)
            await hook.close()

    def _cut_short(self, item: BatchItem, tally: BatchTally) -> ItemResult:
        result = ItemResult(item.index, "timeout", external_task_id=item.request.external_task_id)
        result.error_message = "the batch's deadline passed before this item ended"
        tally.record(result)
        return result

    async def _report(self, tally: BatchTally) -> None:
        while True:
            await asyncio.sleep(self.progress_interval)
            self.log.info("Kirin batch: %s", tally.progress())

    async def _run_item(
        self,
        hook: Any,
        item: BatchItem,
        slots: asyncio.Semaphore,
        tally: BatchTally,
        deadline: float,
        learned: LearnedDurations,
    ) -> ItemResult:
        """Submit one item within a slot and poll it until it ends; never raises a KirinError."""
        async with slots:
            if time.time() >= deadline:
                result = ItemResult(
                    item.index, "not_submitted", external_task_id=item.request.external_task_id
                )
                result.error_message = "the batch's deadline passed before this item's turn"
            else:
                tally.in_flight += 1
                try:
                    result = await self._submit_and_wait(hook, item, deadline, learned)
                finally:
                    tally.in_flight -= 1
        tally.record(result)
        if result.status != "completed":
            self.log.warning(
                "Kirin batch %s %s: %s %s",
                item.label,
                result.status,
                result.error_code or "no code",
                redact(result.error_message or ""),
            )
        return result

    async def _submit_and_wait(
        self, hook: Any, item: BatchItem, deadline: float, learned: LearnedDurations
    ) -> ItemResult:
        from airflow_provider_kirin.retry import TransientKirinError

        ext_id = item.request.external_task_id
        try:
            task, reused = await hook.submit_idempotent(item.request)
        except KirinError as err:
            return ItemResult(item.index, "error", ext_id, error_code=_code(err), error_message=err.message)
        submitted = time.monotonic()
        ext_id = task.external_task_id or ext_id
        state = PollState(
            task_id=task.task_id,
            deadline=deadline,
            poll_interval=self.poll_interval,
            max_consecutive_errors=self.max_consecutive_errors,
            expected_seconds=self.expected_seconds,
            logger=_Quiet(self.log),
        )
        try:
            outcome = _observe(state, item, task, ext_id, reused)
            delay = state.first_delay(
                0.0 if reused else learned.first_delay(item.request, self.first_poll_delay)
            )
            while outcome is None:
                if state.expired():
                    return ItemResult(
                        item.index,
                        "timeout",
                        ext_id,
                        task.task_id,
                        error_message=f"still {task.status} at the batch's deadline",
                        reused=reused,
                    )
                await asyncio.sleep(delay)
                retry_after = None
                try:
                    task = await hook.poll_once(task.task_id)
                except TransientKirinError as err:
                    retry_after = state.observe_error(err)
                else:
                    outcome = _observe(state, item, task, ext_id, reused)
                delay = state.next_delay(retry_after)
            if outcome.status == "completed" and not reused:
                learned.ended(item.request, time.monotonic() - submitted)
            return outcome
        except KirinError as err:
            return ItemResult(
                item.index, "error", ext_id, task.task_id, error_code=_code(err), error_message=err.message
            )


def _observe(
    state: PollState, item: BatchItem, task: Any, ext_id: str | None, reused: bool
) -> ItemResult | None:
    """The item's result once its task has ended, else ``None`` (``PollState`` decides)."""
    try:
        if state.observe(task) is None:
            return None
    except KirinError:
        pass
    return _ended(item, task, ext_id, reused)


def _code(error: KirinError) -> str:
    return error.code or type(error).__name__


def _ended(item: BatchItem, task: Any, external_task_id: str | None, reused: bool) -> ItemResult:
    """The result of an item whose task ended: completed with a video, or failed (also a
    ``completed`` task without a video URL: nothing to keep)."""
    if task.is_completed and task.video_urls:
        return ItemResult(
            item.index, "completed", external_task_id, task.task_id, task.video_urls, task.cost, reused=reused
        )
    code = task.error_code or ("no_video" if task.is_completed else None)
    message = task.error_message or ("completed without a video URL" if task.is_completed else None)
    return ItemResult(
        item.index, "failed", external_task_id, task.task_id, [], task.cost, code, message, reused
    )
