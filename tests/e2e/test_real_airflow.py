"""End to end on a real Airflow 3: api-server, scheduler (LocalExecutor), triggerer and dag-processor
as separate processes on a temporary AIRFLOW_HOME with SQLite, against the bundled emulator.

The four components start once for the whole module (``airflow_components``, module scoped) on a temporary
DAGs folder holding a copy of ``example_dags/`` plus ``tests/e2e/dag_files/``; the session's emulator
is reset between tests (``kirin_emulator``). Every process is started here and stopped (its whole
process group) in the fixture's finalizer, whatever happens; a failing test gets the tail of every
component's log in its report (the root ``tests/conftest.py``).

- ``test_deferrable_operator_defers_to_the_triggerer_and_succeeds``: the deferrable example's task is
  ``deferred`` while Kirin is still rendering, then the run succeeds with the ``kirin_result`` XCom.
- ``test_deferrable_sensor_waits_in_the_triggerer_and_succeeds``: submit, then the deferrable
  ``KirinTaskSensor`` of ``example_kirin_submit_and_sense`` waits in the triggerer for that task;
  then no log file of the deployment (components, tasks, triggers) holds the API key.

The module also runs on the oldest line (``make test-compat AIRFLOW=3.0.6``, the Makefile's
``E2E_LINES``): there the API server issuing task tokens, which ``airflow dags test`` skips, is proven.
- ``test_pool_caps_concurrent_creates``: five mapped deferrable generations in a 2-slot pool that
  counts deferred tasks; the emulator's own records show at most 2 in flight at any moment. The same
  DAG with the pool not counting deferred tasks (control) has more than 2 in flight.
- ``test_asset_consumer_runs_on_the_keep_video_asset_event``: ``example_kirin_keep_video`` stores a
  video and emits an asset event; the scheduler runs ``example_kirin_asset_consumer`` for it.
- ``test_statsd_receives_the_documented_kirin_metrics``: with ``[metrics] statsd_on``, a StatsD
  listener on loopback (a UDP socket this module opens) receives the provider's metrics, tagged by
  connection id, from the worker and the triggerer of a real run; none holds the API key.
- ``test_the_connections_list_test_button``: what the 3.3 UI's list-row *Test* button sends, through
  the real api-server: refused ("Bad Request") for a form-saved connection (empty port), answered by
  the hook for one whose stored port is 0; the REST call without a port works for both.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from airflow_helpers import (
    EXAMPLE_DAGS,
    FAST_WAITS,
    AirflowHome,
    component_settings,
    decode_xcom,
    free_port,
    http_ok,
    wait_until,
)

from airflow_provider_kirin import _compat, metrics
from airflow_provider_kirin.emulator import DEFAULT_API_KEY, EmulatorServer, Fault

pytestmark = pytest.mark.airflow  # starts real Airflow processes: not in `make test-fast`

E2E_DAG_FILES = Path(__file__).resolve().parent / "dag_files"

DAG_ID = "example_kirin_deferrable_operator"
RUN_ID = "e2e_kirin_deferrable_run"
POOL_DAG_ID = "kirin_e2e_pool_cap"  # tests/e2e/dag_files/kirin_e2e_pool_dag.py
POOL = "kirin"
POOL_SLOTS = 2
POOL_MAPPED = 5
KEEP_DAG_ID = "example_kirin_keep_video"
CONSUMER_DAG_ID = "example_kirin_asset_consumer"
SENSOR_DAG_ID = "example_kirin_submit_and_sense"
ALL_DAG_IDS = (DAG_ID, POOL_DAG_ID, KEEP_DAG_ID, CONSUMER_DAG_ID, SENSOR_DAG_ID)

#: Long enough to see the task deferred while the emulator still reports pending/processing.
PROCESSING_SECONDS = 8.0
#: Each generation of the pool and asset tests takes 0.5 + this many seconds on Kirin's side: long
#: enough for several to overlap, and for the trigger not to fire before the scheduler has processed
#: the deferring attempt's exit (see ``AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL`` below).
GENERATION_SECONDS = 4.0
#: Every wait of the deferral test together stays inside this budget (and inside the pytest timeout,
#: which also covers the module fixture's start-up when this test runs first).
BUDGET_SECONDS = 150.0
POOL_BUDGET_SECONDS = 150.0
ASSET_BUDGET_SECONDS = 90.0
#: Start-up of the four components (api-server health and every DAG parsed).
STARTUP_SECONDS = 90.0


@dataclass
class RealAirflow:
    home: AirflowHome
    api_url: str
    #: The keep-video example's ``kirin_video_destination`` Variable (a local directory).
    destination: Path

    def diagnostics(self) -> str:
        return self.home.diagnostics()

    def assert_components_alive(self) -> None:
        dead = [p.name for p in self.home.processes if not p.alive]
        assert not dead, f"Airflow components exited early: {dead}\n{self.diagnostics()}"

    def cli_ok(self, *args: str) -> str:
        """``airflow <args>`` (unpause, trigger, pools set: the CLI as a user types it), in the home's
        warm CLI process; it must succeed."""
        result = self.home.cli(*args, warm=True)
        assert result.returncode == 0, f"airflow {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def active_runs(self) -> list[tuple[Any, ...]]:
        return self.home.query(
            "SELECT dag_id, run_id, state FROM dag_run WHERE state IN ('queued', 'running')"
        )

    def wait_run_finished(self, dag_id: str, run_id: str, timeout: float) -> str:
        def finished() -> str | None:
            self.assert_components_alive()
            state = self.home.run_state(dag_id, run_id)
            return state if state in ("success", "failed") else None

        return str(
            wait_until(
                finished,
                timeout=timeout,
                what=f"dag run {dag_id}/{run_id} to finish",
                diagnostics=self.diagnostics,
            )
        )


class Budget:
    """An absolute deadline shared by every wait of one test."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(1.0, self.deadline - time.monotonic())


