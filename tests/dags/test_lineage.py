"""OpenLineage events of real ``airflow dags test`` runs, through the OpenLineage provider's own
listener and its ``file`` transport (one JSON event a line), against the bundled emulator.

- the deferrable example's COMPLETE event names the generated video as its output and holds the
  cost in the ``kirin`` run facet;
- the batch example's COMPLETE event names the manifest (and the kept videos and sidecars), with
  the counts and the total cost, not one row per item;
- a failed generation's FAIL event carries the error's code and class;
- a TaskFlow task that calls ``KirinHook.download_video`` gets the file as its output (hook lineage);
- no event holds the API key.

The compat suite re-runs these on every Airflow line (``tests/compat/test_matrix.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow_helpers import AirflowHome, DagsTestRun
from dags.test_example_dags import EXAMPLE_DAGS, FAST, FAST_WAITS

from airflow_provider_kirin.emulator import EmulatorServer, Fault

pytestmark = pytest.mark.airflow  # starts real Airflow processes: not in `make test-fast`

#: This module's fixtures (the compat suite imports them with the tests).
__all__ = ["lineage_file", "lineage_home"]

KEY = "kirin-lineage-canary-key"


def lineage_env(path: Path) -> dict[str, str]:
    """The OpenLineage provider's settings: every event appended to ``path``, one JSON a line."""
    transport = {"type": "file", "log_file_path": str(path), "append": True}
    return {
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "kirin-tests",
    }


@pytest.fixture(scope="module")
def lineage_home(
    tmp_path_factory: pytest.TempPathFactory, airflow_template_db: Path
) -> Iterator[AirflowHome]:
    """An AIRFLOW_HOME of the example DAGs whose OpenLineage provider appends every event to
    ``openlineage.jsonl`` in it. Airflow reads these settings once per process, so they are the
    home's own: every ``dags test`` of the module runs in its one warm CLI process."""
    path = tmp_path_factory.mktemp("airflow-lineage")
    settings = {**FAST_WAITS, **lineage_env(path / "openlineage.jsonl")}
    home = AirflowHome.create(path, airflow_template_db, dags_folder=EXAMPLE_DAGS, settings=settings)
    yield home
    home.close()


@pytest.fixture
def lineage_file(lineage_home: AirflowHome) -> Path:
    """The file this test's events go to: the home's, emptied first."""
    path = lineage_home.path / "openlineage.jsonl"
    path.unlink(missing_ok=True)
    return path


def events(path: Path, job: str, event_type: str) -> list[dict[str, Any]]:
    """The events of ``job`` (``<dag_id>.<task_id>``) of one type, in order."""
    assert path.exists(), "the OpenLineage file transport wrote nothing"
    found = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in found if e["job"]["name"] == job and e["eventType"] == event_type]


def outputs(event: dict[str, Any]) -> list[tuple[str, str]]:
    return [(o["namespace"], o["name"]) for o in event.get("outputs", [])]


@pytest.mark.kirin_emulator(api_key=KEY, **FAST)
@pytest.mark.timeout(200)
def test_deferrable_example_complete_event_names_the_video_and_holds_the_cost(
    lineage_home: AirflowHome,
    lineage_file: Path,
    dags_test: Callable[..., DagsTestRun],
    kirin_emulator: EmulatorServer,
) -> None:
    dag_id = "example_kirin_deferrable_operator"
    path = lineage_file
    run = dags_test(lineage_home, dag_id)

    assert run.returncode == 0, run.tail()
    kirin_task_id = run.xcom("generate", "kirin_task_id")
    (complete,) = events(path, f"{dag_id}.generate", "COMPLETE")
    assert outputs(complete) == [(kirin_emulator.url, f"/v1/files/{kirin_task_id}/video.mp4")]
    facet = complete["run"]["facets"]["kirin"]
    assert facet["cost"] == "0.35"
    assert facet["kirin_task_id"] == kirin_task_id
    assert (facet["model"], facet["mode"], facet["duration"], facet["aspect_ratio"]) == (
        "kirin_v2_5_turbo_t2v",
        "std",
        5,
        "16:9",
    )
    assert facet["external_task_id"] == kirin_emulator.state.tasks[kirin_task_id].external_task_id
    assert KEY not in path.read_text()


