"""The batch at volume: one ``KirinBatchTrigger`` driving 1,000 and 10,000 prompts, as a triggerer
runs it, against the emulator in its own process (its CPU is not counted).

For each N, a fresh worker process (Airflow and the provider imported, like a triggerer) builds the
items as the operator does (validated, derived ids), packs them into the trigger's kwargs, runs the
trigger to its one event, then decodes the event and builds every manifest row (what
``execute_complete`` does in the worker). Measured:

- wall time, and worker CPU per video (the trigger, and the decode + manifest rows after it);
- peak RSS growth of the worker over its baseline after imports;
- the trigger's kwargs and its event, in bytes (JSON, as Airflow stores them);
- the longest the event loop was held: a heartbeat coroutine sleeps 5 ms at a time and records
  how late it wakes (the longest callback, plus scheduling noise of a shared machine);
- creates, lookups and status checks the emulator served.

Targets (issue 21), 10,000 items at ``max_in_flight=500``: exactly 10,000 creates, RSS growth
under 150 MB, kwargs and event each under 1 MB, no callback over 0.2 s. There is no peer for a
10,000-prompt batch (10,000 mapped tasks do not fit this machine); ``bench_batch.py`` compares the
batch with mapped tasks on a real Airflow at N=200, capped and uncapped.

Run: ``python benchmarks/bench_batch_volume.py [--n 1000 --n 10000] [--in-flight 500]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BenchResult,
    EmulatorProcess,
    Row,
    Worker,
    batch_items,
    cpu_seconds,
    emit,
    fmt,
    maxrss_bytes,
    raise_open_file_limit,
    rss_bytes,
    venv_env,
    verdict,
)

FULL_N = (1000, 10000)
QUICK_N = (200,)
IN_FLIGHT = 500
#: Targets of issue 21, judged at 10,000 items.
JUDGE_AT_N = 10000
RSS_TARGET_MB = 150.0
KWARGS_TARGET_MB = 1.0
EVENT_TARGET_MB = 1.0
CALLBACK_TARGET_S = 0.2


# -- worker side -----------------------------------------------------------------------------------
async def _heartbeat(stop: asyncio.Event, worst: list[float]) -> None:
    """How late a 5 ms sleep wakes up, at most: the longest the loop was held by anything else."""
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.005)
        worst[0] = max(worst[0], time.perf_counter() - started - 0.005)


async def _run(spec: dict[str, Any]) -> dict[str, Any]:
    from airflow_provider_kirin.core.batch import pack_items, unpack_items
    from airflow_provider_kirin.triggers.batch import BatchEvent, KirinBatchTrigger

    n = spec["n"]
    gc.collect()
    baseline, cpu0, wall0 = rss_bytes(), cpu_seconds(), time.perf_counter()
    peak = [baseline]
    prompts = [f"catalogue clip {i}: a red fox in fresh snow" for i in range(n)]
    packed = pack_items(batch_items(prompts, "bench_volume", spec["run_id"]))
    # The operator's items live in a worker, not in the triggerer: only the packed kwargs stay here
    # (else the triggerer's heap, and so each of its full garbage collections, is counted twice).
    del prompts
    gc.collect()
    trigger = KirinBatchTrigger(
        items=packed,
        max_in_flight=spec["in_flight"],
        poll_interval=spec["interval"],
        first_poll_delay=spec["interval"],
        deadline=time.time() + 1800,
        progress_interval=10.0,
    )
    kwargs_bytes = len(json.dumps(trigger.serialize()[1]).encode())
    stop, worst = asyncio.Event(), [0.0]
    beat = asyncio.create_task(_heartbeat(stop, worst))

    async def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    event: dict[str, Any] = {}
    async for fired in trigger.run():
        event = dict(fired.payload)
        break
    cpu_trigger, wall_trigger = cpu_seconds() - cpu0, time.perf_counter() - wall0
    stop.set()
    await asyncio.gather(beat, sampler)
    event_bytes = len(json.dumps(event).encode())
    cpu1 = cpu_seconds()
    results = BatchEvent.decode(event).results
    by_index = {item.index: item for item in unpack_items(packed)}  # as execute_complete reads them
    rows = [json.dumps(r.manifest_row(by_index[r.index]), ensure_ascii=True) for r in results]
    cpu_after = cpu_seconds() - cpu1
    return {
        "n": n,
        "completed": sum(r.status == "completed" for r in results),
        "wall_s": wall_trigger,
        "cpu_trigger_s": cpu_trigger,
        "cpu_after_s": cpu_after,
        "rss_growth": max(peak[0], maxrss_bytes()) - baseline,
        "kwargs_bytes": kwargs_bytes,
        "event_bytes": event_bytes,
        "manifest_bytes": sum(len(row) + 1 for row in rows),
        "worst_lag_s": worst[0],
    }


def worker_main() -> int:
    raise_open_file_limit()
    import airflow_provider_kirin.hooks.kirin
    import airflow_provider_kirin.triggers.batch  # noqa: F401

    emit("ready", {"rss": rss_bytes()})
    spec = json.loads(sys.stdin.readline())
    emit("done", asyncio.run(_run(spec)))
    return 0


# -- orchestrator ----------------------------------------------------------------------------------
def run_one(emu: EmulatorProcess, n: int, in_flight: int, interval: float, workdir: Path) -> dict[str, Any]:
    worker = Worker(
        [str(Path(__file__).resolve()), "--worker"],
        workdir / f"volume-{n}.log",
        venv_env(AIRFLOW_CONN_KIRIN_DEFAULT=emu.conn_json),
    )
    try:
        worker.expect("ready", timeout=120)
        emu.reset()
        worker.send(
            {"n": n, "in_flight": in_flight, "interval": interval, "run_id": f"volume-{n}-{time.time()}"}
        )
        result = worker.expect("done", timeout=1800)
        worker.wait(30)
    finally:
        worker.close()
    stats = emu.stats()
    return {**result, **{k: stats[k] for k in ("creates", "lookups", "gets", "conflicts")}}


def rows_for(result: dict[str, Any], in_flight: int) -> list[Row]:
    n = result["n"]
    b = f"batch N={n:,} (max_in_flight={min(in_flight, n)})"
    judged = n >= JUDGE_AT_N
    mb = 1024 * 1024

    def row(metric: str, value: str, target: str = "", ok: bool | None = None) -> Row:
        return Row(b, metric, value, "", "", target if judged else "", verdict(ok) if judged else "")

    return [
        row("wall time", fmt(result["wall_s"], 1, "s")),
        row("creates (emulator)", f"{result['creates']:,}", f"= {n:,}", result["creates"] == n),
        row("completed", f"{result['completed']:,}"),
        row("lookups / status checks (emulator)", f"{result['lookups']:,} / {result['gets']:,}"),
        row("worker CPU per video: trigger", fmt(1000 * result["cpu_trigger_s"] / n, 3, "ms")),
        row("worker CPU per video: decode + manifest", fmt(1000 * result["cpu_after_s"] / n, 3, "ms")),
        row(
            "peak RSS growth",
            fmt(result["rss_growth"] / mb, 1, "MB"),
            f"< {RSS_TARGET_MB:.0f} MB",
            result["rss_growth"] / mb < RSS_TARGET_MB,
        ),
        row(
            "trigger kwargs",
            fmt(result["kwargs_bytes"] / 1024, 0, "KB"),
            f"< {KWARGS_TARGET_MB:.0f} MB",
            result["kwargs_bytes"] / mb < KWARGS_TARGET_MB,
        ),
        row(
            "trigger event",
            fmt(result["event_bytes"] / 1024, 0, "KB"),
            f"< {EVENT_TARGET_MB:.0f} MB",
            result["event_bytes"] / mb < EVENT_TARGET_MB,
        ),
        row("manifest", fmt(result["manifest_bytes"] / 1024, 0, "KB")),
        row(
            "longest the event loop was held",
            fmt(result["worst_lag_s"], 3, "s"),
            f"<= {CALLBACK_TARGET_S} s",
            result["worst_lag_s"] <= CALLBACK_TARGET_S,
        ),
    ]


def run(n_values: Sequence[int], in_flight: int = IN_FLIGHT, interval: float = 1.0) -> BenchResult:
    rows: list[Row] = []
    raw: dict[str, Any] = {"in_flight": in_flight, "interval": interval, "runs": []}
    with (
        tempfile.TemporaryDirectory(prefix="kirin-bench-volume-") as tmp,
        EmulatorProcess(pending_seconds=0.0, processing_seconds=2.0) as emu,
    ):
        for n in n_values:
            result = run_one(emu, n, in_flight, interval, Path(tmp))
            raw["runs"].append(result)
            print(
                f"  batch N={n}: {result['wall_s']:.1f} s, {result['creates']} creates, "
                f"cpu {result['cpu_trigger_s']:.1f} s, rss +{result['rss_growth'] / 1e6:.0f} MB, "
                f"event {result['event_bytes'] / 1e3:.0f} KB, worst lag {result['worst_lag_s']:.3f} s",
                flush=True,
            )
            rows.extend(rows_for(result, in_flight))
    notes = [
        f"Batch volume: one KirinBatchTrigger in a worker process, max_in_flight={in_flight}, each "
        f"generation 2 s on the emulator (its own process), checks every {interval:g} s; the worker's "
        "CPU and RSS are the triggerer's share (plus building the items and, after the event, the "
        "manifest rows the operator writes).",
    ]
    return BenchResult(rows, raw, notes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, action="append", help=f"items (repeatable; default {FULL_N})")
    parser.add_argument("--quick", action="store_true", help=f"N = {QUICK_N}")
    parser.add_argument("--in-flight", type=int, default=IN_FLIGHT)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main()
    return run(args.n or (QUICK_N if args.quick else FULL_N), args.in_flight).report(args.json)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
