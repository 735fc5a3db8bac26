"""Keeping a batch's videos: 200 completed generations kept to storage with 200 ms added to every
request the emulator answers (a CDN's time to first byte), one at a time (the previous release)
against ``keep_concurrency=8`` (today's default), in the same run; then a worker killed half-way
through and its retry, which must download only the rest.

The batch itself runs first, without the added latency (it is not what is measured). Keeping is
``KirinBatchTextToVideoOperator._keep_videos``: for each completed item the task is read again
(freshly signed URLs) and its video streamed to a local directory with its sidecar.

Targets (issue 21): parallel keeping takes at most 1/5 of the serial time; after a kill, the retry
downloads only the videos not kept whole.

Run: ``python benchmarks/bench_keep_videos.py [--n 200] [--latency 0.2] [--concurrency 8]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BenchResult, EmulatorProcess, Row, batch_items, fmt, ratio, venv_env, verdict

N = 200
LATENCY = 0.2
CONCURRENCY = 8
SPEEDUP_TARGET = 5.0


def _batch(n: int, run_id: str) -> tuple[list[Any], list[str]]:
    """The prompts, and the items with the ids the operator derives for them."""
    prompts = [f"kept clip {i}" for i in range(n)]
    return batch_items(prompts, "bench_keep", run_id), prompts


def _keep(spec: dict[str, Any], concurrency: int, destination: Path) -> float:
    """Keep every completed item's videos to ``destination``; return the wall time."""
    from airflow_provider_kirin.core.batch import decode_results
    from airflow_provider_kirin.operators.batch import KirinBatchTextToVideoOperator

    items, prompts = _batch(spec["n"], spec["run_id"])
    results = decode_results(spec["results"])
    operator = KirinBatchTextToVideoOperator(
        task_id="batch", prompts=prompts, destination=str(destination), keep_videos=True,
        keep_concurrency=concurrency,
    )  # fmt: skip
    started = time.perf_counter()
    operator._keep_videos(results, {item.index: item for item in items})
    return time.perf_counter() - started


def _run_batch(n: int, run_id: str) -> str:
    """Generate the ``n`` videos (one trigger, no added latency); return the encoded results."""
    from airflow_provider_kirin.core.batch import encode_results, pack_items
    from airflow_provider_kirin.triggers.batch import BatchEvent, KirinBatchTrigger

    items, _ = _batch(n, run_id)
    trigger = KirinBatchTrigger(
        items=pack_items(items), max_in_flight=100, poll_interval=0.2, deadline=time.time() + 300
    )

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise RuntimeError("no event")

    results = BatchEvent.decode(asyncio.run(first())).results
    if any(result.status != "completed" for result in results):
        raise RuntimeError(f"the batch did not complete: {[r.status for r in results][:10]}")
    return encode_results(results)


def _complete_sidecars(directory: Path) -> int:
    count = 0
    for path in directory.glob("*.mp4.json"):
        with contextlib.suppress(OSError, ValueError):  # a sidecar being written right now
            count += json.loads(path.read_text()).get("complete") is True
    return count


def worker_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    _keep(spec, spec["concurrency"], Path(spec["destination"]))
    return 0


def run(n: int = N, latency: float = LATENCY, concurrency: int = CONCURRENCY) -> BenchResult:
    run_id = f"keep-{time.time()}"
    raw: dict[str, Any] = {"n": n, "latency": latency, "concurrency": concurrency}
    with (
        tempfile.TemporaryDirectory(prefix="kirin-bench-keep-") as tmp,
        EmulatorProcess(pending_seconds=0.0, processing_seconds=0.5) as emu,
    ):
        os.environ["AIRFLOW_CONN_KIRIN_DEFAULT"] = emu.conn_json
        results = _run_batch(n, run_id)
        spec = {"n": n, "run_id": run_id, "results": results}
        emu.add_fault(endpoint="any", kind="delay", seconds=latency, times=-1)
        timings: dict[str, float] = {}
        downloads: dict[str, int] = {}
        for label, workers in (("serial", 1), ("parallel", concurrency)):
            before = emu.stats()["downloads"]
            timings[label] = _keep(spec, workers, Path(tmp) / label)
            downloads[label] = emu.stats()["downloads"] - before
            print(f"  keep {n} videos {label} ({workers} at once): {timings[label]:.1f} s", flush=True)

        # A worker killed half-way, then the retry in a fresh process.
        destination = Path(tmp) / "killed"
        destination.mkdir()
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(
            json.dumps({**spec, "concurrency": concurrency, "destination": str(destination)})
        )
        env = venv_env(AIRFLOW_CONN_KIRIN_DEFAULT=emu.conn_json)
        before = emu.stats()["downloads"]
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        worker = subprocess.Popen([sys.executable, __file__, "--worker", str(spec_path)], env=env, **quiet)
        deadline = time.monotonic() + 600
        while (
            _complete_sidecars(destination) < n // 2 and worker.poll() is None and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
        kept_before_kill = _complete_sidecars(destination)
        first_try = emu.stats()["downloads"] - before
        retry = subprocess.run(
            [sys.executable, __file__, "--worker", str(spec_path)], env=env, timeout=900, check=False, **quiet
        )
        retry_downloads = emu.stats()["downloads"] - before - first_try
        complete_after = _complete_sidecars(destination)
        raw.update(
            timings=timings,
            downloads=downloads,
            kept_before_kill=kept_before_kill,
            first_try_downloads=first_try,
            retry_downloads=retry_downloads,
            retry_exit=retry.returncode,
            complete_after_retry=complete_after,
        )
    speedup = timings["serial"] / timings["parallel"]
    b = f"keep {n} videos (+{latency * 1000:.0f} ms per request)"
    not_whole = n - kept_before_kill
    rows = [
        Row(
            b,
            f"wall time: keep_concurrency={concurrency} vs 1 at a time",
            fmt(timings["parallel"], 1, "s"),
            fmt(timings["serial"], 1, "s"),
            fmt(ratio(timings["parallel"], timings["serial"]), 2, "x"),
            f"<= {1 / SPEEDUP_TARGET:.2f}x",
            verdict(speedup >= SPEEDUP_TARGET),
        ),
        Row(b, "downloads (emulator), each run", f"{downloads['parallel']}", f"{downloads['serial']}"),
        Row(
            b,
            f"retry after a kill: downloads (kept whole before the kill: {kept_before_kill})",
            f"{retry_downloads}",
            "",
            "",
            f"<= {not_whole} (the rest)",
            verdict(retry_downloads <= not_whole and complete_after == n and retry.returncode == 0),
        ),
    ]
    notes = [
        f"Keeping: {n} completed generations, every emulator answer held {latency * 1000:.0f} ms (reads "
        "and downloads); the peer column is the previous release's one-at-a-time keeping, in the same run. "
        f"The kill: SIGKILL of the keeping process once {n // 2} sidecars were complete; the retry runs in "
        "a fresh process against the same destination.",
    ]
    return BenchResult(rows, raw, notes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=N)
    parser.add_argument("--latency", type=float, default=LATENCY)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    return run(args.n, args.latency, args.concurrency).report(args.json)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
