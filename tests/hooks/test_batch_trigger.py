"""``KirinBatchTrigger`` against the emulator, in a real event loop: the account's concurrency
(by the emulator's own record of overlapping generations), a shared pause on 429, a retry that
regenerates only the failed items, a triggerer restart mid-batch, two copies during a takeover,
and 1,000 items in one trigger."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from kirin_fakes import batch_items

from airflow_provider_kirin.core.batch import BatchItem, ItemResult, event_budget_bytes, pack_items
from airflow_provider_kirin.emulator import EmulatorServer
from airflow_provider_kirin.triggers.batch import BatchEvent, KirinBatchTrigger

FAST: dict[str, Any] = {"poll_interval": 0.05, "first_poll_delay": 0.0}


def trigger_for(items: list[BatchItem], **kwargs: Any) -> KirinBatchTrigger:
    return KirinBatchTrigger(
        items=pack_items(items), deadline=time.time() + kwargs.pop("seconds", 60), **{**FAST, **kwargs}
    )


async def run(trigger: KirinBatchTrigger) -> dict[str, Any]:
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1
    return events[0]


def rows(event: dict[str, Any]) -> list[ItemResult]:
    assert event["status"] == "done", event
    return BatchEvent.decode(event).results


def max_overlap(server: EmulatorServer) -> int:
    """The most generations unfinished at once, by the emulator's records (create to end)."""
    edges = sorted(
        [(task.created_at, 1) for task in server.state.tasks.values()]
        + [(task.done_at, -1) for task in server.state.tasks.values()]
    )
    current = peak = 0
    for _, step in edges:  # an end at the same instant as a create sorts first (-1 < 1)
        current += step
        peak = max(peak, current)
    return peak


@pytest.mark.kirin_emulator(pending_seconds=0.05, processing_seconds=0.2)
async def test_max_in_flight_is_the_emulators_peak(emulator: EmulatorServer) -> None:
    items = batch_items([f"clip {i}" for i in range(12)])
    event = await run(trigger_for(items, max_in_flight=3))
    results = rows(event)
    assert [r.status for r in results] == ["completed"] * 12
    assert event["counts"] == {"completed": 12}
    assert event["total_cost"] == f"{12 * 0.35:.2f}"
    assert emulator.stats()["creates"] == 12
    assert max_overlap(emulator) == 3  # never more, and the slots were used


@pytest.mark.kirin_emulator(pending_seconds=0.0, processing_seconds=0.8)
async def test_a_429_pauses_the_whole_batch(emulator: EmulatorServer) -> None:
    """The first status check gets 429 + Retry-After: 1 (at ~0.5 s; every item is created by then).
    A shared pause holds every item's checks until ~1.5 s, when all four are done: about one check
    each. Items pausing alone would poll every 0.05 s from 0.5 s to 0.8 s: 18 checks or more."""
    items = batch_items([f"clip {i}" for i in range(4)])
    emulator.add_fault(endpoint="get", kind="http_error", status=429, retry_after="1", times=1)
    event = await run(trigger_for(items, max_in_flight=4, first_poll_delay=0.5))
    assert [r.status for r in rows(event)] == ["completed"] * 4
    stats = emulator.stats()
    assert stats["status_codes"].get("429") == 1
    # 1 refused + at most 3 already on the wire when it came back + 1 each after the pause.
    assert stats["gets"] <= 8, stats


@pytest.mark.kirin_emulator(pending_seconds=0.0, processing_seconds=1.0)
async def test_later_items_are_first_checked_when_earlier_ones_were_seen_done(
    emulator: EmulatorServer,
) -> None:
    """Two at a time, checks every 0.5 s from the create: the first two items take three checks
    each (0, 0.5, 1.0 s); once one was seen done after ~1 s, each later item is first checked ~1 s
    after its create, and is done: one check. Plain polling would make 18 checks."""
    items = batch_items([f"clip {i}" for i in range(6)])
    event = await run(trigger_for(items, max_in_flight=2, poll_interval=0.5, first_poll_delay=0.0))
    assert [r.status for r in rows(event)] == ["completed"] * 6
    assert emulator.stats()["gets"] <= 12, emulator.stats()


