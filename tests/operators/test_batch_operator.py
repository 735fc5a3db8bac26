"""``KirinBatchTextToVideoOperator`` on a real Airflow (``airflow dags test``, in the home's warm CLI
process) against the emulator: templated items, the manifest's content, kept videos named from the
items, the asset event, ``max_failed`` both ways (in the worker and deferred), and validation before
spend."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow_helpers import AirflowHome, DagsTestRun, decode_xcom

from airflow_provider_kirin.emulator import EmulatorServer
from airflow_provider_kirin.io.storage import safe_name

pytestmark = pytest.mark.airflow  # real `airflow dags test`: not in `make test-fast`

DAG_FILES = Path(__file__).resolve().parent / "dag_files"
FAST = {"pending_seconds": 0.1, "processing_seconds": 0.3}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, airflow_template_db: Path) -> Iterator[AirflowHome]:
    """A home whose DAGs are parsed into the metadata DB first, as a dag-processor does in a real
    deployment: Airflow 3.0's ``dags test`` does not register a DAG's assets itself, and a task with
    an inactive asset in its outlets fails there (``AirflowInactiveAssetInInletOrOutletException``)."""
    home = AirflowHome.create(
        tmp_path_factory.mktemp("airflow-batch"), airflow_template_db, dags_folder=DAG_FILES
    )
    parsed = home.cli("dags", "reserialize", timeout=180, warm=True)
    assert parsed.returncode == 0, (parsed.stdout + parsed.stderr)[-3000:]
    yield home
    home.close()


@pytest.fixture
def batch_dags_test(dags_test: Callable[..., DagsTestRun]) -> Callable[..., DagsTestRun]:
    """``batch_dags_test(home, dag_id, dest, **conn_extra)``: one ``airflow dags test`` of a batch DAG
    writing to ``dest`` (the Variable ``batch_dest``), with the connection extras ``conn_extra``."""

    def run(home: AirflowHome, dag_id: str, dest: Path, **conn_extra: Any) -> DagsTestRun:
        return dags_test(
            home, dag_id, conn_extra=conn_extra or None, timeout=180, AIRFLOW_VAR_BATCH_DEST=str(dest)
        )

    return run


def manifest(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.kirin_emulator(**FAST)
@pytest.mark.timeout(240)
def test_batch_writes_manifest_videos_and_asset_event(
    home: AirflowHome,
    batch_dags_test: Callable[..., DagsTestRun],
    kirin_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    run = batch_dags_test(home, "kirin_batch_ok", tmp_path)
    assert run.state == "success", run.output[-4000:]
    assert kirin_emulator.stats()["creates"] == 4
    summary = run.xcom("batch", "return_value")
    assert summary == {
        "counts": {"completed": 4},
        "total_cost": "2.25",  # 3 x 0.35 (std 5 s) + 1.20 (pro 10 s)
        "spent_total": "2.25",
        "spent_this_try": "2.25",  # nothing reused: this try paid for all four
        "max_cost": None,
        "manifest": (tmp_path / "ok" / "manifest.jsonl").as_uri(),
        "items": 4,
        "failed": 0,
    }
    rows = manifest(tmp_path / "ok" / "manifest.jsonl")
    assert [row["index"] for row in rows] == [0, 1, 2, 3]
    assert [row["key"] for row in rows] == [None, "sale/banner 1", None, None]
    assert rows[2]["prompt"] == "A heron at dawn"  # templated inside the item
    assert [row["cost"] for row in rows] == ["0.35", "0.35", "1.20", "0.35"]
    tasks = kirin_emulator.state.tasks
    for row in rows:
        task = tasks[row["task_id"]]
        assert row["status"] == "completed"
        assert task.external_task_id == row["external_task_id"]
        assert task.params["prompt"] == row["prompt"]
        assert row["video_urls"] == [task.video_url]
        assert len(row["fingerprint"]) == 64
        assert (row["error_code"], row["error_message"], row["reused"]) == (None, None, False)
    assert tasks[rows[1]["task_id"]].params["aspect_ratio"] == "9:16"
    assert (tasks[rows[2]["task_id"]].params["mode"], tasks[rows[2]["task_id"]].params["duration"]) == (
        "pro",
        "10",
    )
    # Videos are named from the item (index and a safe form of the key), never from the server.
    keyed = safe_name("00001-sale/banner 1", "")  # "00001-sale_banner_1-<hash of the key>"
    assert keyed.startswith("00001-sale_banner_1-")
    kept = sorted(p.name for p in (tmp_path / "ok").iterdir())
    assert kept == [
        "00000.mp4",
        "00000.mp4.json",
        f"{keyed}.mp4",
        f"{keyed}.mp4.json",
        "00002.mp4",
        "00002.mp4.json",
        "00003.mp4",
        "00003.mp4.json",
        "manifest.jsonl",
    ]
    assert rows[1]["stored"] == [(tmp_path / "ok" / f"{keyed}.mp4").as_uri()]
    sidecar = json.loads((tmp_path / "ok" / f"{keyed}.mp4.json").read_text())
    assert sidecar["kirin_task_id"] == rows[1]["task_id"]
    assert sidecar["prompt"] == "confetti over a shop window"
    events = home.query(
        "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
        "WHERE a.name = 'kirin-batch-manifest' AND e.source_dag_id = ? AND e.source_run_id = ?",
        ("kirin_batch_ok", run.run_id),
    )
    assert [decode_xcom(extra) for (extra,) in events] == [
        {
            "manifest": summary["manifest"],
            "counts": {"completed": 4},
            "total_cost": "2.25",
            "spent_total": "2.25",
            "spent_this_try": "2.25",
        }
    ]
    assert "4/4 done, 0 failed, 0 in flight, $2.25 so far" in run.output


@pytest.mark.kirin_emulator(**FAST)
@pytest.mark.timeout(240)
def test_max_failed_tolerates_in_the_worker(
    home: AirflowHome,
    batch_dags_test: Callable[..., DagsTestRun],
    kirin_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    kirin_emulator.add_fault(endpoint="create", kind="fail_task", times=1, code="002011096")
    run = batch_dags_test(home, "kirin_batch_tolerant", tmp_path)
    assert run.state == "success", run.output[-4000:]
    summary = run.xcom("batch", "return_value")
    assert summary["counts"] == {"completed": 3, "failed": 1}
    assert summary["failed"] == 1
    (failed,) = [
        row for row in manifest(tmp_path / "tolerant" / "manifest.jsonl") if row["status"] == "failed"
    ]
    assert failed["error_code"] == "002011096"
    assert failed["error_message"]
    assert failed["video_urls"] == []
    assert f"prompts[{failed['index']}]" in run.output
    assert "failed: 002011096" in run.output
    assert kirin_emulator.stats()["creates"] == 4


@pytest.mark.kirin_emulator(**FAST)
@pytest.mark.timeout(240)
def test_max_failed_fails_the_task_after_writing_the_manifest(
    home: AirflowHome,
    batch_dags_test: Callable[..., DagsTestRun],
    kirin_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    kirin_emulator.add_fault(endpoint="create", kind="fail_task", times=1, code="002011096")
    run = batch_dags_test(home, "kirin_batch_strict", tmp_path)
    assert run.state == "failed"
    assert "1 of 4 Kirin batch items did not complete" in run.output
    assert "max_failed=0.2" in run.output
    rows = manifest(tmp_path / "strict" / "manifest.jsonl")
    assert sorted(row["status"] for row in rows) == ["completed", "completed", "completed", "failed"]


@pytest.mark.timeout(180)
def test_bad_item_fails_before_any_request(
    home: AirflowHome,
    batch_dags_test: Callable[..., DagsTestRun],
    kirin_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    run = batch_dags_test(home, "kirin_batch_bad_input", tmp_path)
    assert run.state == "failed"
    assert "prompts[2] (key 'third'): Invalid Kirin request: aspect_ratio='4:3' is invalid" in run.output
    assert "allowed: one of '16:9', '9:16', '1:1'" in run.output
    stats = kirin_emulator.stats()
    assert (stats["create_requests"], stats["lookups"]) == (0, 0)


@pytest.mark.kirin_emulator(**FAST)
@pytest.mark.timeout(240)
def test_expand_over_chunks_from_an_xcomarg(
    home: AirflowHome,
    batch_dags_test: Callable[..., DagsTestRun],
    kirin_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    run = batch_dags_test(home, "kirin_batch_chunks", tmp_path)
    assert run.state == "success", run.output[-4000:]
    summaries = run.xcoms("batch", "return_value")
    assert {i: s["counts"] for i, s in summaries.items()} == {0: {"completed": 2}, 1: {"completed": 1}}
    assert all(s["manifest"] is None for s in summaries.values())  # no destination: no file
    same = [t for t in kirin_emulator.state.tasks.values() if t.params["prompt"] == "the same prompt"]
    assert len(same) == 2  # the same prompt in two chunks (map indexes): two items, two generations
    assert len({t.external_task_id for t in same}) == 2
    assert kirin_emulator.stats()["creates"] == 3


#: The emulator's prices, as the connection's ``prices`` extra.
PRICES = {"std/5": "0.35", "std/10": "0.70", "pro/5": "0.60", "pro/10": "1.20"}


@pytest.mark.kirin_emulator(**FAST)
@pytest.mark.timeout(300)
def test_a_dry_run_predicts_the_ceilinged_run_exactly(
    home: AirflowHome,
    batch_dags_test: Callable[..., DagsTestRun],
    kirin_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    """``dry_run=True`` creates nothing and predicts what the same items under the same ceiling then
    create and cost, under ``airflow dags test`` (the compat suite runs it on every line)."""
    run = batch_dags_test(home, "kirin_batch_dry_run", tmp_path, prices=PRICES)
    assert run.state == "success", run.output[-4000:]
    plan = run.xcom("batch", "return_value")
    assert kirin_emulator.stats()["create_requests"] == 0
    assert (plan["would_create"], plan["would_reuse"], plan["over_budget"]) == (3, 0, 3)
    assert plan["estimated_cost"] == "1.05"
    assert (
        "would create 3, reuse 0, estimated $1.05 of max_cost $1.05; 3 would not fit max_cost" in run.output
    )

    run = batch_dags_test(home, "kirin_batch_ceiling", tmp_path, prices=PRICES)
    assert run.state == "success", run.output[-4000:]
    summary = run.xcom("batch", "return_value")
    assert summary["counts"] == {"completed": 3, "over_budget": 3}
    assert (summary["spent_total"], summary["spent_this_try"], summary["max_cost"]) == (
        "1.05",
        "1.05",
        "1.05",
    )
    stats = kirin_emulator.stats()
    assert stats["creates"] == plan["would_create"]
    assert stats["billed_usd"] == plan["estimated_cost"]  # the emulator's own record of cost
    rows = manifest(tmp_path / "ceiling" / "manifest.jsonl")
    assert [row["status"] for row in rows] == ["completed"] * 3 + ["over_budget"] * 3
    assert all("does not fit max_cost $1.05" in row["error_message"] for row in rows[3:])
