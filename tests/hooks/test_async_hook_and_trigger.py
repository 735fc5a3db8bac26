"""``KirinAsyncHook`` and ``KirinTaskTrigger`` against the emulator, in a real event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_kirin.emulator import EmulatorServer
from airflow_provider_kirin.exceptions import (
    SEED_ERROR_CODES,
    KirinError,
    KirinNotFoundError,
    KirinStatusCheckError,
    KirinTaskTimeoutError,
)
from airflow_provider_kirin.hooks import kirin as hooks_module
from airflow_provider_kirin.hooks.kirin import KirinAsyncHook, KirinHook
from airflow_provider_kirin.triggers.kirin import KirinTaskTrigger, task_from_event


async def run_trigger(trigger: KirinTaskTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


def submit(external_id: str, **fields: Any) -> str:
    return KirinHook().create_task("p", external_task_id=external_id, **fields).task_id


async def test_async_reads(emulator: EmulatorServer) -> None:
    task_id = submit("a-1")
    async with KirinAsyncHook() as hook:
        task = await hook.get_task(task_id)
        assert task.task_id == task_id
        found = await hook.get_task_by_external_id("a-1")
        assert found is not None
        assert found.task_id == task_id
        assert await hook.get_task_by_external_id("a-none") is None
        with pytest.raises(KirinNotFoundError):
            await hook.get_task("kt_missing")


async def test_hooks_share_one_session_per_loop_and_close_it_last(emulator: EmulatorServer) -> None:
    task_id = submit("a-2")
    first, second = KirinAsyncHook(), KirinAsyncHook()
    await first.get_task(task_id)
    await second.get_task(task_id)
    sessions = hooks_module._SESSIONS[asyncio.get_running_loop()]
    assert len(sessions) == 1
    (shared,) = sessions.values()
    assert shared.users == 2
    await first.close()
    assert not shared.session.closed
    await second.close()
    assert shared.session.closed
    assert not sessions


#: Generations that end fast, for the tests that only need them to end (pending, processing, done).
QUICK = {"pending_seconds": 0.05, "processing_seconds": 0.15}


@pytest.mark.kirin_emulator(**QUICK)
async def test_trigger_success_event(emulator: EmulatorServer) -> None:
    task_id = submit("t-1")
    events = await run_trigger(KirinTaskTrigger(task_id, poll_interval=0.1, deadline=time.time() + 10))
    assert len(events) == 1
    assert events[0]["status"] == "success"
    task = task_from_event(events[0])
    assert task.is_completed
    assert task.video_urls


@pytest.mark.kirin_emulator(**QUICK)
@pytest.mark.parametrize("code", sorted(SEED_ERROR_CODES))
async def test_trigger_failed_event_for_each_code(emulator: EmulatorServer, code: str) -> None:
    emulator.add_fault(endpoint="create", kind="fail_task", code=code)
    task_id = submit(f"f-{code}")
    (event,) = await run_trigger(KirinTaskTrigger(task_id, poll_interval=0.1, deadline=time.time() + 10))
    assert event["status"] == "failed"
    assert event["task"]["status"] == "failed"
    with pytest.raises(SEED_ERROR_CODES[code]) as info:
        task_from_event(event)
    assert info.value.code == code
    assert info.value.task_id == task_id


@pytest.mark.kirin_emulator(processing_seconds=60)
async def test_trigger_timeout(emulator: EmulatorServer) -> None:
    task_id = submit("to-1")
    (event,) = await run_trigger(KirinTaskTrigger(task_id, poll_interval=0.2, deadline=time.time() + 0.5))
    assert event["status"] == "timeout"
    with pytest.raises(KirinTaskTimeoutError) as info:
        task_from_event(event)
    assert info.value.task_id == task_id


async def test_trigger_checks_once_more_at_the_deadline(emulator: EmulatorServer) -> None:
    """The task completes (0.7 s) between two polls 5 s apart, before the deadline (1.2 s): the wait
    must end in success, not in a timeout reported without a last look."""
    task_id = submit("last-1")
    (event,) = await run_trigger(KirinTaskTrigger(task_id, poll_interval=5.0, deadline=time.time() + 1.2))
    assert event["status"] == "success"
    assert emulator.stats()["gets"] == 2


async def test_trigger_rides_out_transient_errors(emulator: EmulatorServer) -> None:
    task_id = submit("tr-1")
    emulator.add_fault(endpoint="get", kind="http_error", status=503, times=2)
    emulator.add_fault(endpoint="get", kind="reset_before", times=1)
    emulator.add_fault(endpoint="get", kind="http_error", status=429, retry_after="0", times=1)
    (event,) = await run_trigger(
        KirinTaskTrigger(task_id, poll_interval=0.05, deadline=time.time() + 20, max_poll_error_seconds=10)
    )
    assert event["status"] == "success"


async def test_trigger_gives_up_after_its_error_span_with_sleeps_between(
    emulator: EmulatorServer,
) -> None:
    task_id = submit("tr-2")
    emulator.add_fault(endpoint="get", kind="http_error", status=502, times=-1)
    started = time.monotonic()
    (event,) = await run_trigger(
        KirinTaskTrigger(task_id, poll_interval=0.1, deadline=time.time() + 30, max_poll_error_seconds=0.2)
    )
    elapsed = time.monotonic() - started
    assert event["status"] == "error"
    with pytest.raises(KirinStatusCheckError, match="status checks in a row failed over"):
        task_from_event(event)
    assert elapsed >= 0.2  # not before the span had passed
    # one request per poll, >= 0.1 s apart: no hidden busy loop (2 or 3, by how long each took)
    assert 2 <= emulator.stats()["gets"] <= 3


async def test_trigger_serializes_and_resumes_the_same_task(emulator: EmulatorServer) -> None:
    task_id = submit("ser-1")
    deadline = time.time() + 30
    original = KirinTaskTrigger(
        task_id, "kirin_default", poll_interval=0.1, deadline=deadline, first_poll_at=0.0
    )
    classpath, kwargs = original.serialize()
    assert classpath == "airflow_provider_kirin.triggers.kirin.KirinTaskTrigger"
    assert kwargs["deadline"] == deadline  # absolute: a new triggerer keeps it
    assert emulator.api_key not in repr(kwargs)

    # A triggerer that dies mid-poll: start polling, cancel, rebuild from the serialized form.
    running = asyncio.ensure_future(run_trigger(original))
    await asyncio.sleep(0.15)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    from airflow.sdk._shared.module_loading import import_string

    rebuilt = import_string(classpath)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    (event,) = await run_trigger(rebuilt)
    assert event["status"] == "success"
    assert event["kirin_task_id"] == task_id
    assert emulator.stats()["creates"] == 1


async def test_trigger_never_blocks_the_event_loop(
    emulator: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncio debug mode logs every callback slower than ``slow_callback_duration``. The emulator
    holds some answers back for 3 s and fails others: a blocking call anywhere in the trigger
    (sync HTTP, a sync sleep between retries, a sync connection lookup) would hold the loop for
    at least that long, far above the 2 s threshold and the scheduling noise of a machine shared
    by several test runs. (How long callbacks really take is measured by the benchmarks.)"""
    task_ids = [submit(f"blk-{i}") for i in range(20)]
    emulator.add_fault(endpoint="get", kind="http_error", status=503, times=5)
    emulator.add_fault(endpoint="get", kind="delay", seconds=3.0, times=10)
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = 2.0
    try:
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            results = await asyncio.gather(
                *(
                    run_trigger(KirinTaskTrigger(t, poll_interval=0.05, deadline=time.time() + 20))
                    for t in task_ids
                )
            )
    finally:
        loop.set_debug(False)
    assert [events[0]["status"] for events in results] == ["success"] * 20
    slow = [r.getMessage() for r in caplog.records if r.name == "asyncio" and "took" in r.getMessage()]
    assert slow == []


