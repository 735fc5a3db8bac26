"""A minute-long outage of status checks, with the provider's default wait settings.

The emulator refuses every status check (HTTP 503) for 60 s, starting 15 s after the tasks were
created, so that every check from the first (at 20 s) to the sixth (at 70 s) fails. With the
defaults (first check after 20 s, then every 10 s, failed checks tolerated for
``MAX_POLL_ERROR_SECONDS`` = 300 s) every waiter rides it out and reports the completed video:
the sync hook, the task trigger and the batch trigger, all at once against one emulator. A fourth
wait whose deadline falls inside the outage ends at that deadline with a timeout — neither
earlier (the error span is longer) nor later.

Before the failure budget became a span of time it was five checks: this outage ended every wait
with an error after the fifth failed check.

Runs in real time (about 85 s, idle most of it), so it is marked ``slow``: not in ``make test-fast``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from kirin_fakes import batch_items

from airflow_provider_kirin.core import defaults
from airflow_provider_kirin.core.batch import ItemResult, pack_items
from airflow_provider_kirin.emulator import EmulatorServer
from airflow_provider_kirin.hooks.kirin import KirinHook
from airflow_provider_kirin.models import KirinTask
from airflow_provider_kirin.triggers.batch import BatchEvent, KirinBatchTrigger
from airflow_provider_kirin.triggers.kirin import KirinTaskTrigger, task_from_event

pytestmark = pytest.mark.slow

OUTAGE_STARTS = 15.0
OUTAGE_SECONDS = 60.0
SHORT_DEADLINE = 45.0  # inside the outage


async def first_event(trigger: Any) -> dict[str, Any]:
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1, events
    return dict(events[0])


@pytest.mark.kirin_emulator(pending_seconds=1.0, processing_seconds=9.0)
@pytest.mark.timeout(240)
async def test_a_minute_of_failed_status_checks_is_ridden_out_with_the_defaults(
    emulator: EmulatorServer,
) -> None:
    hook = KirinHook()
    sync_task = hook.create_task("outage: the sync hook", external_task_id="outage-sync")
    trigger_task = hook.create_task("outage: the trigger", external_task_id="outage-trigger")
    short_task = hook.create_task("outage: the short deadline", external_task_id="outage-short")
    now = time.time()
    start = time.monotonic()

    async def outage() -> None:
        await asyncio.sleep(OUTAGE_STARTS)
        emulator.add_fault(
            endpoint="get", kind="http_error", status=503, times=-1, for_seconds=OUTAGE_SECONDS
        )

    async def sync_wait() -> KirinTask:
        return await asyncio.to_thread(hook.wait_for_task, sync_task.task_id)  # every default

    def task_trigger(task_id: str, deadline: float) -> KirinTaskTrigger:
        return KirinTaskTrigger(  # as the operator builds it, with the defaults
            task_id, deadline=deadline, first_poll_at=now + defaults.FIRST_POLL_DELAY, started_at=now
        )

    batch = KirinBatchTrigger(
        items=pack_items(batch_items(["outage: batch item one", "outage: batch item two"], dag_id="outage")),
        deadline=now + defaults.TIMEOUT,
        first_poll_delay=defaults.FIRST_POLL_DELAY,
    )
    short_ended: list[float] = []

    async def short_wait() -> dict[str, Any]:
        event = await first_event(task_trigger(short_task.task_id, now + SHORT_DEADLINE))
        short_ended.append(time.monotonic() - start)
        return event

    _, synced, triggered, batched, short = await asyncio.gather(
        outage(),
        sync_wait(),
        first_event(task_trigger(trigger_task.task_id, now + defaults.TIMEOUT)),
        first_event(batch),
        short_wait(),
    )
    elapsed = time.monotonic() - start

    refused = emulator.stats()["faults_applied"].get("http_error", 0)
    assert synced.is_completed
    assert synced.video_urls
    assert task_from_event(triggered).is_completed
    results: list[ItemResult] = BatchEvent.decode(batched).results
    assert [result.status for result in results] == ["completed", "completed"]
    # the waits really went through the outage: the four long ones saw six refused checks each
    assert refused >= 4 * 6, refused
    assert elapsed >= OUTAGE_STARTS + OUTAGE_SECONDS
    # the wait whose deadline fell inside the outage ended at its deadline, with a timeout
    assert short["status"] == "timeout", short
    assert SHORT_DEADLINE - 1 <= short_ended[0] <= SHORT_DEADLINE + 3, short_ended