@pytest.mark.kirin_emulator(pending_seconds=0.0, processing_seconds=0.1)
async def test_retry_regenerates_only_the_failed_items(emulator: EmulatorServer) -> None:
    items = batch_items([{"key": f"k{i}", "prompt": f"clip {i}"} for i in range(5)])
    emulator.add_fault(endpoint="create", kind="fail_task", skip=1, times=2, code="002011095")
    first = rows(await run(trigger_for(items, max_in_flight=1)))
    assert [r.status for r in first] == ["completed", "failed", "failed", "completed", "completed"]
    assert {r.error_code for r in first if r.status == "failed"} == {"002011095"}
    assert emulator.stats()["creates"] == 5

    # The Airflow task's retry: the same items, the same derived ids.
    second = rows(await run(trigger_for(items, max_in_flight=2)))
    assert [r.status for r in second] == ["completed"] * 5
    assert emulator.stats()["creates"] == 7  # only the two failed items were paid for again
    assert [r.reused for r in second] == [True, False, False, True, True]
    assert [r.task_id for r in second if r.reused] == [first[i].task_id for i in (0, 3, 4)]
    assert second[1].generation == 2
    assert second[1].manifest_row(items[1])["external_task_id"] == items[1].request.external_task_id + ".g2"


@pytest.mark.kirin_emulator(pending_seconds=0.0, processing_seconds=0.3)
async def test_triggerer_restart_mid_batch_creates_nothing_twice(emulator: EmulatorServer) -> None:
    items = batch_items([f"clip {i}" for i in range(20)])
    trigger = trigger_for(items, max_in_flight=5)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_kirin.triggers.batch.KirinBatchTrigger"

    first = asyncio.ensure_future(run(trigger))
    for _ in range(400):  # bounded: until some, not all, are created
        if emulator.stats()["creates"] >= 7:
            break
        await asyncio.sleep(0.01)
    first.cancel()  # the triggerer stops: the run() generator is cancelled mid-way
    with pytest.raises(asyncio.CancelledError):
        await first
    created_before = emulator.stats()["creates"]
    assert 7 <= created_before < 20

    resumed = KirinBatchTrigger(**kwargs)  # rebuilt from its serialized kwargs, as a new triggerer does
    results = rows(await run(resumed))
    assert [r.status for r in results] == ["completed"] * 20
    assert emulator.stats()["creates"] == 20  # exactly one per item, across both runs
    assert emulator.stats()["conflicts"] == 0


@pytest.mark.kirin_emulator(pending_seconds=0.0, processing_seconds=0.2)
async def test_two_copies_during_a_takeover_create_each_item_once(emulator: EmulatorServer) -> None:
    items = batch_items([f"clip {i}" for i in range(15)])
    _, kwargs = trigger_for(items, max_in_flight=15).serialize()
    one, two = await asyncio.gather(run(KirinBatchTrigger(**kwargs)), run(KirinBatchTrigger(**kwargs)))
    assert [r.task_id for r in rows(one)] == [r.task_id for r in rows(two)]
    assert emulator.stats()["creates"] == 15
    # Each item was created by exactly one copy; the other found it (by lookup, or after a 409).
    assert [
        (a.reused, b.reused) in ((False, True), (True, False))
        for a, b in zip(rows(one), rows(two), strict=True)
    ] == [True] * 15


@pytest.mark.kirin_emulator(pending_seconds=0.0, processing_seconds=60.0)
async def test_deadline_reports_unfinished_and_unsubmitted_items(emulator: EmulatorServer) -> None:
    items = batch_items([f"clip {i}" for i in range(4)])
    results = rows(await run(trigger_for(items, max_in_flight=2, seconds=0.5)))
    assert [r.status for r in results] == ["timeout", "timeout", "not_submitted", "not_submitted"]
    assert emulator.stats()["creates"] == 2


@pytest.mark.timeout(120)
@pytest.mark.kirin_emulator(pending_seconds=0.0, processing_seconds=0.05)
async def test_a_thousand_items_in_one_trigger(emulator: EmulatorServer) -> None:
    """1,000 items in one trigger: each created once, at most ``max_in_flight`` at once, compact
    kwargs and event, no secret in either. (How long the event loop is held is measured by
    ``benchmarks/bench_batch_volume.py``, up to 10,000 items: timings belong in benchmarks.)"""
    items = batch_items([f"catalogue clip {i}" for i in range(1000)])
    trigger = trigger_for(items, max_in_flight=100, seconds=90, progress_interval=1.0)
    kwargs = str(trigger.serialize()[1])
    event = await run(trigger)
    results = rows(event)
    assert event["counts"] == {"completed": 1000}
    assert len({r.task_id for r in results}) == 1000
    stats = emulator.stats()
    assert stats["creates"] == 1000
    assert stats["lookups"] == 1000  # one lookup before each create, nothing more
    assert max_overlap(emulator) <= 100
    assert len(kwargs) < 64 * 1000  # per item: its prompt and id, compressed, no repeated defaults
    assert len(str(event)) < event_budget_bytes(1000)  # short rows, no envelopes
    assert emulator.api_key not in kwargs
    assert emulator.api_key not in str(event)