async def test_trigger_first_poll_waits(emulator: EmulatorServer) -> None:
    task_id = submit("fp-1")
    trigger = KirinTaskTrigger(
        task_id, poll_interval=0.05, deadline=time.time() + 10, first_poll_at=time.time() + 0.8
    )
    (event,) = await run_trigger(trigger)
    assert event["status"] == "success"
    assert emulator.stats()["gets"] == 1  # the task was done by the first check


@pytest.mark.parametrize(
    "event",
    [None, {}, {"status": "weird"}, {"status": "success"}, {"status": "failed"}, "success"],
)
def test_execute_complete_rejects_missing_or_unknown_events(event: Any) -> None:
    with pytest.raises(KirinError):
        task_from_event(event)


async def test_trigger_on_kill_says_the_generation_is_still_billed(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    trigger = KirinTaskTrigger("kt_killed")
    with caplog.at_level(logging.WARNING):
        await trigger.on_kill()
    logged = caplog.text + capsys.readouterr().out  # Airflow routes trigger logs through structlog
    assert "kt_killed" in logged
    assert "billed" in logged


def test_trigger_repr_and_kwargs_hold_no_secret(
    use_conn: Callable[..., None], kirin_emulator: EmulatorServer
) -> None:
    use_conn(kirin_emulator)
    trigger = KirinTaskTrigger("kt_1")
    assert kirin_emulator.api_key not in repr(trigger)
    assert kirin_emulator.api_key not in repr(trigger.serialize())


async def test_waits_started_together_read_the_connection_once(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty waits started at once on one event loop share one reading of the connection (the
    lookup through Airflow's secrets backends is most of what starting a wait costs); a hook
    started after ``CONNECTION_READ_SECONDS`` reads it again."""
    reads: list[str] = []
    lookup = hooks_module.aget_connection

    async def counted(conn_id: str) -> Any:  # at the edge: Airflow's own lookup, counted
        reads.append(conn_id)
        return await lookup(conn_id)

    monkeypatch.setattr(hooks_module, "aget_connection", counted)
    task_ids = [submit(f"share-{i}") for i in range(20)]
    results = await asyncio.gather(
        *(run_trigger(KirinTaskTrigger(t, poll_interval=0.05, deadline=time.time() + 20)) for t in task_ids)
    )
    assert [events[0]["status"] for events in results] == ["success"] * 20
    assert reads == ["kirin_default"]

    monkeypatch.setattr(hooks_module, "CONNECTION_READ_SECONDS", 0.0)  # the reading has aged
    async with KirinAsyncHook() as hook:
        await hook.get_task(task_ids[0])
    assert reads == ["kirin_default", "kirin_default"]