class StatsdListener:
    """A StatsD server on loopback: a UDP socket and a thread that keeps every datagram (Airflow's
    own metrics too: read continuously, so the socket's buffer never overflows and drops ours)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="statsd-listener", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self.lines.extend(data.decode(errors="replace").splitlines())

    def received(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def clear(self) -> None:
        with self._lock:
            self.lines.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture(scope="module")
def statsd_listener() -> Iterator[StatsdListener]:
    listener = StatsdListener()
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def airflow_components(
    tmp_path_factory: pytest.TempPathFactory,
    airflow_template_db: Path,
    kirin_emulator_session: EmulatorServer,
    statsd_listener: StatsdListener,
) -> Iterator[RealAirflow]:
    """The four Airflow components running on one fresh home for the whole module; all stopped
    afterwards. Tests use ``kirin_emulator`` (the same server, reset around each test)."""
    root = tmp_path_factory.mktemp("real-airflow")
    dags_folder = root / "dags"
    no_cache = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(EXAMPLE_DAGS, dags_folder, ignore=no_cache)
    shutil.copytree(E2E_DAG_FILES, dags_folder, ignore=no_cache, dirs_exist_ok=True)
    destination = root / "kept-videos"
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    home = AirflowHome.create(
        root / "airflow",
        airflow_template_db,
        dags_folder=dags_folder,
        settings={
            # Above the pool test's 5 mapped tasks: the pool, not the executor, is the limit.
            **component_settings(port, parallelism=8),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            # A task supervisor notices its task process's exit within this many seconds (default 5).
            # Airflow 3.3.2 fails a resumed deferred task whose trigger fired and got it re-queued
            # before the scheduler saw the executor's "success" of the deferring attempt
            # (apache/airflow#67287; only the `scheduled` state is guarded): a faster exit report,
            # and generations of several seconds (below), keep the tests clear of that race.
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            "AIRFLOW_CONN_KIRIN_DEFAULT": kirin_emulator_session.airflow_conn_json(),
            # Airflow's metrics to this module's StatsD listener, tags in the InfluxDB line format.
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(statsd_listener.port),
            "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
            "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True",
            # Connection tests (CLI, REST, the UI's button) are off unless enabled.
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            **FAST_WAITS,
            "AIRFLOW_VAR_KIRIN_VIDEO_DESTINATION": destination.as_uri(),
        },
    )
    airflow = RealAirflow(home=home, api_url=api_url, destination=destination)
    try:
        home.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(port))
        home.start("dag-processor", "dag-processor")
        # No log-serving side servers: they would bind fixed ports (8793/8794) on all interfaces.
        home.start("scheduler", "scheduler", "--skip-serve-logs")
        home.start("triggerer", "triggerer", "--skip-serve-logs")
        budget = Budget(STARTUP_SECONDS)

        def api_healthy() -> bool:
            airflow.assert_components_alive()
            return http_ok(f"{api_url}/api/v2/monitor/health")

        def dags_stored() -> bool:
            airflow.assert_components_alive()
            marks = ",".join("?" * len(ALL_DAG_IDS))
            sql = f"SELECT dag_id FROM dag WHERE dag_id IN ({marks}) AND is_stale = 0"
            return len(home.query(sql, ALL_DAG_IDS)) == len(ALL_DAG_IDS)

        wait_until(
            api_healthy,
            timeout=budget.remaining(),
            what="the api-server's health endpoint",
            diagnostics=airflow.diagnostics,
        )
        wait_until(
            dags_stored,
            timeout=budget.remaining(),
            what=f"the dag-processor to store {ALL_DAG_IDS}",
            diagnostics=airflow.diagnostics,
        )
        yield airflow
    finally:
        home.close()


@pytest.fixture
def real_airflow(airflow_components: RealAirflow) -> RealAirflow:
    """The module's running Airflow, live and with no dag run of an earlier test still going (the
    emulator is reset next, by ``kirin_emulator``: a generation still in flight would then vanish)."""
    airflow_components.assert_components_alive()
    wait_until(
        lambda: not airflow_components.active_runs(),
        timeout=60,
        what="earlier tests' dag runs to finish",
        diagnostics=lambda: f"{airflow_components.active_runs()}\n{airflow_components.diagnostics()}",
    )
    return airflow_components


# -- deferral ----------------------------------------------------------------------------------------


@pytest.mark.kirin_emulator(pending_seconds=0.5, processing_seconds=PROCESSING_SECONDS)
@pytest.mark.timeout(STARTUP_SECONDS + BUDGET_SECONDS + 30)
def test_deferrable_operator_defers_to_the_triggerer_and_succeeds(
    real_airflow: RealAirflow, kirin_emulator: EmulatorServer
) -> None:
    home = real_airflow.home
    budget = Budget(BUDGET_SECONDS)
    diagnostics = real_airflow.diagnostics
    assert_components_alive = real_airflow.assert_components_alive

    # 1. The api-server answers and the dag-processor has stored the DAG.
    wait_until(
        lambda: http_ok(f"{real_airflow.api_url}/api/v2/monitor/health"),
        timeout=budget.remaining(),
        what="the api-server's health endpoint",
        diagnostics=diagnostics,
    )
    wait_until(
        lambda: home.query("SELECT 1 FROM dag WHERE dag_id = ? AND is_stale = 0", (DAG_ID,)),
        timeout=budget.remaining(),
        what=f"the dag-processor to store {DAG_ID}",
        diagnostics=diagnostics,
    )
    assert_components_alive()

    # 2. Unpause and trigger through the CLI.
    real_airflow.cli_ok("dags", "unpause", DAG_ID, "--yes")
    assert home.query("SELECT is_paused FROM dag WHERE dag_id = ?", (DAG_ID,)) == [(0,)]
    real_airflow.cli_ok("dags", "trigger", DAG_ID, "--run-id", RUN_ID)

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
        timeout=budget.remaining(),
        interval=0.25,
        what=f"task 'generate' to be deferred (states seen: {states_seen})",
        diagnostics=diagnostics,
    )
    assert while_deferred["next_method"] == "execute_complete"
    assert while_deferred["trigger_id"] is not None
    assert while_deferred["kirin"] in (["pending"], ["processing"]), while_deferred

    # 4. The triggerer fires, a worker resumes the task, and the run succeeds.
    final = real_airflow.wait_run_finished(DAG_ID, RUN_ID, budget.remaining())
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


@pytest.mark.kirin_emulator(pending_seconds=0.5, processing_seconds=PROCESSING_SECONDS)
@pytest.mark.timeout(STARTUP_SECONDS + BUDGET_SECONDS + 30)
def test_deferrable_sensor_waits_in_the_triggerer_and_succeeds(
    real_airflow: RealAirflow, kirin_emulator: EmulatorServer
) -> None:
    """``submit`` creates the generation; the deferrable sensor is ``deferred`` while Kirin renders it,
    its trigger fires in the triggerer, and the run succeeds with one create."""
    home = real_airflow.home
    budget = Budget(BUDGET_SECONDS)
    run_id = "e2e_kirin_sensor_run"
    real_airflow.cli_ok("dags", "unpause", SENSOR_DAG_ID, "--yes")
    real_airflow.cli_ok("dags", "trigger", SENSOR_DAG_ID, "--run-id", run_id)

    states_seen: list[str | None] = []
    kirin_while_deferred: list[str] = []

    def sensor_deferred_while_rendering() -> bool:
        real_airflow.assert_components_alive()
        rows = home.query(
            "SELECT state FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = 'wait_for_video'",
            (SENSOR_DAG_ID, run_id),
        )
        state = rows[0][0] if rows else None
        if not states_seen or states_seen[-1] != state:
            states_seen.append(state)
        if state != "deferred":
            return False
        kirin_while_deferred[:] = sorted(t.status_at() for t in list(kirin_emulator.state.tasks.values()))
        return True

    wait_until(
        sensor_deferred_while_rendering,
        timeout=budget.remaining(),
        interval=0.25,
        what=f"sensor 'wait_for_video' to be deferred (states seen: {states_seen})",
        diagnostics=real_airflow.diagnostics,
    )
    assert kirin_while_deferred in (["pending"], ["processing"]), kirin_while_deferred

    final = real_airflow.wait_run_finished(SENSOR_DAG_ID, run_id, budget.remaining())
    states = home.task_states(SENSOR_DAG_ID, run_id)
    assert final == "success", f"run ended {final}; task states {states}\n{real_airflow.diagnostics()}"
    assert states == {("submit", -1): "success", ("wait_for_video", -1): "success"}
    kirin_task_id = home.xcom(SENSOR_DAG_ID, run_id, "submit", "return_value")
    assert kirin_emulator.stats()["creates"] == 1
    assert kirin_emulator.task(kirin_task_id)["status"] == "completed"
    # The sensor's wait ran as a trigger in the triggerer process.
    task_logs = home.path / "logs" / f"dag_id={SENSOR_DAG_ID}" / f"run_id={run_id}" / "task_id=wait_for_video"
    trigger_logs = "".join(p.read_text(errors="replace") for p in task_logs.glob("*.log.trigger.*.log"))
    assert "Trigger fired event" in trigger_logs, f"no trigger log of the sensor in {task_logs}"
    assert kirin_task_id in trigger_logs
    # No log of a real deployment holds the API key: components, tasks (whose supervisor talks to
    # the task over a socket; 3.0's `dags test` logs the key, see docs/compatibility.md) and triggers.
    logs = [p for p in home.path.rglob("*.log") if p.is_file()]
    assert any("task_id=" in str(p) for p in logs), logs
    leaking = [str(p) for p in logs if kirin_emulator.api_key in p.read_text(errors="replace")]
    assert not leaking, f"the API key is in {leaking}"


# -- pool ----------------------------------------------------------------------------------------------


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of closed intervals ``[start, end]`` that share one instant (touching
    intervals count as overlapping: a start at another's end is processed before that end)."""
    events = sorted([(start, 0) for start, _ in intervals] + [(end, 1) for _, end in intervals])
    depth = deepest = 0
    for _, kind in events:
        depth += 1 if kind == 0 else -1
        deepest = max(deepest, depth)
    return deepest


