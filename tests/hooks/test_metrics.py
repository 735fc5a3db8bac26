"""The provider's metrics (``airflow_provider_kirin/metrics.py``), taken in the transports' run loops,
against the emulator: what each counts, that a generation's end counts once, that tags hold no
secret, and that sending them (a real StatsD client over UDP) never blocks a trigger's event loop.

The end-to-end check (Airflow's own StatsD backend, a real scheduler and triggerer) is
``tests/e2e/test_real_airflow.py::test_statsd_receives_the_documented_kirin_metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_kirin import metrics
from airflow_provider_kirin.emulator import EmulatorServer, Fault
from airflow_provider_kirin.exceptions import KirinGenerationError
from airflow_provider_kirin.hooks import kirin as hooks_module
from airflow_provider_kirin.hooks.kirin import KirinHook
from airflow_provider_kirin.models import KirinVideoRequest
from airflow_provider_kirin.triggers.kirin import KirinTaskTrigger


class Recorder:
    """Stands in for Airflow's metrics facility: keeps every metric sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any, dict[str, str]]] = []

    def incr(self, name: str, count: int = 1, *, tags: dict[str, str]) -> None:
        self.sent.append(("incr", name, count, tags))

    def timing(self, name: str, value: Any, *, tags: dict[str, str]) -> None:
        self.sent.append(("timing", name, value, tags))

    def counts(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for kind, name, value, _ in self.sent:
            totals[name] = totals.get(name, 0) + (value if kind == "incr" else 1)
        return totals


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    metrics._STATUS_CHECKS.flush()  # status checks an earlier test left unsent go to its facility
    recorder = Recorder()
    monkeypatch.setattr(metrics, "stats", lambda: recorder)
    return recorder


def test_a_generation_is_counted_from_create_to_its_cost(
    emulator: EmulatorServer, recorder: Recorder, tmp_path: Path
) -> None:
    emulator.add_fault(Fault(kind="http_error", endpoint="create", status=503))
    hook = KirinHook()
    request = KirinVideoRequest.build(prompt="a fox", mode="pro", duration=10, external_task_id="m-1")
    task, reused = hook.submit_idempotent(request)
    assert not reused
    done = hook.wait_for_task(task.task_id, poll_interval=0.1, timeout=10, first_poll_delay=0)
    hook.download_video(done.video_urls[0], tmp_path / "fox.mp4")
    hook.get_task(task.task_id)  # a re-read of a finished generation counts as a read only

    counts = recorder.counts()
    checks = emulator.state.status_checks[task.task_id]
    assert counts == {
        metrics.CREATES: 1,
        metrics.HTTP_RETRIES: 1,
        metrics.STATUS_CHECKS: checks,
        metrics.COMPLETED: 1,
        metrics.COST: 1_200_000,  # 1.20 USD in micro-USD
        metrics.DURATION: 1,
    }
    retry = [tags for _, name, _, tags in recorder.sent if name == metrics.HTTP_RETRIES]
    assert retry == [{"conn_id": "kirin_default", "operation": "create"}]
    (duration,) = [value for _, name, value, _ in recorder.sent if name == metrics.DURATION]
    assert 0 < duration.total_seconds() < 10

    # Reused: nothing created, nothing counted twice.
    recorder.sent.clear()
    again, reused = hook.submit_idempotent(request)
    assert reused
    assert again.task_id == task.task_id
    assert recorder.counts() == {metrics.REUSES: 1}


def test_a_failed_generation_is_counted_by_its_code(emulator: EmulatorServer, recorder: Recorder) -> None:
    emulator.add_fault(Fault(kind="fail_task", code="002011095"))
    hook = KirinHook()
    task = hook.create_task("a fox", external_task_id="m-2")
    with pytest.raises(KirinGenerationError):
        hook.wait_for_task(task.task_id, poll_interval=0.1, timeout=10, first_poll_delay=0)
    failed = [tags for _, name, _, tags in recorder.sent if name == metrics.FAILED]
    assert failed == [{"conn_id": "kirin_default", "code": "002011095"}]
    assert metrics.COST not in recorder.counts()
    assert metrics._code_tag("'; DROP TABLE") == "other"  # a server cannot invent tag values


def test_every_name_is_documented_and_no_tag_holds_the_key(
    emulator: EmulatorServer, recorder: Recorder
) -> None:
    hook = KirinHook()
    task = hook.create_task("a fox", external_task_id="m-3")
    hook.wait_for_task(task.task_id, poll_interval=0.1, timeout=10, first_poll_delay=0)
    assert {name for _, name, _, _ in recorder.sent} <= set(metrics.NAMES)
    key = emulator.state.config.api_key
    assert not [sent for sent in recorder.sent if key in repr(sent)]
    docs = (Path(__file__).resolve().parents[2] / "docs" / "operators.md").read_text()
    assert [name for name in metrics.NAMES if f"`{name}`" not in docs] == []


def test_a_metric_that_cannot_be_sent_never_fails_the_hook(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken:
        def incr(self, *args: Any, **kwargs: Any) -> None:
            raise OSError("no route to the StatsD host")

        timing = incr

    monkeypatch.setattr(metrics, "stats", lambda: Broken())
    hook = KirinHook()
    task = hook.create_task("a fox", external_task_id="m-4")
    assert hook.wait_for_task(task.task_id, poll_interval=0.1, timeout=10, first_poll_delay=0).is_completed


async def test_status_checks_are_sent_summed_at_most_once_a_second(
    emulator: EmulatorServer, recorder: Recorder
) -> None:
    """Ten waits checking every 50 ms for about 2 s: every check counted, in a few sums (one a
    second at most, and one when each wait ends), not a metric per check."""
    emulator.configure(processing_seconds=2.0)
    hook = KirinHook()
    task_ids = [hook.create_task("a fox", external_task_id=f"sum-{i}").task_id for i in range(10)]
    recorder.sent.clear()
    triggers = [KirinTaskTrigger(t, poll_interval=0.05, deadline=time.time() + 20) for t in task_ids]
    results = await asyncio.gather(*(anext(trigger.run()) for trigger in triggers))
    assert [event.payload["status"] for event in results] == ["success"] * 10
    checks = sum(emulator.state.status_checks[t] for t in task_ids)
    sums = [count for _, name, count, _ in recorder.sent if name == metrics.STATUS_CHECKS]
    assert sum(sums) == checks
    assert checks >= 10 * 20  # about 40 each
    assert 2 <= len(sums) <= 2 + 3 + 10, sums  # per second at most, plus each wait's end
    assert all(count > 0 for count in sums)


@pytest.fixture
def udp_statsd(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """A real StatsD client (the ``statsd`` package Airflow's StatsD backend uses) sending to a
    UDP socket on loopback; yields the datagrams received."""
    from statsd import StatsClient

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(0.2)
    received: list[bytes] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                received.append(server.recv(65535))
            except (TimeoutError, OSError):
                continue

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    client = StatsClient("127.0.0.1", server.getsockname()[1], prefix="airflow")

    class Facility:
        def incr(self, name: str, count: int = 1, *, tags: dict[str, str]) -> None:
            client.incr(name, count)

        def timing(self, name: str, value: Any, *, tags: dict[str, str]) -> None:
            client.timing(name, value)

    monkeypatch.setattr(metrics, "stats", lambda: Facility())
    yield received
    stop.set()
    reader.join(5)
    server.close()


async def test_sending_metrics_never_blocks_the_triggers_event_loop(
    emulator: EmulatorServer, udp_statsd: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """asyncio's debug mode logs every callback slower than 0.4 s (the threshold of the other
    event-loop tests): 20 triggers, each sending its metrics over UDP from the loop, log none."""
    hook = KirinHook()
    task_ids = [hook.create_task("a fox", external_task_id=f"mb-{i}").task_id for i in range(20)]
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = 0.4
    try:
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            triggers = [KirinTaskTrigger(t, poll_interval=0.05, deadline=time.time() + 20) for t in task_ids]
            results = await asyncio.gather(*(anext(trigger.run()) for trigger in triggers))
    finally:
        loop.set_debug(False)
    assert [event.payload["status"] for event in results] == ["success"] * 20
    slow = [r.getMessage() for r in caplog.records if r.name == "asyncio" and "took" in r.getMessage()]
    assert slow == []
    await asyncio.sleep(0.5)
    assert sum(b"airflow.kirin.generations_completed:1|c" in datagram for datagram in udp_statsd) == 20


async def test_the_metrics_client_is_built_off_the_event_loop(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building a StatsD client resolves its host: that happens in a worker thread, once."""
    threads: list[str] = []
    monkeypatch.setattr(hooks_module, "_STATS_WARM", False)
    monkeypatch.setattr(hooks_module, "warm_stats", lambda: threads.append(threading.current_thread().name))
    for task_id in ("a", "b"):
        async with hooks_module.KirinAsyncHook() as hook:
            await hook.get_task_by_external_id(task_id)
    assert len(threads) == 1
    assert threads[0] != threading.current_thread().name
