"""Parse-time cost: what the provider adds to DAG parsing.

1. Import time added by ``from airflow_provider_kirin.operators.kirin import
   KirinTextToVideoOperator`` and ``import airflow_provider_kirin.sensors.kirin`` on top of
   ``import airflow.sdk``: ``python -X importtime`` in a fresh process per run (after one warm-up
   run that writes the bytecode caches, when there are several), median over ``--repeat`` runs.
   The figure is the sum of the self times of every module imported after ``airflow.sdk``
   (between two markers written to stderr around the import); the wall time of the same import
   (``time.perf_counter``) is reported beside it. The peer is the HTTP provider's
   ``HttpOperator`` and ``HttpSensor``, measured the same way.
2. ``DagBag`` parse of ``example_dags/`` in a fresh process (after ``airflow`` and ``DagBag`` are
   imported, so only the DAG files and what they import are timed), median over half as many
   runs, with the slowest file.

Target: under 30 ms for the import added, and for the slowest DAG file.

Run: ``python benchmarks/bench_parse.py [--quick] [--repeat 10]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MARKER,
    REPO_ROOT,
    BenchResult,
    Row,
    fmt,
    median,
    peer_installed,
    ratio,
    venv_env,
    verdict,
)

TARGET_MS = 30.0
OURS = (
    "from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator",
    "import airflow_provider_kirin.sensors.kirin",
)
PEER = (
    "from airflow.providers.http.operators.http import HttpOperator",
    "from airflow.providers.http.sensors.http import HttpSensor",
)
EXAMPLE_DAGS = REPO_ROOT / "example_dags"

#: Runs in the child: mark the start and the end of the measured imports on stderr (fd 2, where
#: ``-X importtime`` writes too, unbuffered), with the wall time of the imports.
_IMPORT_PROGRAM = """
import os, time
import airflow.sdk
os.write(2, b"@@IMPORT start\\n")
t0 = time.perf_counter()
{imports}
t1 = time.perf_counter()
os.write(2, ("@@IMPORT end %.9f\\n" % (t1 - t0)).encode())
"""

_DAGBAG_PROGRAM = """
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
t0 = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
t1 = time.perf_counter()
stats = [[s.file, s.duration.total_seconds()] for s in bag.dagbag_stats]
sys.stderr.write("{marker}" + json.dumps({{"kind": "dagbag", "seconds": t1 - t0, "dags": bag.size(),
    "errors": sorted(bag.import_errors), "files": stats}}) + "\\n")