def test_max_overlap() -> None:
    assert max_overlap([]) == 0
    assert max_overlap([(0, 1), (2, 3), (4, 5)]) == 1
    assert max_overlap([(0, 1), (1, 2)]) == 2  # closed: they share t=1
    assert max_overlap([(0, 10), (1, 2), (3, 4), (3.5, 5)]) == 3
    assert max_overlap([(0, 3), (0.5, 3.5), (3.2, 6), (3.4, 7), (6.5, 9)]) == 3


@dataclass
class PoolRun:
    """What one run of the pool DAG left behind, on both sides."""

    run_id: str
    state: str
    task_states: dict[tuple[str, int], str | None]
    #: The emulator's records: ``[created, completed]`` (monotonic) of every generation.
    intervals: list[tuple[float, float]]
    kirin_statuses: list[str]
    prompts: list[str]
    creates: int
    #: Most task instances of the run seen at once queued, running or deferred (sampled).
    max_sampled_active: int = 0
    states_sampled: set[str | None] = field(default_factory=set)

    @property
    def max_in_flight(self) -> int:
        return max_overlap(self.intervals)


def _run_pool_dag(airflow: RealAirflow, emulator: EmulatorServer, run_id: str, budget: Budget) -> PoolRun:
    """Trigger the pool DAG on a reset emulator, wait for the run to end, read both sides' records."""
    emulator.reset()
    airflow.cli_ok("dags", "trigger", POOL_DAG_ID, "--run-id", run_id)
    sampled: dict[str, Any] = {"max": 0, "states": set()}

    def finished() -> str | None:
        airflow.assert_components_alive()
        states = list(airflow.home.task_states(POOL_DAG_ID, run_id).values())
        sampled["states"].update(states)
        active = sum(s in ("queued", "running", "deferred") for s in states)
        sampled["max"] = max(sampled["max"], active)
        state = airflow.home.run_state(POOL_DAG_ID, run_id)
        return state if state in ("success", "failed") else None

    state = wait_until(
        finished,
        timeout=budget.remaining(),
        interval=0.25,
        what=f"pool dag run {run_id} to finish",
        diagnostics=airflow.diagnostics,
    )
    tasks = list(emulator.state.tasks.values())
    return PoolRun(
        run_id=run_id,
        state=state,
        task_states=airflow.home.task_states(POOL_DAG_ID, run_id),
        intervals=[(t.created_at, t.done_at) for t in tasks],
        kirin_statuses=[t.status_at() for t in tasks],
        prompts=[t.params["prompt"] for t in tasks],
        creates=emulator.stats()["creates"],
        max_sampled_active=sampled["max"],
        states_sampled=sampled["states"],
    )


