"""End to end on a real Airflow 3: api-server, scheduler (LocalExecutor), triggerer and dag-processor
as separate processes on a temporary AIRFLOW_HOME with SQLite, against the bundled emulator.

The deferrable example DAG is unpaused and triggered through the CLI; the test watches the metadata
DB until the ``generate`` task is ``deferred`` while Kirin is still rendering, then waits for the run
to succeed and reads the ``kirin_result`` XCom. Every process is started here and stopped (its whole
process group) in the fixture's finalizer, whatever happens.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from airflow_helpers import EXAMPLE_DAGS, AirflowHome, free_port, wait_until

from airflow_provider_kirin.emulator import EmulatorServer

DAG_ID = "example_kirin_deferrable_operator"
RUN_ID = "e2e_kirin_deferrable_run"
#: Long enough to see the task deferred while the emulator still reports pending/processing.
PROCESSING_SECONDS = 8.0
#: Every wait of the test together stays inside this budget (and inside the pytest timeout).
BUDGET_SECONDS = 150.0
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


@dataclass
class RealAirflow:
    home: AirflowHome
    api_url: str


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def real_airflow(
    tmp_path: Path, airflow_template_db: Path, kirin_emulator: EmulatorServer
) -> Iterator[RealAirflow]:
    """The four Airflow components running on one fresh home; all stopped afterwards."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    home = AirflowHome.create(
        tmp_path / "airflow",
        airflow_template_db,
        dags_folder=EXAMPLE_DAGS,
        settings={
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            # A [core] option in Airflow 3.3 (not a [simple_auth_manager] section).
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            # Workers (task supervisors) report to the api-server's execution API.
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
        home.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(port))
        home.start("dag-processor", "dag-processor")
        # No log-serving side servers: they would bind fixed ports (8793/8794) on all interfaces.
        home.start("scheduler", "scheduler", "--skip-serve-logs")
        home.start("triggerer", "triggerer", "--skip-serve-logs")
        yield RealAirflow(home=home, api_url=api_url)
    finally:
        home.stop_all()


@pytest.mark.kirin_emulator(pending_seconds=0.5, processing_seconds=PROCESSING_SECONDS)
@pytest.mark.timeout(BUDGET_SECONDS + 30)
def test_deferrable_operator_defers_to_the_triggerer_and_succeeds(
    real_airflow: RealAirflow, kirin_emulator: EmulatorServer
) -> None:
    home = real_airflow.home
    deadline = time.monotonic() + BUDGET_SECONDS

    def remaining() -> float:
        return max(1.0, deadline - time.monotonic())

    def diagnostics() -> str:
        return home.diagnostics()

    def assert_components_alive() -> None:
        dead = [p.name for p in home.processes if not p.alive]
        assert not dead, f"Airflow components exited early: {dead}\n{diagnostics()}"

    # 1. The api-server answers and the dag-processor has stored the DAG.
    wait_until(
        lambda: _http_ok(f"{real_airflow.api_url}/api/v2/monitor/health"),
        timeout=remaining(),
        what="the api-server's health endpoint",
        diagnostics=diagnostics,
    )
    wait_until(
        lambda: home.query("SELECT 1 FROM dag WHERE dag_id = ? AND is_stale = 0", (DAG_ID,)),
        timeout=remaining(),
        what=f"the dag-processor to store {DAG_ID}",
        diagnostics=diagnostics,
    )
    assert_components_alive()

    # 2. Unpause and trigger through the CLI.
    unpause = home.cli("dags", "unpause", DAG_ID, "--yes")
    assert unpause.returncode == 0, unpause.stdout + unpause.stderr
    assert home.query("SELECT is_paused FROM dag WHERE dag_id = ?", (DAG_ID,)) == [(0,)]
    trigger = home.cli("dags", "trigger", DAG_ID, "--run-id", RUN_ID)
    assert trigger.returncode == 0, trigger.stdout + trigger.stderr

    # 3. The task defers while the generation is still running on Kirin's side.
    states_seen: list[str | None] = []
    while_deferred: dict[str, object] = {}

    def deferred_while_rendering() -> bool:
        assert_components_alive()
        rows = home.query(
            "SELECT state, next_method, trigger_id FROM task_instance "
            "WHERE dag_id = ? AND run_id = ? AND task_id = 'generate'",
            (DAG_ID, RUN_ID),
        )
        state = rows[0][0] if rows else None
        if not states_seen or states_seen[-1] != state:
            states_seen.append(state)
        if state != "deferred":
            return False
        while_deferred["next_method"], while_deferred["trigger_id"] = rows[0][1], rows[0][2]
        while_deferred["kirin"] = sorted(t.status_at() for t in list(kirin_emulator.state.tasks.values()))
        return True

    wait_until(
        deferred_while_rendering,
        timeout=remaining(),
        interval=0.25,
        what=f"task 'generate' to be deferred (states seen: {states_seen})",
        diagnostics=diagnostics,
    )
    assert while_deferred["next_method"] == "execute_complete"
    assert while_deferred["trigger_id"] is not None
    assert while_deferred["kirin"] in (["pending"], ["processing"]), while_deferred

    # 4. The triggerer fires, a worker resumes the task, and the run succeeds.
    def run_finished() -> str | None:
        assert_components_alive()
        state = home.run_state(DAG_ID, RUN_ID)
        return state if state in ("success", "failed") else None

    final = wait_until(
        run_finished, timeout=remaining(), what="the dag run to finish", diagnostics=diagnostics
    )
    states = home.task_states(DAG_ID, RUN_ID)
    assert final == "success", f"run ended {final}; task states {states}\n{diagnostics()}"
    assert states == {("generate", -1): "success"}

    # 5. The result is in XCom and matches what the emulator served.
    result = home.xcom(DAG_ID, RUN_ID, "generate", "kirin_result")
    assert isinstance(result, dict), result
    kirin_task_id = result["task_id"]
    assert result["status"] == "completed"
    assert result["videos"][0]["url"] == f"{kirin_emulator.url}/v1/files/{kirin_task_id}/video.mp4"
    assert result["cost"] == "0.35"
    assert home.xcom(DAG_ID, RUN_ID, "generate", "return_value") == kirin_task_id
    assert kirin_emulator.stats()["creates"] == 1
    assert kirin_emulator.task(kirin_task_id)["status"] == "completed"

    # 6. The wait happened in the triggerer process: its log of this task instance shows the trigger.
    task_logs = home.path / "logs" / f"dag_id={DAG_ID}" / f"run_id={RUN_ID}" / "task_id=generate"
    trigger_logs = "".join(p.read_text(errors="replace") for p in task_logs.glob("*.log.trigger.*.log"))
    assert kirin_task_id in trigger_logs, f"no trigger log mentions {kirin_task_id} in {task_logs}"
    assert "Trigger fired event" in trigger_logs
