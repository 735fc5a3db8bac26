"""The example DAGs parse, and really run under ``airflow dags test`` against the bundled emulator.

Every ``dags test`` is the real ``airflow`` CLI command on a temporary AIRFLOW_HOME (SQLite, migrated
once per run) with an explicit environment, run in the home's warm CLI process (one interpreter start
per home, see ``tests/airflow_helpers.py``); deferrable tasks run their trigger inline. Results are
read back from the metadata DB (task states, XComs) and from the emulator (what it was asked to do).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow_helpers import (
    EXAMPLE_DAGS,
    FAST_WAITS,
    TEST_DAG_FILES,
    AirflowHome,
    DagsTestRun,
    decode_xcom,
    json_output,
)

from airflow_provider_kirin.emulator import EmulatorServer, Fault
from airflow_provider_kirin.exceptions import SEED_ERROR_CODES, KirinTaskTimeoutError

pytestmark = pytest.mark.airflow  # starts real Airflow processes: not in `make test-fast`

#: Every file of ``example_dags/`` and the DAGs it defines; each DAG has a success test below.
EXPECTED_DAGS = {
    "example_kirin_asset_consumer.py": {"example_kirin_asset_consumer"},
    "example_kirin_batch_catalogue.py": {"example_kirin_batch_catalogue"},
    "example_kirin_cost_report.py": {"example_kirin_cost_report"},
    "example_kirin_deferrable_operator.py": {"example_kirin_deferrable_operator"},
    "example_kirin_keep_video.py": {"example_kirin_keep_video"},
    "example_kirin_mapped.py": {"example_kirin_mapped"},
    "example_kirin_scheduled.py": {"example_kirin_scheduled"},
    "example_kirin_submit_and_sense.py": {"example_kirin_submit_and_sense"},
    "example_kirin_taskflow_hook.py": {"example_kirin_taskflow_hook"},
}
MAPPED_PROMPTS = [
    "A lighthouse at dusk, waves crashing, drone shot",
    "A cat chasing a laser dot across a wooden floor",
    "Time-lapse of a city skyline from day to night",
]
#: Emulator timings of the success and error runs: quick, but long enough to be polled a few times.
FAST = {"pending_seconds": 0.2, "processing_seconds": 1.0}


# -- fixtures (``dags_test`` is the root conftest's) -------------------------------------------------
@pytest.fixture(scope="module")
def example_home(
    tmp_path_factory: pytest.TempPathFactory, airflow_template_db: Path
) -> Iterator[AirflowHome]:
    """An AIRFLOW_HOME whose DAGS_FOLDER is ``example_dags/``."""
    path = tmp_path_factory.mktemp("airflow-examples")
    home = AirflowHome.create(path, airflow_template_db, dags_folder=EXAMPLE_DAGS, settings=FAST_WAITS)
    yield home
    home.close()


@pytest.fixture(scope="module")
def test_dags_home(
    tmp_path_factory: pytest.TempPathFactory, airflow_template_db: Path
) -> Iterator[AirflowHome]:
    """An AIRFLOW_HOME whose DAGS_FOLDER is this directory's ``dag_files/`` (the timeout DAGs)."""
    path = tmp_path_factory.mktemp("airflow-test-dags")
    home = AirflowHome.create(path, airflow_template_db, dags_folder=TEST_DAG_FILES)
    yield home
    home.close()


def raised_kirin_errors(output: str) -> list[tuple[str, str]]:
    """``(class name, message)`` of each Kirin exception a task's traceback in ``output`` ends with.

    A plain traceback ends with ``airflow_provider_kirin.exceptions.<Class>: <message>``; Airflow
    3.0's ``dags test`` prints a rich traceback instead, ending with ``<Class>: <message>`` wrapped
    over the following lines up to a blank one.
    """
    plain = re.findall(r"^airflow_provider_kirin\.exceptions\.(\w+): (.*)$", output, flags=re.MULTILINE)
    if plain:
        return plain
    wrapped = re.findall(r"^(Kirin\w+): (.*?)(?:\n[ \t]*\n|\Z)", output, flags=re.MULTILINE | re.DOTALL)
    return [(name, " ".join(message.split())) for name, message in wrapped]


