"""End to end on a real Airflow 3: api-server, scheduler (LocalExecutor), triggerer and dag-processor
as separate processes on a temporary AIRFLOW_HOME with SQLite, against the bundled emulator.

The deferrable example DAG is unpaused and triggered through the CLI; the test watches the metadata
DB until the ``generate`` task is ``deferred`` while Kirin is still rendering, then waits for the run
to succeed and reads the ``kirin_result`` XCom.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow_helpers import EXAMPLE_DAGS, AirflowHome, free_port, wait_until

from airflow_provider_kirin.emulator import EmulatorServer

DAG_ID = "example_kirin_deferrable_operator"
RUN_ID = "e2e_kirin_deferrable_run"
#: Long enough to see the task deferred (the trigger polls while the emulator says pending/processing).
PROCESSING_SECONDS = 8.0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def real_airflow(
    tmp_path: Path, airflow_template_db: Path, kirin_emulator: EmulatorServer
) -> Iterator[AirflowHome]:
    """All four Airflow components running on one home; stopped (process groups killed) afterwards."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    home = AirflowHome.create(
        tmp_path / "airflow",
        airflow_template_db,
        dags_folder=EXAMPLE_DAGS,
        settings={
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": api_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW_CONN_KIRIN_DEFAULT": kirin_emulator.airflow_conn_json(),
            "KIRIN_EXAMPLE_FIRST_POLL_DELAY": "0.5",
            "KIRIN_EXAMPLE_POLL_INTERVAL": "0.5",
        },
    )
    try:
        home.start("api-server", "api-server", "--port", str(port), "--host", "127.0.0.1")
        home.start("dag-processor", "dag-processor")
        home.start("scheduler", "scheduler")
        home.start("triggerer", "triggerer")
        home.api_url = api_url  # type: ignore[attr-defined]
        yield home
    finally:
        home.stop_all()


@pytest.mark.kirin_emulator(pending_seconds=0.5, processing_seconds=PROCESSING_SECONDS)
@pytest.mark.timeout(170)
def test_deferrable_operator_on_real_airflow(real_airflow: AirflowHome, kirin_emulator: EmulatorServer) -> None:
    home = real_airflow
    diag = home.diagnostics

    def components_alive() -> None:
        dead = [p.name for p in home.processes if not p.alive]
        assert not dead, f"Airflow components exited early: {dead}\n{diag()}"

    wait_until(
        lambda: _http_ok(f"{home.api_url}/api/v2/monitor/health"),  # type: ignore[attr-defined]
        timeout=60,
        what="the api-server's health endpoint",
        diagnostics=diag,
    )
    wait_until(
        lambda: home.query("SELECT dag_id FROM dag WHERE dag_id = ? AND is_stale = 0", (DAG_ID,)),
        timeout=60,
        what=f"the dag-processor to store {DAG_ID}",
        diagnostics=diag,
    )
    components_alive()

    unpause = home.cli("dags", "unpause", DAG_ID, "--yes")
    assert unpause.returncode == 0, unpause.stdout + unpause.stderr
    trigger = home.cli("dags", "trigger", DAG_ID, "--run-id", RUN_ID)
    assert trigger.returncode == 0, trigger.stdout + trigger.stderr

    seen: list[str | None] = []
    emulator_status_while_deferred: list[str] = []

    def deferred_while_rendering() -> bool:
        components_alive()
        state = home.task_states(DAG_ID, RUN_ID).get(("generate", -1))
        if not seen or seen[-1] != state:
            seen.append(state)
        if state != "deferred":
            return False
        tasks = kirin_emulator.state.tasks
        emulator_status_while_deferred.extend(t.status_at() for t in list(tasks.values()))
        return True

    wait_until(
        deferred_while_rendering,
        timeout=90,
        interval=0.3,
        what=f"task 'generate' to be deferred (states seen: {seen})",
        diagnostics=diag,
    )
    # The generation was still running on Kirin's side while the task waited in the triggerer.
    assert emulator_status_while_deferred
    assert set(emulator_status_while_deferred) <= {"pending", "processing"}, emulator_status_while_deferred

    def run_finished() -> str | None:
        components_alive()
        state = home.run_state(DAG_ID, RUN_ID)
        return state if state in ("success", "failed") else None

    final = wait_until(run_finished, timeout=90, what="the dag run to finish", diagnostics=diag)
    assert final == "success", f"run ended {final}; task states {home.task_states(DAG_ID, RUN_ID)}\n{diag()}"
    assert home.task_states(DAG_ID, RUN_ID) == {("generate", -1): "success"}

    result = home.xcom(DAG_ID, RUN_ID, "generate", "kirin_result")
    assert isinstance(result, dict), result
    assert result["status"] == "completed"
    kirin_task_id = result["task_id"]
    assert result["videos"][0]["url"] == f"{kirin_emulator.url}/v1/files/{kirin_task_id}/video.mp4"
    assert result["cost"] == "0.35"
    assert home.xcom(DAG_ID, RUN_ID, "generate", "return_value") == kirin_task_id
    assert kirin_emulator.stats()["creates"] == 1
    assert kirin_emulator.task(kirin_task_id)["status"] == "completed"
    time.sleep(0)  # keep the import used when timings change
