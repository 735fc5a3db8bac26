"""Run every benchmark, print one table (ours beside the peer, with ratios and PASS/MISS against the
issue's targets), and write ``benchmarks/RESULTS.md`` with the machine it ran on.

``make bench`` runs this after installing the peer (``apache-airflow-providers-http``). The full
run takes about 14 minutes on 2 cores (the batch benchmark starts two real Airflows); ``--quick``
about 6.

Run: ``python benchmarks/run_all.py [--quick] [--n 100 --n 1000] [--only triggerer parse ...]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_batch
import bench_batch_volume
import bench_download
import bench_hostile_answers
import bench_keep_videos
import bench_parse
import bench_requests_per_video
import bench_triggerer
from _common import BENCH_DIR, BenchResult, Row, machine_info, markdown_table

BENCHES = (
    "triggerer",
    "parse",
    "download",
    "requests_per_video",
    "batch",
    "batch_volume",
    "keep_videos",
    "hostile_answers",
)


def runners(args: argparse.Namespace) -> dict[str, Callable[[], BenchResult]]:
    """Each benchmark with the settings of this run (full, or ``--quick``)."""
    quick = args.quick
    return {
        "triggerer": lambda: bench_triggerer.run(
            args.n or (bench_triggerer.QUICK_N if quick else bench_triggerer.FULL_N),
            interval=2.0,
            processing=10.0 if quick else 20.0,
            repeat=1 if quick else 5,
        ),
        "parse": lambda: bench_parse.run(4 if quick else 10),
        "download": lambda: bench_download.run(
            100 if quick else 500, repeat=2 if quick else 4, idle_repeat=2
        ),
        "requests_per_video": lambda: bench_requests_per_video.run(
            bench_requests_per_video.LENGTHS, scale=40.0 if quick else 20.0, tasks=5 if quick else 10
        ),
        "batch": lambda: bench_batch.run(50 if quick else bench_batch.FULL_N),
        "batch_volume": lambda: bench_batch_volume.run(
            bench_batch_volume.QUICK_N if quick else bench_batch_volume.FULL_N
        ),
        "keep_videos": lambda: bench_keep_videos.run(40 if quick else bench_keep_videos.N),
        "hostile_answers": bench_hostile_answers.run,
    }


class CpuMeter:
    """Whole-machine CPU utilisation between construction and :meth:`busy` (``/proc/stat``)."""

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return 0, 0
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    def busy(self) -> float | None:
        total, idle = self._read()
        d_total, d_idle = total - self._start[0], idle - self._start[1]
        return None if d_total <= 0 else 1 - d_idle / d_total


def render(
    results: dict[str, BenchResult],
    machine: dict[str, str],
    *,
    command: str,
    elapsed: float,
    busy: float | None,
    load_after: str,
) -> str:
    """RESULTS.md: machine, how to reproduce, the table, notes, and what missed a target."""
    rows = [row for result in results.values() for row in result.rows]
    misses = [r for r in rows if r.result == "MISS"]
    lines = [
        "# Benchmark results",
        "",
        f"Run on {machine['date']} with `{command}` ({elapsed / 60:.1f} min).",
        "",
        "| Machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine.items() if k != "date"),
        f"| load average after the run | {load_after} |",
        f"| whole-machine CPU busy during the run | {'-' if busy is None else f'{busy:.0%}'} |",
        "",
        "The machine may be shared: the load figures above include every other process on it. "
        "Ratios (ours against a peer measured in the same run) are steadier than absolute figures.",
        "",
        "## Results",
        "",
        markdown_table(rows),
        "",
        "## Notes",
        "",
        *(f"- {note}" for result in results.values() for note in result.notes),
        "",
        "## Targets missed",
        "",
        *([f"- {r.bench}: {r.metric}: {r.ours} (target {r.target})" for r in misses] or ["- none"]),
        "",
        "Reproduce: `make bench` (full) or `.venv/bin/python benchmarks/run_all.py --quick`; each "
        "benchmark also runs alone, e.g. `.venv/bin/python benchmarks/bench_triggerer.py --n 1000`. "
        "See `benchmarks/README.md`.",
        "",
    ]
    return "\n".join(lines)


def _error_result(name: str, error: BaseException) -> BenchResult:
    detail = "".join(traceback.format_exception_only(type(error), error)).strip()
    return BenchResult([Row(name, "benchmark failed", detail[:200], result="ERROR")], {"error": detail})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes: about 3 minutes")
    parser.add_argument("--n", type=int, action="append", help="triggerer N (repeatable)")
    parser.add_argument("--only", nargs="+", choices=BENCHES, help="run only these benchmarks")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "RESULTS.md", help="results file")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")

    machine = machine_info()
    meter, started = CpuMeter(), time.monotonic()
    todo = runners(args)
    results: dict[str, BenchResult] = {}
    for name in args.only or BENCHES:
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        try:
            results[name] = todo[name]()
        except Exception as error:  # one broken benchmark must not hide the others' figures
            results[name] = _error_result(name, error)
        print(f"   {name} took {time.monotonic() - t0:.0f} s", flush=True)
    elapsed, busy = time.monotonic() - started, meter.busy()
    load_after = " / ".join(f"{x:.2f}" for x in os.getloadavg())

    print()
    print(markdown_table([row for result in results.values() for row in result.rows]))
    for result in results.values():
        for note in result.notes:
            print(f"- {note}")
    command = "python benchmarks/run_all.py" + ("".join(f" {a}" for a in (argv or sys.argv[1:])))
    args.output.write_text(
        render(results, machine, command=command, elapsed=elapsed, busy=busy, load_after=load_after)
    )
    print(f"\nWrote {args.output} ({elapsed / 60:.1f} min; machine CPU busy {busy or 0:.0%}).")
    return 1 if any(r.result == "ERROR" for res in results.values() for r in res.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