# -- 1. parsing ---------------------------------------------------------------------------------------
def test_example_dags_parse_in_a_dagbag() -> None:
    from airflow.dag_processing.dagbag import DagBag

    files = sorted(p.name for p in EXAMPLE_DAGS.glob("*.py"))
    assert files == sorted(EXPECTED_DAGS), (
        "example_dags/ changed: update EXPECTED_DAGS and add a success test"
    )

    bag = DagBag(dag_folder=str(EXAMPLE_DAGS))

    assert bag.import_errors == {}
    assert set(bag.dag_ids) == set().union(*EXPECTED_DAGS.values())
    for file_name, dag_ids in EXPECTED_DAGS.items():
        assert {d.dag_id for d in bag.dags.values() if Path(d.fileloc).name == file_name} == dag_ids
    for dag in bag.dags.values():
        assert dag.tasks, f"{dag.dag_id} has no tasks"
    deferrable = bag.dags["example_kirin_deferrable_operator"].get_task("generate")
    assert deferrable.deferrable is True
    assert deferrable.wait_for_completion is True
    sense = bag.dags["example_kirin_submit_and_sense"]
    assert sense.get_task("wait_for_video").upstream_task_ids == {"submit"}


def test_example_dags_have_no_import_errors_in_the_cli(example_home: AirflowHome) -> None:
    errors = example_home.cli("dags", "list-import-errors", "--local", "--output", "json", warm=True)
    assert errors.returncode == 0, errors.stdout + errors.stderr
    assert json_output(errors.stdout) == []

    listed = example_home.cli("dags", "list", "--local", "--output", "json", warm=True)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    dag_ids = {row["dag_id"] for row in json_output(listed.stdout)}
    assert dag_ids == set().union(*EXPECTED_DAGS.values())


# -- 2a. success path of every example DAG -------------------------------------------------------------
def _assert_result(result: Any, emulator: EmulatorServer, *, size: str, cost: str = "0.35") -> str:
    """A ``kirin_result`` dict of a completed generation the emulator really served; its task id."""
    assert isinstance(result, dict), result
    kirin_task_id = result["task_id"]
    assert result["status"] == "completed"
    assert result["videos"] == [
        {"url": f"{emulator.url}/v1/files/{kirin_task_id}/video.mp4", "type": "video", "size": size}
    ]
    assert result["cost"] == cost
    assert emulator.task(kirin_task_id)["status"] == "completed"
    return str(kirin_task_id)


def _assert_kept(stored: str, directory: Path, kirin_task_id: str) -> dict[str, Any]:
    """A video kept by ``KirinDownloadVideoOperator`` in ``directory``; returns its sidecar."""
    from airflow_provider_kirin.emulator.app import load_sample_video

    assert stored.startswith("file://"), stored
    video = Path(stored.removeprefix("file://"))
    assert video.parent == directory
    assert video.name == f"{kirin_task_id}.mp4"
    assert video.read_bytes() == load_sample_video()
    sidecar: dict[str, Any] = json.loads(video.with_name(f"{video.name}.json").read_text())
    assert sidecar["kirin_task_id"] == kirin_task_id
    assert sidecar["bytes"] == len(load_sample_video())
    return sidecar


def _run_date(run: DagsTestRun, column: str) -> str:
    """``YYYY-MM-DD`` of a dag run's date column (``{{ dag_run.run_after | ds }}`` renders ``run_after``)."""
    assert column in ("run_after", "data_interval_start")
    ((value,),) = run.home.query(
        f"SELECT {column} FROM dag_run WHERE dag_id = ? AND run_id = ?", (run.dag_id, run.run_id)
    )
    return str(value)[:10]