def _assert_all_generated(run: PoolRun, airflow: RealAirflow) -> None:
    expected_states = {("generate", i): "success" for i in range(POOL_MAPPED)}
    assert run.state == "success", f"{run}\n{airflow.diagnostics()}"
    assert run.task_states == expected_states, run
    assert run.creates == POOL_MAPPED, run
    assert run.kirin_statuses == ["completed"] * POOL_MAPPED, run
    assert len(set(run.prompts)) == POOL_MAPPED, run
    # The generations really waited in the triggerer.
    assert "deferred" in run.states_sampled, run


@pytest.mark.kirin_emulator(pending_seconds=0.5, processing_seconds=GENERATION_SECONDS)
@pytest.mark.timeout(STARTUP_SECONDS + POOL_BUDGET_SECONDS + 30)
def test_pool_caps_concurrent_creates(real_airflow: RealAirflow, kirin_emulator: EmulatorServer) -> None:
    """A pool of 2 slots that counts deferred tasks keeps at most 2 generations in flight on Kirin's
    side (from create to completion, by the emulator's records) while 5 mapped deferrable tasks run;
    the same DAG in a pool that does not count deferred tasks exceeds 2 (the cap is the pool's)."""
    budget = Budget(POOL_BUDGET_SECONDS)
    home = real_airflow.home
    real_airflow.cli_ok("dags", "unpause", POOL_DAG_ID, "--yes")

    # 1. Capped: 2 slots, held while deferred.
    real_airflow.cli_ok(
        "pools", "set", POOL, str(POOL_SLOTS), "Kirin account: 2 concurrent generations", "--include-deferred"
    )
    assert home.query("SELECT slots, include_deferred FROM slot_pool WHERE pool = ?", (POOL,)) == [
        (POOL_SLOTS, 1)
    ]
    capped = _run_pool_dag(real_airflow, kirin_emulator, "e2e_pool_capped", budget)
    print(f"capped: {capped.max_in_flight} in flight at most, {capped.max_sampled_active} active")
    _assert_all_generated(capped, real_airflow)
    assert capped.max_in_flight <= POOL_SLOTS, capped
    assert capped.max_in_flight == POOL_SLOTS, capped  # the 2 slots were used concurrently
    # Airflow's side agrees: with include_deferred, queued + running + deferred never exceed the slots.
    assert capped.max_sampled_active <= POOL_SLOTS, capped

    # 2. Control: the same DAG and pool size, but deferred tasks give their slot back.
    real_airflow.cli_ok("pools", "set", POOL, str(POOL_SLOTS), "Kirin account, not counting deferred tasks")
    assert home.query("SELECT slots, include_deferred FROM slot_pool WHERE pool = ?", (POOL,)) == [
        (POOL_SLOTS, 0)
    ]
    control = _run_pool_dag(real_airflow, kirin_emulator, "e2e_pool_control", budget)
    print(f"control: {control.max_in_flight} in flight at most, {control.max_sampled_active} active")
    _assert_all_generated(control, real_airflow)
    assert control.max_in_flight > POOL_SLOTS, control


