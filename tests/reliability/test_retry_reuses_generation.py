"""An Airflow retry after the first try's worker was killed once its create had reached Kirin reuses
the task that create made: one generation, paid once.

A real Airflow runs on a temporary AIRFLOW_HOME with SQLite: an api-server (the Execution API the
workers talk to) and ``airflow dags test --use-executor``, which runs the DAG run's scheduling loop
(``DagRun.update_state``: retries, ``try_number``, ``retry_delay``) and hands each try to a real
LocalExecutor worker: a supervisor process and the task process under it.

1. The emulator records the create of try 1 and holds its response back (fault ``delay`` with
   ``after_processing``), so the task process is waiting for an answer that Kirin already acted on.
2. Once the emulator counts ``creates == 1``, the test SIGKILLs that task process (its pid is in the
   metadata DB): the supervisor reports the try as failed with retries left, ``up_for_retry``.
3. Airflow runs try 2 in a new task process. The operator derives the same ``external_task_id``
   (same dag, run, task, map index), finds the task by it and reuses it.

``tests/reliability/dags/kirin_reliability_retry.py`` is the DAG (``retries=1``, ``retry_delay=0``).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from airflow_helpers import AirflowHome, api_server_settings, free_port, http_ok, wait_until

from airflow_provider_kirin.core.idempotency import derive_external_task_id
from airflow_provider_kirin.emulator import EmulatorConfig, EmulatorServer
from airflow_provider_kirin.models import KirinVideoRequest

pytestmark = pytest.mark.airflow  # starts real Airflow processes: not in `make test-fast`

DAG_ID = "kirin_reliability_retry"
TASK_ID = "generate"
LOGICAL_DATE = "2024-03-01T00:00:00+00:00"
DAGS_FOLDER = Path(__file__).resolve().parent / "dags"
#: How long the emulator holds the first create's response back: far longer than the test needs to
#: see the create and kill the worker, far shorter than the connection's read timeout.
HOLD_SECONDS = 30.0


def _ancestors(pid: int) -> list[int]:
    """``pid``'s parent, grandparent, ... (from ``/proc``)."""
    chain = []
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        chain.append(pid)
    return chain


def _task_log(home: AirflowHome, attempt: int) -> str:
    logs = sorted(
        (home.path / "logs").glob(f"dag_id={DAG_ID}/run_id=*/task_id={TASK_ID}/attempt={attempt}.log")
    )
    assert len(logs) == 1, f"attempt {attempt} logs: {logs}"
    return logs[0].read_text(errors="replace")


@pytest.fixture
def emulator(kirin_emulator_factory: Callable[..., EmulatorServer]) -> EmulatorServer:
    """A private emulator; the held-back response must not delay its shutdown."""
    return kirin_emulator_factory(
        EmulatorConfig(pending_seconds=0.2, processing_seconds=1.0), graceful_timeout=1.0
    )