@pytest.mark.kirin_emulator(**FAST)
@pytest.mark.timeout(200)
def test_deferrable_operator_example_succeeds(
    example_home: AirflowHome, dags_test: Callable[..., DagsTestRun], kirin_emulator: EmulatorServer
) -> None:
    dag_id = "example_kirin_deferrable_operator"
    run = dags_test(example_home, dag_id)

    assert run.returncode == 0, run.tail()
    assert run.state == "success"
    assert run.task_states() == {("generate", -1): "success"}
    assert kirin_emulator.stats()["creates"] == 1
    kirin_result = run.xcom("generate", "kirin_result")
    kirin_task_id = _assert_result(kirin_result, kirin_emulator, size="320x180")
    assert run.xcom("generate", "return_value") == kirin_task_id
    assert run.xcom("generate", "kirin_task_id") == kirin_task_id
    # The "Kirin video" extra link, computed when the task finished, opens the video.
    link = run.xcom("generate", "_link_KirinVideoLink")
    assert link == kirin_result["videos"][0]["url"]
    # The task really deferred, and the trigger ran inline.
    assert "DEFERRED" in run.output
    assert "Trigger completed" in run.output
    created = kirin_emulator.state.get(kirin_task_id)
    assert created is not None
    assert created.params["prompt"] == "A hummingbird hovering over a red flower, slow motion, macro lens"
    assert created.params["negative_prompt"] == "blurry, low quality"


@pytest.mark.kirin_emulator(**FAST)
@pytest.mark.timeout(200)
def test_mapped_example_makes_one_generation_per_prompt(
    example_home: AirflowHome, dags_test: Callable[..., DagsTestRun], kirin_emulator: EmulatorServer
) -> None:
    dag_id = "example_kirin_mapped"
    run = dags_test(example_home, dag_id)

    assert run.returncode == 0, run.tail()
    assert run.state == "success"
    assert run.task_states() == {("generate", i): "success" for i in range(3)}
    assert kirin_emulator.stats()["creates"] == 3
    results = run.xcoms("generate", "kirin_result")
    assert sorted(results) == [0, 1, 2]
    task_ids = {_assert_result(results[i], kirin_emulator, size="180x320") for i in range(3)}
    assert len(task_ids) == 3
    prompts = sorted(kirin_emulator.state.get(t).params["prompt"] for t in task_ids)  # type: ignore[union-attr]
    assert prompts == sorted(MAPPED_PROMPTS)


@pytest.mark.kirin_emulator(**FAST)
@pytest.mark.timeout(200)
def test_submit_and_sense_example_succeeds(
    example_home: AirflowHome, dags_test: Callable[..., DagsTestRun], kirin_emulator: EmulatorServer
) -> None:
    dag_id = "example_kirin_submit_and_sense"
    run = dags_test(example_home, dag_id)

    assert run.returncode == 0, run.tail()
    assert run.state == "success"
    assert run.task_states() == {
        ("submit", -1): "success",
        ("wait_for_video", -1): "success",
    }
    assert kirin_emulator.stats()["creates"] == 1
    submitted = run.xcom("submit", "return_value")
    sensed = run.xcom("wait_for_video", "kirin_result")
    assert _assert_result(sensed, kirin_emulator, size="320x180") == submitted
    assert run.xcom("wait_for_video", "return_value") == sensed