# -- assets --------------------------------------------------------------------------------------------


@pytest.mark.kirin_emulator(pending_seconds=0.5, processing_seconds=GENERATION_SECONDS)
@pytest.mark.timeout(STARTUP_SECONDS + ASSET_BUDGET_SECONDS + 30)
def test_asset_consumer_runs_on_the_keep_video_asset_event(
    real_airflow: RealAirflow, kirin_emulator: EmulatorServer
) -> None:
    budget = Budget(ASSET_BUDGET_SECONDS)
    home = real_airflow.home
    keep_run_id = "e2e_keep_video_run"

    # 1. The consumer is unpaused (and has never run); the producer is triggered by hand.
    real_airflow.cli_ok("dags", "unpause", CONSUMER_DAG_ID, "--yes")
    assert home.query("SELECT is_paused FROM dag WHERE dag_id = ?", (CONSUMER_DAG_ID,)) == [(0,)]
    assert home.query("SELECT run_id FROM dag_run WHERE dag_id = ?", (CONSUMER_DAG_ID,)) == []
    real_airflow.cli_ok("dags", "unpause", KEEP_DAG_ID, "--yes")
    # No logical date, as the UI and REST API trigger runs in Airflow 3: the example's destination
    # is dated by ``dag_run.run_after``, which every run has.
    real_airflow.cli_ok("dags", "trigger", KEEP_DAG_ID, "--run-id", keep_run_id)

    # 2. The producer generates, keeps the video and emits one event on ``kirin_videos``.
    final = real_airflow.wait_run_finished(KEEP_DAG_ID, keep_run_id, budget.remaining())
    states = home.task_states(KEEP_DAG_ID, keep_run_id)
    assert final == "success", f"run ended {final}; task states {states}\n{real_airflow.diagnostics()}"
    assert states == {("generate", -1): "success", ("keep_video", -1): "success"}
    stored = home.xcom(KEEP_DAG_ID, keep_run_id, "keep_video", "return_value")
    kirin_task_id = home.xcom(KEEP_DAG_ID, keep_run_id, "generate", "return_value")
    assert isinstance(stored, list), stored
    assert len(stored) == 1, stored
    video = Path(stored[0].removeprefix("file://"))
    assert video.is_file(), stored
    ((run_after,),) = home.query(
        "SELECT run_after FROM dag_run WHERE dag_id = ? AND run_id = ?", (KEEP_DAG_ID, keep_run_id)
    )
    assert video == real_airflow.destination / str(run_after)[:10] / f"{kirin_task_id}.mp4"
    assert video.with_name(f"{video.name}.json").is_file()
    assert kirin_emulator.stats()["creates"] == 1
    events = home.query(
        "SELECT e.id, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
        "WHERE a.name = 'kirin_videos' AND e.source_dag_id = ? AND e.source_run_id = ?",
        (KEEP_DAG_ID, keep_run_id),
    )
    assert len(events) == 1, events
    event_id = events[0][0]
    assert decode_xcom(events[0][1]) == {"paths": stored, "kirin_task_id": kirin_task_id, "cost": "0.35"}

    # 3. The scheduler creates an asset-triggered run of the consumer for that event, which succeeds.
    def consumer_run() -> tuple[int, str, str] | None:
        real_airflow.assert_components_alive()
        rows = home.query(
            "SELECT id, run_id, run_type FROM dag_run WHERE dag_id = ? ORDER BY id", (CONSUMER_DAG_ID,)
        )
        return rows[0] if rows else None

    run_pk, consumer_run_id, run_type = wait_until(
        consumer_run,
        timeout=budget.remaining(),
        what=f"a run of {CONSUMER_DAG_ID} triggered by the asset event",
        diagnostics=real_airflow.diagnostics,
    )
    assert run_type == "asset_triggered"
    assert home.query("SELECT event_id FROM dagrun_asset_event WHERE dag_run_id = ?", (run_pk,)) == [
        (event_id,)
    ]
    final = real_airflow.wait_run_finished(CONSUMER_DAG_ID, consumer_run_id, budget.remaining())
    states = home.task_states(CONSUMER_DAG_ID, consumer_run_id)
    assert final == "success", f"run ended {final}; task states {states}\n{real_airflow.diagnostics()}"
    assert states == {("announce", -1): "success"}

    # 4. ``announce`` read the event's extras: it returns the stored path, which exists.
    announced = home.xcom(CONSUMER_DAG_ID, consumer_run_id, "announce", "return_value")
    assert announced == stored
    assert Path(announced[0].removeprefix("file://")).is_file()
    # Exactly one consumer run: one event, one run.
    assert len(home.query("SELECT 1 FROM dag_run WHERE dag_id = ?", (CONSUMER_DAG_ID,))) == 1


