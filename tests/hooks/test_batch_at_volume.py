"""10,000 prompts in one batch trigger, against the emulator in its own process (so its CPU is not
this test's): exactly one create per item even across a triggerer restart half-way, and the
trigger's kwargs and event within their per-item budgets. Not timed: the wall time, the CPU per
item, the memory and the longest event-loop callback are measured by ``benchmarks/bench_batch_volume.py``.

Marked ``slow`` (about a minute): not in ``make test-fast``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from airflow_helpers import free_port, wait_until
from kirin_fakes import batch_items

from airflow_provider_kirin.core.batch import event_budget_bytes, pack_items
from airflow_provider_kirin.triggers.batch import BatchEvent, KirinBatchTrigger

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ITEMS = 10_000
IN_FLIGHT = 500
KEY = "volume-test-key-0123456789"
#: What the trigger's kwargs may take per item (its prompt, key and derived id), compressed.
KWARGS_BUDGET_BYTES = 64
#: What one item's result takes in the event of a batch that went well (measured: about 32).
TYPICAL_ROW_BYTES = 48


class Emulator:
    """``python -m airflow_provider_kirin.emulator`` in a child process, stopped afterwards."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "airflow_provider_kirin.emulator", "--port", str(self.port),
             "--api-key", KEY, "--pending-seconds", "0", "--processing-seconds", "1.0", "--http", "auto"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stats(self) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/_emulator/stats", headers={"Authorization": f"Bearer {KEY}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.loads(response.read()))

    def up(self) -> bool:
        try:
            self.stats()
        except OSError:
            return False
        return True


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    server = Emulator()
    try:
        wait_until(server.up, timeout=60, what="the emulator to answer")
        conn = {"conn_type": "kirin", "host": server.url, "password": KEY, "extra": {"timeout": 30}}
        monkeypatch.setenv("AIRFLOW_CONN_KIRIN_DEFAULT", json.dumps(conn))
        yield server
    finally:
        server.proc.terminate()
        try:
            server.proc.wait(15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(15)


async def test_ten_thousand_items_one_create_each_across_a_restart(emulator: Emulator) -> None:
    items = batch_items(
        [f"catalogue clip {i}: a red fox in fresh snow" for i in range(ITEMS)], run_id="volume"
    )
    trigger = KirinBatchTrigger(
        items=pack_items(items),
        max_in_flight=IN_FLIGHT,
        poll_interval=0.5,
        first_poll_delay=1.0,
        deadline=None,
        progress_interval=5.0,
    )
    _, kwargs = trigger.serialize()
    kwargs_bytes = len(json.dumps(kwargs).encode())
    assert kwargs_bytes <= KWARGS_BUDGET_BYTES * ITEMS, kwargs_bytes
    assert KEY not in json.dumps(kwargs)

    # The triggerer dies half-way through the creates; another one runs the same trigger again.
    first = asyncio.ensure_future(_first_event(trigger))
    for _ in range(6000):  # bounded: about ten minutes of 0.1 s naps at the very most
        if (await asyncio.to_thread(emulator.stats))["creates"] >= ITEMS // 2:
            break
        await asyncio.sleep(0.1)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    before = (await asyncio.to_thread(emulator.stats))["creates"]
    assert ITEMS // 2 <= before < ITEMS

    event = await _first_event(KirinBatchTrigger(**kwargs))
    event_bytes = len(json.dumps(event).encode())
    stats = await asyncio.to_thread(emulator.stats)
    assert stats["creates"] == ITEMS  # not one more, across both runs
    assert stats["conflicts"] == 0
    results = BatchEvent.decode(event).results
    assert [result.status for result in results] == ["completed"] * ITEMS
    assert len({result.task_id for result in results}) == ITEMS
    assert event_bytes <= event_budget_bytes(ITEMS), event_bytes  # the bound, whatever the server says
    assert event_bytes <= TYPICAL_ROW_BYTES * ITEMS, event_bytes  # what a real batch takes (about 32)
    assert KEY not in json.dumps(event)
    print(f"\n{ITEMS} items: kwargs {kwargs_bytes} bytes, event {event_bytes} bytes, "
          f"{before} created before the restart, {os.cpu_count()} CPUs")  # fmt: skip


async def _first_event(trigger: KirinBatchTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise AssertionError("the batch trigger ended without an event")