@pytest.mark.kirin_emulator(**FAST)
@pytest.mark.timeout(200)
def test_taskflow_hook_example_generates_and_downloads(
    example_home: AirflowHome,
    dags_test: Callable[..., DagsTestRun],
    kirin_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    from airflow_provider_kirin.emulator.app import load_sample_video

    dag_id = "example_kirin_taskflow_hook"
    out_dir = tmp_path / "videos"
    run = dags_test(example_home, dag_id, AIRFLOW_VAR_KIRIN_VIDEO_DIR=str(out_dir))

    assert run.returncode == 0, run.tail()
    assert run.state == "success"
    assert run.task_states() == {
        ("generate", -1): "success",
        ("download", -1): "success",
    }
    assert kirin_emulator.stats()["creates"] == 1
    generated = run.xcom("generate", "return_value")
    kirin_task_id = _assert_result(generated, kirin_emulator, size="240x240")
    saved = Path(run.xcom("download", "return_value"))
    assert saved == out_dir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", run.run_id) + ".mp4")  # never the server's id
    assert saved.read_bytes() == load_sample_video("1:1")
    assert [d["task_id"] for d in kirin_emulator.downloads()] == [kirin_task_id]
    assert f"(cost {generated['cost']} USD)" in run.output


@pytest.mark.kirin_emulator(**FAST)
@pytest.mark.timeout(200)
def test_keep_video_example_stores_the_video_with_a_sidecar_and_an_asset_event(
    example_home: AirflowHome,
    dags_test: Callable[..., DagsTestRun],
    kirin_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    dag_id = "example_kirin_keep_video"
    destination = tmp_path / "kept"
    run = dags_test(example_home, dag_id, AIRFLOW_VAR_KIRIN_VIDEO_DESTINATION=destination.as_uri())

    assert run.returncode == 0, run.tail()
    assert run.state == "success"
    assert run.task_states() == {
        ("generate", -1): "success",
        ("keep_video", -1): "success",
    }
    assert kirin_emulator.stats()["creates"] == 1
    generated = run.xcom("generate", "kirin_result")
    kirin_task_id = _assert_result(generated, kirin_emulator, size="320x180")
    (stored,) = run.xcom("keep_video", "return_value")
    sidecar = _assert_kept(stored, destination / _run_date(run, "run_after"), kirin_task_id)
    assert sidecar["cost"] == "0.35"
    assert sidecar["prompt"] == "A red fox trotting through fresh snow at sunrise, cinematic"
    events = example_home.query(
        "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
        "WHERE a.name = 'kirin_videos' AND e.source_dag_id = ? AND e.source_run_id = ?",
        (dag_id, run.run_id),
    )
    assert len(events) == 1
    extra = decode_xcom(events[0][0])
    assert extra == {"paths": [stored], "kirin_task_id": kirin_task_id, "cost": "0.35"}


@pytest.mark.kirin_emulator(**FAST)
@pytest.mark.timeout(200)
def test_asset_consumer_example_runs_without_generating(
    example_home: AirflowHome, dags_test: Callable[..., DagsTestRun], kirin_emulator: EmulatorServer
) -> None:
    # A manual run has no triggering asset events: the DAG announces nothing and spends nothing.
    dag_id = "example_kirin_asset_consumer"
    run = dags_test(example_home, dag_id)

    assert run.returncode == 0, run.tail()
    assert run.state == "success"
    assert run.task_states() == {("announce", -1): "success"}
    assert run.xcom("announce", "return_value") == []
    assert kirin_emulator.stats()["creates"] == 0


@pytest.mark.kirin_emulator(**FAST)
@pytest.mark.timeout(200)
def test_cost_report_example_keeps_every_video_and_sums_the_cost(
    example_home: AirflowHome,
    dags_test: Callable[..., DagsTestRun],
    kirin_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    dag_id = "example_kirin_cost_report"
    destination = tmp_path / "kept"
    run = dags_test(example_home, dag_id, AIRFLOW_VAR_KIRIN_VIDEO_DESTINATION=destination.as_uri())

    assert run.returncode == 0, run.tail()
    assert run.state == "success"
    assert run.task_states() == {
        **{("generate", i): "success" for i in range(2)},
        **{("keep_video", i): "success" for i in range(2)},
        ("total_cost", -1): "success",
    }
    assert kirin_emulator.stats()["creates"] == 2
    results = run.xcoms("generate", "kirin_result")
    task_ids = [_assert_result(results[i], kirin_emulator, size="320x180") for i in range(2)]
    kept = run.xcoms("keep_video", "return_value")
    run_dir = destination / run.run_id.replace(":", "-")
    for i in range(2):
        (stored,) = kept[i]
        assert _assert_kept(stored, run_dir, task_ids[i])["cost"] == "0.35"
    assert run.xcom("total_cost", "return_value") == "0.70"


@pytest.mark.kirin_emulator(**FAST)
@pytest.mark.timeout(240)
def test_scheduled_example_generates_the_prompts_of_the_day(
    example_home: AirflowHome,
    dags_test: Callable[..., DagsTestRun],
    kirin_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    dag_id = "example_kirin_scheduled"
    # The pool the DAG's docstring asks for (deferred tasks count against the account's limit).
    pool = example_home.cli(
        "pools", "set", "kirin", "4", "Kirin account limit", "--include-deferred", warm=True
    )
    assert pool.returncode == 0, pool.stdout + pool.stderr
    destination = tmp_path / "kept"
    prompt_lines = [
        line for line in (EXAMPLE_DAGS / "prompts" / "daily.txt").read_text().splitlines() if line.strip()
    ]

    run = dags_test(example_home, dag_id, AIRFLOW_VAR_KIRIN_VIDEO_DESTINATION=destination.as_uri())

    assert run.returncode == 0, run.tail()
    assert run.state == "success"
    count = len(prompt_lines)
    assert count >= 1
    assert run.task_states() == {
        ("prompts_of_the_day", -1): "success",
        **{("generate", i): "success" for i in range(count)},
        **{("keep_video", i): "success" for i in range(count)},
    }
    assert kirin_emulator.stats()["creates"] == count
    ds = _run_date(run, "data_interval_start")
    prompts = run.xcom("prompts_of_the_day", "return_value")
    assert len(prompts) == count
    assert all("{{" not in p and "}}" not in p for p in prompts), prompts
    assert any(ds in p for p in prompts), (ds, prompts)
    results = run.xcoms("generate", "kirin_result")
    kept = run.xcoms("keep_video", "return_value")
    sent = []
    for i in range(count):
        kirin_task_id = _assert_result(results[i], kirin_emulator, size="320x180")
        sent.append(kirin_emulator.state.get(kirin_task_id).params["prompt"])  # type: ignore[union-attr]
        (stored,) = kept[i]
        _assert_kept(stored, destination / "daily" / ds, kirin_task_id)
    assert sorted(sent) == sorted(prompts)


@pytest.mark.kirin_emulator(**FAST)
@pytest.mark.timeout(240)
def test_batch_catalogue_example_keeps_videos_and_manifest_with_the_cost(
    example_home: AirflowHome,
    dags_test: Callable[..., DagsTestRun],
    kirin_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    """The batch example as written (its default poll knobs; no test-only settings): one task,
    one create per catalogue line, the manifest and the videos under the Variable's destination."""
    from airflow_provider_kirin.emulator.app import load_sample_video

    dag_id = "example_kirin_batch_catalogue"
    destination = tmp_path / "catalogue"
    lines = [
        line
        for line in (EXAMPLE_DAGS / "prompts" / "catalogue.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    run = dags_test(example_home, dag_id, AIRFLOW_VAR_KIRIN_CATALOGUE_DESTINATION=destination.as_uri())

    assert run.returncode == 0, run.tail()
    assert run.task_states() == {
        ("catalogue_prompts", -1): "success",
        ("catalogue", -1): "success",
        ("cost_summary", -1): "success",
    }
    assert kirin_emulator.stats()["creates"] == len(lines) == 3
    folder = destination / _run_date(run, "data_interval_start")
    summary = run.xcom("catalogue", "return_value")
    assert summary == {
        "counts": {"completed": 3},
        "total_cost": "1.05",
        "spent_total": "1.05",
        "spent_this_try": "1.05",
        "max_cost": None,
        "manifest": (folder / "manifest.jsonl").as_uri(),
        "items": 3,
        "failed": 0,
    }
    rows = [json.loads(row) for row in (folder / "manifest.jsonl").read_text().splitlines()]
    assert [row["key"] for row in rows] == [line.split("|")[0].strip() for line in lines]
    for row in rows:
        assert kirin_emulator.state.tasks[row["task_id"]].params["aspect_ratio"] == "1:1"
        assert (folder / f"{row['index']:05d}-{row['key']}.mp4").read_bytes() == load_sample_video("1:1")
    line = run.xcom("cost_summary", "return_value")
    assert line == f"3 of 3 clips generated, 0 failed, total cost 1.05 USD; manifest {summary['manifest']}"


# -- 2b. every seed error code fails the task with its typed exception ---------------------------------
@pytest.mark.kirin_emulator(**FAST)
@pytest.mark.timeout(200)
@pytest.mark.parametrize(
    ("code", "error_class"), sorted(SEED_ERROR_CODES.items()), ids=sorted(SEED_ERROR_CODES)
)
def test_seed_error_code_fails_the_deferrable_operator_with_its_typed_error(
    example_home: AirflowHome,
    dags_test: Callable[..., DagsTestRun],
    kirin_emulator: EmulatorServer,
    code: str,
    error_class: type[Exception],
) -> None:
    dag_id = "example_kirin_deferrable_operator"
    kirin_emulator.add_fault(Fault(kind="fail_task", endpoint="create", code=code))

    run = dags_test(example_home, dag_id)

    assert run.returncode != 0, run.tail()
    assert "DagRun failed" in run.output
    assert run.state == "failed"
    assert run.task_states() == {("generate", -1): "failed"}
    assert kirin_emulator.stats()["creates"] == 1
    kirin_task_id = run.xcom("generate", "kirin_task_id")
    envelope = kirin_emulator.task(kirin_task_id)
    assert envelope is not None
    assert envelope["status"] == "failed"
    assert envelope["error"]["code"] == code
    assert run.xcom("generate", "kirin_result") is None
    # The task's traceback ends with exactly this class, carrying the code and the Kirin task id.
    raised = raised_kirin_errors(run.output)
    assert raised, f"no Kirin exception in the output:\n{run.tail()}"
    name, message = raised[-1]
    assert name == error_class.__name__, message
    assert f"code={code}" in message
    assert f"task_id={kirin_task_id}" in message


# -- 2c. a wait longer than the timeout ends in KirinTaskTimeoutError ----------------------------------
@pytest.mark.kirin_emulator(pending_seconds=0.2, processing_seconds=120.0)
@pytest.mark.timeout(200)
@pytest.mark.parametrize(
    ("dag_id", "waiting_task"),
    [
        ("kirin_test_deferrable_operator_timeout", "generate"),
        ("kirin_test_sync_operator_timeout", "generate"),
        ("kirin_test_sensor_timeout", "wait_for_video"),
    ],
)
def test_wait_past_the_timeout_raises_kirin_task_timeout_error(
    test_dags_home: AirflowHome,
    dags_test: Callable[..., DagsTestRun],
    kirin_emulator: EmulatorServer,
    dag_id: str,
    waiting_task: str,
) -> None:
    run = dags_test(test_dags_home, dag_id, KIRIN_TEST_TIMEOUT="3")

    assert run.returncode != 0, run.tail()
    assert run.state == "failed"
    assert run.task_states()[(waiting_task, -1)] == "failed"
    assert kirin_emulator.stats()["creates"] == 1
    (envelope,) = (kirin_emulator.task(t) for t in list(kirin_emulator.state.tasks))
    assert envelope is not None
    assert envelope["status"] in ("pending", "processing")
    raised = raised_kirin_errors(run.output)
    assert raised, f"no Kirin exception in the output:\n{run.tail()}"
    name, message = raised[-1]
    assert name == KirinTaskTimeoutError.__name__, message
    assert f"task_id={envelope['task_id']}" in message