# -- metrics ---------------------------------------------------------------------------------------------

STATSD_RUN_ID = "e2e_kirin_statsd_run"


def kirin_metrics(lines: list[str]) -> dict[str, list[tuple[dict[str, str], str]]]:
    """The provider's StatsD lines, ``airflow.kirin.<name>,<tag>=<value>...:<value>|<type>``, as
    ``{"kirin.<name>": [(tags, "<value>|<type>"), ...]}``."""
    found: dict[str, list[tuple[dict[str, str], str]]] = {}
    for line in lines:
        head, _, value = line.partition(":")
        name, *tags = head.split(",")
        if name.startswith("airflow.kirin."):
            found.setdefault(name.removeprefix("airflow."), []).append(
                (dict(tag.split("=", 1) for tag in tags), value)
            )
    return found


@pytest.mark.kirin_emulator(pending_seconds=0.5, processing_seconds=GENERATION_SECONDS)
@pytest.mark.timeout(STARTUP_SECONDS + BUDGET_SECONDS + 30)
def test_statsd_receives_the_documented_kirin_metrics(
    real_airflow: RealAirflow, kirin_emulator: EmulatorServer, statsd_listener: StatsdListener
) -> None:
    budget = Budget(BUDGET_SECONDS)
    statsd_listener.clear()
    kirin_emulator.add_fault(Fault(kind="http_error", endpoint="create", status=503))  # one retry
    real_airflow.cli_ok("dags", "unpause", DAG_ID, "--yes")
    real_airflow.cli_ok("dags", "trigger", DAG_ID, "--run-id", STATSD_RUN_ID)
    final = real_airflow.wait_run_finished(DAG_ID, STATSD_RUN_ID, budget.remaining())
    assert final == "success", real_airflow.diagnostics()
    kirin_task_id = real_airflow.home.xcom(DAG_ID, STATSD_RUN_ID, "generate", "kirin_task_id")

    # The worker (create, retry) and the triggerer (status checks, the generation's end) both send.
    expected = {
        metrics.CREATES,
        metrics.HTTP_RETRIES,
        metrics.STATUS_CHECKS,
        metrics.COMPLETED,
        metrics.COST,
        metrics.DURATION,
    }
    received = wait_until(
        lambda: (found := kirin_metrics(statsd_listener.received())) and expected <= set(found) and found,
        timeout=budget.remaining(),
        what=f"the StatsD listener to receive {sorted(expected)}",
        diagnostics=lambda: "\n".join(statsd_listener.received()[-80:]),
    )
    for name, values in sorted(received.items()):
        print(name, [value for _, value in values], values[0][0])
    assert set(received) <= set(metrics.NAMES), set(received) - set(metrics.NAMES)
    for name, values in received.items():
        assert all(tags.get("conn_id") == "kirin_default" for tags, _ in values), (name, values)
    assert received[metrics.CREATES] == [({"conn_id": "kirin_default"}, "1|c")]
    assert received[metrics.HTTP_RETRIES] == [({"conn_id": "kirin_default", "operation": "create"}, "1|c")]
    assert received[metrics.COST] == [({"conn_id": "kirin_default"}, "350000|c")]  # 0.35 USD
    assert received[metrics.COMPLETED] == [({"conn_id": "kirin_default"}, "1|c")]
    ((_, duration),) = received[metrics.DURATION]
    assert duration.endswith("|ms")
    assert 0 < float(duration.removesuffix("|ms")) < 60_000
    # Status checks are sent summed (at most once a second per process): the sum is every check.
    sent_checks = sum(int(value.removesuffix("|c")) for _, value in received[metrics.STATUS_CHECKS])
    assert kirin_emulator.state.status_checks[kirin_task_id] == sent_checks
    # Tags and names carry no secret.
    assert not [line for line in statsd_listener.received() if DEFAULT_API_KEY in line]