@pytest.fixture
def airflow(tmp_path: Path, airflow_template_db: Path, emulator: EmulatorServer) -> Iterator[AirflowHome]:
    """A home whose api-server is up; every process started in it is stopped afterwards."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    home = AirflowHome.create(
        tmp_path / "airflow",
        airflow_template_db,
        dags_folder=DAGS_FOLDER,
        settings={
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "1",
            **api_server_settings(port),
            # The read timeout outlasts the held-back response: try 1 waits until it is killed.
            "AIRFLOW_CONN_KIRIN_DEFAULT": emulator.airflow_conn_json({"timeout": 120, "retry_max_wait": 0.2}),
        },
    )
    try:
        home.start("api-server", "api-server", "--port", str(port), "--host", "127.0.0.1")
        wait_until(
            lambda: http_ok(f"{api_url}/api/v2/monitor/health"),
            timeout=60,
            what="the api-server's health endpoint",
            diagnostics=home.diagnostics,
        )
        yield home
    finally:
        while home.processes:  # newest first; SIGTERM, then SIGKILL to the group after a short grace
            home.processes.pop().stop(grace=3)


@pytest.mark.timeout(150)
def test_retry_after_the_worker_was_killed_reuses_the_generation(
    airflow: AirflowHome, emulator: EmulatorServer
) -> None:
    home = airflow
    emulator.add_fault(endpoint="create", kind="delay", seconds=HOLD_SECONDS, after_processing=True)
    run = home.start("dags-test", "dags", "test", DAG_ID, LOGICAL_DATE, "--use-executor")

    def create_reached_kirin() -> bool:
        assert run.alive, f"airflow dags test exited early\n{home.diagnostics()}"
        return bool(emulator.stats()["creates"] == 1)

    wait_until(
        create_reached_kirin,
        timeout=60,
        interval=0.1,
        what="try 1's create to reach the emulator",
        diagnostics=home.diagnostics,
    )
    rows = home.query(
        "SELECT try_number, state, pid FROM task_instance WHERE dag_id = ? AND task_id = ?", (DAG_ID, TASK_ID)
    )
    assert len(rows) == 1, rows
    try_number, state, pid = rows[0]
    assert (try_number, state) == (1, "running"), rows
    # The task process of try 1 is a descendant of the ``airflow dags test`` started above.
    assert run.popen.pid in _ancestors(pid), (pid, _ancestors(pid), run.popen.pid)
    stats = emulator.stats()
    assert (stats["creates"], stats["create_requests"]) == (1, 1)
    (kirin_task,) = emulator.state.tasks.values()

    os.kill(pid, signal.SIGKILL)  # the worker dies; Kirin has the task, Airflow knows nothing of it

    try:
        exit_code = run.popen.wait(90)
    except Exception:
        pytest.fail(f"airflow dags test did not finish\n{home.diagnostics()}")
    assert exit_code == 0, home.diagnostics()

    # Airflow's own retry ran: try 1 is in the history, try 2 succeeded in the same dag run.
    ((run_id, run_state),) = home.query("SELECT run_id, state FROM dag_run WHERE dag_id = ?", (DAG_ID,))
    assert run_state == "success", home.diagnostics()
    assert home.task_states(DAG_ID, run_id) == {(TASK_ID, -1): "success"}
    assert home.query(
        "SELECT try_number, state FROM task_instance WHERE dag_id = ? AND task_id = ?", (DAG_ID, TASK_ID)
    ) == [(2, "success")]
    history = home.query(
        "SELECT try_number FROM task_instance_history WHERE dag_id = ? AND task_id = ?", (DAG_ID, TASK_ID)
    )
    assert history == [(1,)], history

    # One generation, created by try 1, reused by try 2.
    stats = emulator.stats()
    assert (stats["creates"], stats["create_requests"], stats["conflicts"]) == (1, 1, 0), stats
    assert stats["lookups"] >= 1
    request = emulator.task_request(kirin_task.task_id)
    assert request is not None
    assert request["prompt"] == "a lighthouse in a winter storm, slow dolly-in"
    # the id derives from the task instance and the DAG's inputs (tests/reliability/dags)
    fingerprint = KirinVideoRequest.build(prompt=request["prompt"], duration=5, mode="std").fingerprint()
    assert kirin_task.external_task_id == derive_external_task_id(
        DAG_ID, run_id, TASK_ID, -1, fingerprint=fingerprint
    )
    assert home.xcom(DAG_ID, run_id, TASK_ID, "return_value") == kirin_task.task_id
    assert home.xcom(DAG_ID, run_id, TASK_ID, "kirin_task_id") == kirin_task.task_id
    result = home.xcom(DAG_ID, run_id, TASK_ID, "kirin_result")
    assert (result["task_id"], result["status"]) == (kirin_task.task_id, "completed")

    # The operator said so: try 2 reused the task; try 1 never got to say anything about it.
    assert f"Reusing Kirin task {kirin_task.task_id}" in _task_log(home, 2)
    first = _task_log(home, 1)
    assert "Kirin task" not in first
    assert "terminated by signal" in first