@pytest.mark.kirin_emulator(api_key=KEY, **FAST)
@pytest.mark.timeout(240)
def test_batch_example_complete_event_names_the_manifest_with_counts_and_total_cost(
    lineage_home: AirflowHome,
    lineage_file: Path,
    dags_test: Callable[..., DagsTestRun],
    kirin_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    dag_id = "example_kirin_batch_catalogue"
    # Airflow 3.0's `dags test` registers no assets: parse the DAGs first, as a dag-processor does.
    parsed = lineage_home.cli("dags", "reserialize", warm=True)
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr
    destination = tmp_path / "catalogue"
    path = lineage_file
    run = dags_test(lineage_home, dag_id, AIRFLOW_VAR_KIRIN_CATALOGUE_DESTINATION=destination.as_uri())

    assert run.returncode == 0, run.tail()
    summary = run.xcom("catalogue", "return_value")
    manifest = Path(summary["manifest"].removeprefix("file://"))
    (complete,) = events(path, f"{dag_id}.catalogue", "COMPLETE")
    named = outputs(complete)
    assert named[0] == ("file", str(manifest))
    videos = sorted(manifest.parent.glob("*.mp4"))
    assert len(videos) == 3
    expected = {("file", str(v)) for v in videos} | {("file", f"{v}.json") for v in videos}
    assert set(named[1:]) == expected
    facet = complete["run"]["facets"]["kirin"]
    assert facet["counts"] == {"completed": 3}
    assert (facet["items"], facet["failed"], facet["total_cost"]) == (3, 0, "1.05")
    assert facet["manifest"] == summary["manifest"]
    assert "kirin_task_id" not in facet  # counts, not one row per item
    assert KEY not in path.read_text()


@pytest.mark.kirin_emulator(api_key=KEY, **FAST)
@pytest.mark.timeout(200)
def test_failed_generation_fail_event_carries_its_code_and_class(
    lineage_home: AirflowHome,
    lineage_file: Path,
    dags_test: Callable[..., DagsTestRun],
    kirin_emulator: EmulatorServer,
) -> None:
    dag_id = "example_kirin_deferrable_operator"
    kirin_emulator.add_fault(
        Fault(
            kind="fail_task",
            prompt_pattern="hummingbird",
            code="002011096",
            error_message=f"could not render; Authorization: Bearer {KEY}",
        )
    )
    path = lineage_file
    run = dags_test(lineage_home, dag_id)

    assert run.returncode != 0, run.tail()
    kirin_task_id = run.xcom("generate", "kirin_task_id")
    (failed,) = events(path, f"{dag_id}.generate", "FAIL")
    facet = failed["run"]["facets"]["kirin"]
    assert facet["error_code"] == "002011096"
    assert facet["error_class"] == "KirinResultParsingError"
    assert facet["kirin_task_id"] == kirin_task_id
    assert outputs(failed) == []  # no video was made
    assert events(path, f"{dag_id}.generate", "COMPLETE") == []
    assert KEY not in path.read_text()


@pytest.mark.kirin_emulator(api_key=KEY, **FAST)
@pytest.mark.timeout(200)
def test_a_taskflow_task_calling_the_hook_gets_the_file_it_wrote_as_its_output(
    lineage_home: AirflowHome,
    lineage_file: Path,
    dags_test: Callable[..., DagsTestRun],
    kirin_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    """``KirinHook.download_video`` reports the file to Airflow's hook lineage collector, so the
    TaskFlow example's ``download`` task (no Kirin operator) has it as its output."""
    dag_id = "example_kirin_taskflow_hook"
    path = lineage_file
    out_dir = tmp_path / "videos"
    run = dags_test(lineage_home, dag_id, AIRFLOW_VAR_KIRIN_VIDEO_DIR=str(out_dir))

    assert run.returncode == 0, run.tail()
    saved = run.xcom("download", "return_value")
    (complete,) = events(path, f"{dag_id}.download", "COMPLETE")
    assert outputs(complete) == [("file", saved)]
    assert KEY not in path.read_text()