"""


def _env(home: str) -> dict[str, str]:
    env = venv_env(AIRFLOW_HOME=home)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def parse_importtime(stderr: str) -> tuple[dict[str, float], float]:
    """Self time (ms) of each module imported between the markers, and the wall time (ms)."""
    modules: dict[str, float] = {}
    inside, wall = False, float("nan")
    for line in stderr.splitlines():
        if line.startswith("@@IMPORT start"):
            inside = True
        elif line.startswith("@@IMPORT end"):
            wall = float(line.split()[-1]) * 1000
            break
        elif inside and line.startswith("import time:"):
            parts = line[len("import time:") :].split("|")
            if len(parts) == 3 and parts[0].strip().isdigit():
                name = parts[2].strip()
                modules[name] = modules.get(name, 0.0) + int(parts[0]) / 1000
    return modules, wall


def measure_imports(imports: Sequence[str], repeat: int, home: str) -> dict[str, Any]:
    """Median added import time (ms), wall time (ms) and per-module self times over ``repeat`` runs."""
    program = _IMPORT_PROGRAM.format(imports="\n".join(imports))
    totals, walls = [], []
    per_module: dict[str, list[float]] = defaultdict(list)
    warm_up = 1 if repeat > 1 else 0
    for run in range(repeat + warm_up):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", program],
            capture_output=True,
            text=True,
            env=_env(home),
            cwd=home,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"import run failed:\n{result.stderr[-2000:]}")
        modules, wall = parse_importtime(result.stderr)
        if run < warm_up:  # bytecode caches
            continue
        totals.append(sum(modules.values()))
        walls.append(wall)
        for name, ms in modules.items():
            per_module[name].append(ms)
    top = sorted(((median(v) or 0.0, k) for k, v in per_module.items()), reverse=True)[:5]
    return {
        "import_ms": median(totals),
        "wall_ms": median(walls),
        "runs": len(totals),
        "modules_added": len(per_module),
        "top5": [{"module": k, "self_ms": ms} for ms, k in top],
    }


def measure_dagbag(repeat: int, home: str, folder: Path = EXAMPLE_DAGS) -> dict[str, Any]:
    """Median ``DagBag(folder)`` time (ms) in fresh processes, and the median slowest file."""
    totals, slowest, names = [], [], []
    dags, errors = 0, []
    warm_up = 1 if repeat > 1 else 0
    for run in range(repeat + warm_up):
        result = subprocess.run(
            [sys.executable, "-c", _DAGBAG_PROGRAM.format(marker=MARKER), str(folder)],
            capture_output=True,
            text=True,
            env=_env(home),
            cwd=home,
            timeout=120,
            check=False,
        )
        lines = [x for x in result.stderr.splitlines() if x.startswith(MARKER)]
        if result.returncode != 0 or not lines:
            raise RuntimeError(f"DagBag run failed:\n{result.stderr[-2000:]}")
        data = json.loads(lines[-1][len(MARKER) :])
        if run < warm_up:
            continue
        dags, errors = data["dags"], data["errors"]
        totals.append(data["seconds"] * 1000)
        file, seconds = max(data["files"], key=lambda f: f[1])
        slowest.append(seconds * 1000)
        names.append(Path(file).name)
    return {
        "dagbag_ms": median(totals),
        "slowest_file_ms": median(slowest),
        "slowest_file": max(set(names), key=names.count) if names else "",
        "files": len(list(folder.glob("*.py"))),
        "dags": dags,
        "import_errors": errors,
        "runs": len(totals),
    }


_NO_PEER: dict[str, Any] = {"import_ms": None, "wall_ms": None, "modules_added": "-", "top5": [], "runs": 0}


def run(repeat: int, with_peer: bool = True) -> BenchResult:
    """Measure ours, the peer and the DagBag; return table rows and raw figures."""
    with tempfile.TemporaryDirectory(prefix="kirin-bench-parse-") as home:
        ours = measure_imports(OURS, repeat, home)
        peer = measure_imports(PEER, repeat, home) if with_peer and peer_installed() else _NO_PEER
        bag = measure_dagbag(max(1, repeat // 2), home)
    b = "parse"

    def listing(top: list[dict[str, Any]]) -> str:
        return ", ".join(f"`{m['module']}` {m['self_ms']:.2f} ms" for m in top)

    rows = [
        Row(
            b,
            f"import added to airflow.sdk: operator + sensor (-X importtime, median of {ours['runs']})",
            fmt(ours["import_ms"], 1, "ms"),
            fmt(peer["import_ms"], 1, "ms"),
            fmt(ratio(ours["import_ms"], peer["import_ms"]), 2, "x"),
            f"< {TARGET_MS:.0f} ms",
            verdict(ours["import_ms"] is not None and ours["import_ms"] < TARGET_MS),
        ),
        Row(
            b,
            "same import, wall time (perf_counter)",
            fmt(ours["wall_ms"], 1, "ms"),
            fmt(peer["wall_ms"], 1, "ms"),
            fmt(ratio(ours["wall_ms"], peer["wall_ms"]), 2, "x"),
        ),
        Row(b, "modules the import adds", str(ours["modules_added"]), str(peer["modules_added"])),
        Row(
            b,
            f"DagBag of example_dags/ ({bag['files']} files, {bag['dags']} DAGs, "
            f"{len(bag['import_errors'])} errors)",
            fmt(bag["dagbag_ms"], 1, "ms"),
        ),
        Row(
            b,
            f"DagBag slowest file ({bag['slowest_file']})",
            fmt(bag["slowest_file_ms"], 1, "ms"),
            "",
            "",
            f"< {TARGET_MS:.0f} ms",
            verdict(bag["slowest_file_ms"] is not None and bag["slowest_file_ms"] < TARGET_MS),
        ),
    ]
    notes = [
        f"Modules our import adds, most expensive first (median self time): {listing(ours['top5'])}.",
        f"The peer's (HttpOperator + HttpSensor): {listing(peer['top5']) or 'not measured'}.",
    ]
    return BenchResult(rows, {"ours": ours, "peer": peer, "dagbag": bag}, notes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="4 runs instead of 10")
    parser.add_argument("--repeat", "--n", type=int, default=None, help="runs per measurement (10; quick 4)")
    parser.add_argument("--no-peer", action="store_true", help="skip the HTTP provider's imports")
    parser.add_argument("--json", type=Path, help="also write the rows and raw figures here")
    args = parser.parse_args(argv)
    repeat = args.repeat or (4 if args.quick else 10)
    result = run(repeat, with_peer=not args.no_peer)
    return result.report(args.json)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