# -- the connection's Test button ------------------------------------------------------------------------


def api_json(url: str, body: dict[str, object] | None = None) -> tuple[int, dict[str, object]]:
    """One request to the api-server (the simple auth manager makes everyone an admin)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        return int(err.code), json.loads(err.read() or b"{}")


def list_row_body(row: dict[str, object]) -> dict[str, object]:
    """What the 3.3.2 UI's connections list sends when its row's *Test* button is pressed
    (``Number(port)``: an empty port becomes 0)."""
    return {
        "conn_type": row["conn_type"],
        "connection_id": row["connection_id"],
        "description": row.get("description") or "",
        "extra": row.get("extra") or "{}",
        "host": row.get("host") or "",
        "login": row.get("login") or "",
        "password": row.get("password") or "",
        "port": int(row.get("port") or 0),  # type: ignore[call-overload]
        "schema": row.get("schema") or "",
    }


@pytest.mark.kirin_emulator
@pytest.mark.timeout(STARTUP_SECONDS + 120)
def test_the_connections_list_test_button(real_airflow: RealAirflow, kirin_emulator: EmulatorServer) -> None:
    api = f"{real_airflow.api_url}/api/v2/connections"
    for conn_id, port in (("kirin_form_saved", []), ("kirin_port_zero", ["--conn-port", "0"])):
        real_airflow.home.cli("connections", "delete", conn_id)
        real_airflow.cli_ok(
            "connections", "add", conn_id, "--conn-type", "kirin", "--conn-host", kirin_emulator.url,
            "--conn-password", DEFAULT_API_KEY, *port,
        )  # fmt: skip
    rows = {}
    for conn_id in ("kirin_form_saved", "kirin_port_zero"):
        status, rows[conn_id] = api_json(f"{api}/{conn_id}")
        assert status == 200, rows[conn_id]
    assert (rows["kirin_form_saved"]["port"], rows["kirin_port_zero"]["port"]) == (None, 0)

    accepted = f"Connected to Kirin at {kirin_emulator.url}; the API key was accepted."
    if _compat.AIRFLOW_V_3_3_PLUS:
        # 3.3 tests the stored connection, with its stored key, where the body names its host and
        # port. The list row's button: refused before the hook runs for an empty port, answered for 0.
        status, answer = api_json(f"{api}/test", list_row_body(rows["kirin_form_saved"]))
        assert status == 400, answer
        assert "differs from the stored connection" in str(answer["detail"])
        status, answer = api_json(f"{api}/test", list_row_body(rows["kirin_port_zero"]))
        assert (status, answer["status"]) == (200, True), answer
        assert answer["message"] == accepted

        # The REST call the docs give (no port, no host): the stored connection, with its stored key.
        for conn_id in rows:
            status, answer = api_json(f"{api}/test", {"connection_id": conn_id, "conn_type": "kirin"})
            assert (status, answer["status"]) == (200, True), answer
    else:
        # 3.0-3.2 test exactly the body sent: the list row carries the masked password, so the hook
        # reports the refused key (a clear answer, not an error page); the body with the key passes.
        for conn_id, row in rows.items():
            status, answer = api_json(f"{api}/test", list_row_body(row))
            assert (status, answer["status"]) == (200, False), answer
            assert "refused the API key (HTTP 401)" in str(answer["message"]), answer
            assert DEFAULT_API_KEY not in json.dumps(answer)
            status, answer = api_json(f"{api}/test", {**list_row_body(row), "password": DEFAULT_API_KEY})
            assert (status, answer["status"], answer["message"]) == (200, True, accepted), (conn_id, answer)

    # And the CLI.
    out = real_airflow.cli_ok("connections", "test", "kirin_form_saved")
    assert "Connection success!" in out
