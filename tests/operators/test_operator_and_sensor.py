"""The operator and sensor on a real Airflow (``airflow dags test`` and ``airflow tasks test``, in the
home's warm CLI process) against the emulator: templating and validation before spend, XComs, the
extra link, waiting in the worker, poke and deferrable sensors, and ``soft_fail`` on a timeout."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from airflow_helpers import AirflowHome, DagsTestRun

from airflow_provider_kirin.emulator import EmulatorConfig, EmulatorServer

pytestmark = pytest.mark.airflow  # starts real Airflow processes: not in `make test-fast`

DAG_FILES = Path(__file__).resolve().parent / "dag_files"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, airflow_template_db: Path) -> Iterator[AirflowHome]:
    home = AirflowHome.create(
        tmp_path_factory.mktemp("airflow-operators"), airflow_template_db, dags_folder=DAG_FILES
    )
    yield home
    home.close()


@pytest.mark.timeout(240)
def test_success_paths(
    home: AirflowHome, dags_test: Callable[..., DagsTestRun], kirin_emulator: EmulatorServer
) -> None:
    run = dags_test(home, "kirin_cases_ok")
    assert run.state == "success", run.output[-4000:]
    assert set(run.task_states().values()) == {"success"}
    assert kirin_emulator.stats()["creates"] == 3  # submit_only, from_file, sync_wait; sensors create nothing

    xcom = run.xcom

    task_id = xcom("submit_only")
    assert isinstance(task_id, str)
    assert task_id.startswith("kt_")
    assert xcom("submit_only", "kirin_task_id") == task_id
    assert xcom("submit_only", "kirin_request")["prompt"] == "A red fox at dawn"

    from_file = xcom("from_file", "kirin_request")
    assert from_file["prompt"] == "A red fox trotting through fresh snow, rendered from a template file"
    assert (from_file["duration"], from_file["mode"]) == ("10", "pro")

    result = xcom("sync_wait", "kirin_result")
    assert result["status"] == "completed"
    assert result["cost"] == "0.35"
    assert result["videos"][0]["url"].startswith(kirin_emulator.url)
    assert xcom("sync_wait", "_link_KirinVideoLink") == result["videos"][0]["url"]

    for sensor in ("sensor_poke", "sensor_deferrable"):
        sensed = xcom(sensor)
        assert sensed["task_id"] == task_id
        assert sensed["status"] == "completed"
        assert xcom(sensor, "_link_KirinVideoLink") == sensed["videos"][0]["url"]
    assert "Kirin task " + task_id + " completed: cost 0.35 USD" in run.output


@pytest.mark.timeout(180)
def test_bad_input_after_templating_fails_before_any_request(
    home: AirflowHome, dags_test: Callable[..., DagsTestRun], kirin_emulator: EmulatorServer
) -> None:
    run = dags_test(home, "kirin_cases_bad_input")
    output = run.output
    assert run.state == "failed"
    assert set(run.task_states().values()) == {"failed"}
    assert "prompt='' is invalid" in output
    assert "callback_url='ftp://files.example.com/hook' is invalid" in output  # rendered, then checked
    assert "aspect_ratio='4:3' is invalid" in output
    stats = kirin_emulator.stats()
    assert stats["create_requests"] + stats["lookups"] + stats["gets"] == 0  # nothing was sent


@pytest.mark.timeout(180)
def test_sensor_timeout_raises_kirin_timeout_and_soft_fail_skips(
    home: AirflowHome, dags_test: Callable[..., DagsTestRun], kirin_emulator_factory: object
) -> None:
    slow = kirin_emulator_factory(EmulatorConfig(pending_seconds=0.2, processing_seconds=120))  # type: ignore[operator]
    run = dags_test(home, "kirin_cases_soft_fail", server=slow)
    assert run.state == "failed"  # times_out failed the run; gives_up was only skipped
    states = run.task_states()
    assert states[("submit", -1)] == "success"
    assert states[("gives_up", -1)] == "skipped"
    assert states[("times_out", -1)] == "failed"
    assert "KirinTaskTimeoutError" in run.output


@pytest.mark.timeout(300)
def test_rerun_follows_the_inputs_reuses_the_same_and_takes_a_variant(
    home: AirflowHome, kirin_emulator: EmulatorServer
) -> None:
    """Run, then re-run the same task instance with ``airflow tasks test``: unchanged inputs reuse the
    generation (zero creates), a changed prompt makes exactly one new one carrying the new prompt,
    and a ``variant`` asks for a fresh take of the same prompt."""
    dag_id, conn = "kirin_cases_rerun", {"AIRFLOW_CONN_KIRIN_DEFAULT": kirin_emulator.airflow_conn_json()}

    def run(*args: str, prompt: str, variant: str = "") -> str:
        env = {**conn, "AIRFLOW_VAR_KIRIN_RERUN_PROMPT": prompt, "AIRFLOW_VAR_KIRIN_RERUN_VARIANT": variant}
        result = home.cli(*args, extra_env=env, timeout=180, warm=True)
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
        return result.stdout + result.stderr

    def creates() -> int:
        return int(kirin_emulator.stats()["creates"])

    run("dags", "test", dag_id, prompt="A heron on a misty lake")
    latest = home.latest_run(dag_id)
    assert latest is not None
    assert latest[1] == "success"
    run_id = latest[0]
    first = home.xcom(dag_id, run_id, "generate", "return_value")
    assert creates() == 1

    def rerun(prompt: str, variant: str = "") -> str:
        run("tasks", "test", dag_id, "generate", run_id, prompt=prompt, variant=variant)
        return str(home.xcom(dag_id, run_id, "generate", "return_value"))

    assert rerun("A heron on a misty lake") == first  # same inputs: reused, nothing paid
    assert creates() == 1

    changed = rerun("A heron taking off from a misty lake")  # a new prompt: one new generation
    assert creates() == 2
    assert changed != first
    assert (kirin_emulator.task_request(changed) or {})["prompt"] == "A heron taking off from a misty lake"
    assert (kirin_emulator.task_request(first) or {})["prompt"] == "A heron on a misty lake"

    take2 = rerun("A heron taking off from a misty lake", variant="2")  # a deliberate fresh take
    assert creates() == 3
    assert take2 not in (first, changed)
    assert rerun("A heron on a misty lake") == first  # back to the first prompt: its video again
    assert creates() == 3
