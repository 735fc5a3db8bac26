"""The benchmark scripts run end to end at tiny sizes and produce their table rows.

The scripts run at once, each in its own process (they are subprocess-heavy and mostly wait),
with ``--json`` output. The assertions are about structure and counts (every wait got its event,
every task was created once, every download completed), never about timings: this machine's
speed is not the test's business.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
N = 5
SCRIPTS: dict[str, list[str]] = {
    "triggerer": ["bench_triggerer.py", "--n", str(N), "--interval", "0.2", "--processing", "0.4"],
    "parse": ["bench_parse.py", "--repeat", "1", "--no-peer"],
    "download": ["bench_download.py", "--mb", "2", "--repeat", "1", "--idle-repeat", "0"],
    "requests_per_video": [
        "bench_requests_per_video.py",
        *("--lengths", "30", "60", "--scale", "200", "--n", "2"),
    ],
    "batch_volume": ["bench_batch_volume.py", "--n", "20", "--in-flight", "5"],
    "keep_videos": ["bench_keep_videos.py", "--n", "6", "--latency", "0.05", "--concurrency", "3"],
    "hostile_answers": ["bench_hostile_answers.py", "--quick"],
}

# The benchmark scripts run Airflow in subprocesses: not in `make test-fast`.
pytestmark = [pytest.mark.timeout(120), pytest.mark.airflow]


def _load(name: str) -> ModuleType:
    """A benchmark module (``benchmarks/`` is a directory of scripts, not a package)."""
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Run every script at tiny sizes, concurrently; return each one's JSON output."""
    assert shutil.which("curl"), "the download benchmark compares against curl: install it"
    tmp = tmp_path_factory.mktemp("bench-smoke")
    procs = {}
    for name, args in SCRIPTS.items():
        out = tmp / f"{name}.json"
        command = [sys.executable, str(BENCH_DIR / args[0]), *args[1:], "--json", str(out)]
        log = (tmp / f"{name}.log").open("w")
        procs[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp), out, log)
    deadline = time.monotonic() + 100
    results = {}
    for name, (proc, out, log) in procs.items():
        try:
            code = proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        log.close()
        text = (tmp / f"{name}.log").read_text()
        assert code == 0, f"{name} exited {code}:\n{text[-3000:]}"
        results[name] = json.loads(out.read_text())
    return results


def _metrics(output: dict[str, Any]) -> set[str]:
    return {row["metric"] for row in output["rows"]}


def test_triggerer_every_wait_gets_its_event(outputs: dict[str, dict[str, Any]]) -> None:
    out = outputs["triggerer"]
    phases = out["raw"]["phases"]
    pollers = {p["poller"] for p in phases}
    assert {"kirin", "session_per_poll", "shared_session"} <= pollers
    for phase in phases:
        assert phase["n"] == N
        assert phase["creates"] == N, phase
        assert phase["ok"] == N, phase
        assert phase["errors"] == 0, phase
        assert phase["missing"] == 0, phase
        assert phase["polls"] >= N, phase
        assert phase["connections"] >= 1, phase
    kirin = next(p for p in phases if p["poller"] == "kirin")
    assert kirin["connections"] <= N  # one shared pool: never a connection per poll
    assert {"errors", "CPU per 1,000 polls (whole run)", "peak RSS per wait above baseline"} <= _metrics(out)
    assert all(row["bench"] == f"triggerer N={N}" for row in out["rows"])


def test_parse_measures_our_import_and_the_dagbag(outputs: dict[str, dict[str, Any]]) -> None:
    raw = outputs["parse"]["raw"]
    assert raw["ours"]["runs"] == 1
    assert raw["ours"]["modules_added"] >= 1
    assert any("airflow_provider_kirin" in m["module"] for m in raw["ours"]["top5"])
    assert raw["dagbag"]["dags"] >= 1
    assert raw["dagbag"]["import_errors"] == []
    assert len(outputs["parse"]["rows"]) >= 4


def test_download_completes_every_file(outputs: dict[str, dict[str, Any]]) -> None:
    raw = outputs["download"]["raw"]
    assert raw["size_mb"] == 2
    assert len(raw["ours"]) == len(raw["curl"]) == 1
    assert raw["ours"][0]["mb_s"] > 0
    assert raw["curl"][0]["mb_s"] > 0
    served = next(r for r in outputs["download"]["rows"] if r["metric"].startswith("downloads served"))
    assert served["ours"] == "2 / 2"


def test_requests_per_video_creates_each_task_once(outputs: dict[str, dict[str, Any]]) -> None:
    lengths = outputs["requests_per_video"]["raw"]["lengths"]
    assert set(lengths) == {"30.0", "60.0"}
    for figures in lengths.values():
        real = figures["real"]
        assert real["succeeded"] == real["tasks"] == 2
        assert real["creates"] == real["create_requests"] == 2
        assert real["gets"] >= 2
        assert figures["min"] >= 1


def test_run_all_renders_one_results_file(outputs: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    run_all = _load("run_all")
    common = _load("_common")
    results = {
        name: common.BenchResult([common.Row(**row) for row in out["rows"]], out["raw"], out["notes"])
        for name, out in outputs.items()
    }
    text = run_all.render(
        results, common.machine_info(), command="smoke", elapsed=1.0, busy=0.5, load_after="0 / 0 / 0"
    )
    for heading in ("# Benchmark results", "## Results", "## Targets missed", "| cpu |", "| aiohttp |"):
        assert heading in text
    rows = sum(len(out["rows"]) for out in outputs.values())
    assert (
        text.count("\n| triggerer")
        + text.count("\n| parse")
        + text.count("\n| download")
        + text.count("\n| requests/video")
        + text.count("\n| batch N=")
        + text.count("\n| keep ")
        + text.count("\n| hostile answer")
        == rows
    )


def test_batch_volume_creates_each_item_once(outputs: dict[str, dict[str, Any]]) -> None:
    (run,) = outputs["batch_volume"]["raw"]["runs"]
    assert (run["n"], run["creates"], run["completed"]) == (20, 20, 20)
    assert run["kwargs_bytes"] > 0
    assert run["event_bytes"] > 0


def test_keep_videos_retries_only_the_rest(outputs: dict[str, dict[str, Any]]) -> None:
    raw = outputs["keep_videos"]["raw"]
    assert raw["downloads"] == {"serial": 6, "parallel": 6}
    assert raw["retry_exit"] == 0
    assert raw["complete_after_retry"] == 6
    assert raw["retry_downloads"] <= 6 - raw["kept_before_kill"]


def test_hostile_answers_stay_small(outputs: dict[str, dict[str, Any]]) -> None:
    raw = outputs["hostile_answers"]["raw"]
    assert set(raw) == {"outputs", "video URLs", "metadata", "error text", "nesting"}
    for figures in raw.values():
        assert 1_000_000 < figures["bytes"] < 1024 * 1024
        assert figures["ours"]["event_bytes"] < 16 * 1024
        assert figures["ours"]["xcom_bytes"] < 16 * 1024
    assert raw["video URLs"]["ours"]["status"] == "success"
