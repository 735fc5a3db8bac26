"""A distributed Airflow with failing parts, on one machine: never the wrong video, never pay twice.

Every server is started here, on loopback with free ports and its own data under a temporary directory,
and stopped afterwards whatever happens (``cluster``): PostgreSQL (metadata DB and Celery results), Redis
(Celery broker), the api-server, the scheduler with the ``CeleryExecutor``, the dag-processor, **two**
triggerers and **two** Celery workers, against the bundled emulator (in this process). Run it with
``make test-distributed`` (which installs PostgreSQL, Redis and the ``distributed`` extra first); the
plain ``make test`` deselects it (marker ``distributed``). A server that cannot start fails the test.

The scenario (``test_generations_survive_a_dead_triggerer_a_dead_worker_and_a_503_storm``): a mapped DAG
of 40 deferrable generations with distinct prompts (``dag_files/kirin_distributed_dag.py``). The emulator
holds the response of the 40th create (the generation exists on Kirin's side, the submitting task has
not heard back), and Kirin takes as long as the test needs (it finishes the generations itself, once the
faults are over), so every wait is deferred at once. While they wait:

1. SIGKILL the Celery worker (its whole process tree) whose task is in that held submit; the task has
   ``retries=1``: the retry, on the other worker, must find and reuse that generation;
2. SIGKILL the triggerer holding the most deferred waits; the other one must take them over (health
   threshold 5 s, heartbeat 1 s), and every wait still completes. Takeover time and the status checks
   it cost are measured and printed;
3. a 30-second 503 storm on every status check; the generations complete 10 s into it.

Then: the run succeeds, every mapped task succeeds, the emulator holds exactly one generation per task
instance (one create each: 40 create requests in all), and each task's video is the one of its own
prompt (the XCom result's Kirin task id, looked up in the emulator's records, carries the DAG's prompt
for that map index).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from airflow_helpers import AirflowHome, ManagedProcess, api_server_settings, free_port, http_ok, wait_until
from backing_services import PostgresServer, RedisServer

from airflow_provider_kirin.emulator import EmulatorConfig, EmulatorServer, Fault

# `airflow` too: `make test-fast` (-m "not airflow") must not pick it up either.
pytestmark = [pytest.mark.distributed, pytest.mark.airflow]

DAG_FILES = Path(__file__).resolve().parent / "dag_files"
DAG_FILE = DAG_FILES / "kirin_distributed_dag.py"
DAG_ID = "kirin_distributed"
TASK_ID = "generate"
RUN_ID = "distributed_run"

#: Settings that make failures show quickly (Airflow's defaults are minutes).
TRIGGERER_HEARTBEAT_SEC = 1
TRIGGERER_HEALTH_THRESHOLD = 5  # an integer option in Airflow 3.3
TI_HEARTBEAT_TIMEOUT = 10
WORKER_CONCURRENCY = 4
#: The held create's response comes after this long, if anyone is still listening (nobody is).
HOLD_SECONDS = 300.0
STORM_SECONDS = 30.0
#: The generations complete this long into the storm, so the waits learn it through the storm.
COMPLETE_AFTER = 10.0
#: Kirin's own generation time: longer than the whole test; the test completes the generations.
GENERATION_SECONDS = 1800.0
POLL_INTERVAL = 3.0  # as in the DAG

STARTUP_SECONDS = 150.0
SCENARIO_SECONDS = 270.0  # with the start-up and teardown slack: at most 8 minutes in all


def load_prompts() -> list[str]:
    """The DAG's own prompt list (map index i generates ``PROMPTS[i]``)."""
    spec = importlib.util.spec_from_file_location("kirin_distributed_dag", DAG_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.PROMPTS)


@dataclass
class Cluster:
    home: AirflowHome
    emulator: EmulatorServer
    postgres: PostgresServer
    redis: RedisServer
    #: Triggerer job id -> its process.
    triggerers: dict[int, ManagedProcess] = field(default_factory=dict)
    workers: list[ManagedProcess] = field(default_factory=list)

    def diagnostics(self) -> str:
        return "\n".join(
            [
                self.home.diagnostics(lines=40),
                f"----- postgres -----\n{self.postgres.log_tail(20)}",
                f"----- emulator -----\n{self.emulator.stats()}",
            ]
        )

    def assert_alive(self) -> None:
        dead = [p.name for p in self.home.processes if not p.alive and not p.killed]
        assert not dead, f"servers exited on their own: {dead}\n{self.diagnostics()}"

    def cli_ok(self, *args: str) -> str:
        result = self.home.cli(*args)
        assert result.returncode == 0, f"airflow {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def wait(self, predicate: Any, *, timeout: float, what: str, interval: float = 0.5) -> Any:
        def checked() -> Any:
            self.assert_alive()
            return predicate()

        return wait_until(
            checked, timeout=timeout, interval=interval, what=what, diagnostics=self.diagnostics
        )

    # -- metadata DB ---------------------------------------------------------------------------------------
    def tis(self) -> dict[int, tuple[str | None, int, int | None]]:
        """``{map_index: (state, try_number, pid)}`` of the mapped task."""
        rows = self.home.query(
            "SELECT map_index, state, try_number, pid FROM task_instance "
            "WHERE dag_id = ? AND run_id = ? AND task_id = ?",
            (DAG_ID, RUN_ID, TASK_ID),
        )
        return {m: (state, tries, pid) for m, state, tries, pid in rows}

    def triggers_by_triggerer(self) -> dict[int | None, set[int]]:
        """``{triggerer job id (None: unassigned): {map_index}}`` of the run's deferred waits."""
        rows = self.home.query(
            "SELECT t.triggerer_id, ti.map_index FROM trigger t "
            "JOIN task_instance ti ON ti.trigger_id = t.id "
            "WHERE ti.dag_id = ? AND ti.run_id = ? AND ti.task_id = ?",
            (DAG_ID, RUN_ID, TASK_ID),
        )
        held: dict[int | None, set[int]] = {}
        for triggerer_id, map_index in rows:
            held.setdefault(triggerer_id, set()).add(map_index)
        return held

    def triggerer_job_ids(self) -> set[int]:
        rows = self.home.query("SELECT id FROM job WHERE job_type = 'TriggererJob'")
        return {row[0] for row in rows}


def _celery_ready(process: ManagedProcess) -> bool:
    return " ready." in process.tail(200)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """Every server of the distributed Airflow, started here and stopped (process trees killed, data
    removed) afterwards, whatever happens. ``KIRIN_KEEP_DISTRIBUTED_TMP=1`` keeps the data and logs."""
    # Not under pytest's base temp: other pytest runs on the machine prune old base temps.
    root = Path(tempfile.mkdtemp(prefix="kirin-distributed-"))
    dags_folder = root / "dags"
    shutil.copytree(DAG_FILES, dags_folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    deadline = time.monotonic() + STARTUP_SECONDS

    def remaining() -> float:
        return max(1.0, deadline - time.monotonic())

    emulator = EmulatorServer(EmulatorConfig(pending_seconds=1.0, processing_seconds=GENERATION_SECONDS))
    postgres = PostgresServer()
    redis = RedisServer(root / "redis")
    home: AirflowHome | None = None
    try:
        emulator.start()
        postgres.start()
        redis.start()
        port = free_port()
        api_url = f"http://127.0.0.1:{port}"
        home = AirflowHome.create(
            root / "airflow",
            None,
            dags_folder=dags_folder,
            postgres_dsn=postgres.dsn,
            settings={
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.sqlalchemy_url,
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CELERY__BROKER_URL": redis.url,
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{postgres.sqlalchemy_url}",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
                "AIRFLOW__CORE__PARALLELISM": "64",
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "64",
                **api_server_settings(port),
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                # A task whose worker died is failed (and retried) this soon.
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(TI_HEARTBEAT_TIMEOUT),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
                # A triggerer silent for this long is dead: the other one takes its triggers.
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": str(TRIGGERER_HEARTBEAT_SEC),
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(TRIGGERER_HEALTH_THRESHOLD),
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                # The provider's default retry policy: it has to carry the waits through the storm.
                "AIRFLOW_CONN_KIRIN_DEFAULT": emulator.airflow_conn_json(),
            },
        )
        cluster = Cluster(home=home, emulator=emulator, postgres=postgres, redis=redis)
        migrated = home.cli("db", "migrate", timeout=remaining())
        assert migrated.returncode == 0, f"airflow db migrate:\n{migrated.stdout}\n{migrated.stderr}"

        home.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(port))
        home.start("dag-processor", "dag-processor")
        home.start("scheduler", "scheduler", "--skip-serve-logs")
        for name in ("worker-a", "worker-b"):
            cluster.workers.append(
                home.start(
                    name,
                    *("celery", "worker", "--celery-hostname", f"{name}@%h", "--skip-serve-logs"),
                    *("--concurrency", str(WORKER_CONCURRENCY), "--without-mingle", "--without-gossip"),
                )
            )
        # One triggerer at a time, so each job row in the metadata DB is known to be whose.
        for name in ("triggerer-a", "triggerer-b"):
            known = cluster.triggerer_job_ids()
            process = home.start(name, "triggerer", "--skip-serve-logs")
            new = cluster.wait(
                lambda known=known: cluster.triggerer_job_ids() - known,
                timeout=remaining(),
                what=f"{name}'s job row",
            )
            assert len(new) == 1, new
            cluster.triggerers[new.pop()] = process

        cluster.wait(lambda: http_ok(f"{api_url}/api/v2/monitor/health"), timeout=remaining(),
                     what="the api-server's health endpoint")  # fmt: skip
        cluster.wait(
            lambda: home.query("SELECT 1 FROM dag WHERE dag_id = ? AND is_stale = false", (DAG_ID,)),
            timeout=remaining(),
            what=f"the dag-processor to store {DAG_ID}",
        )
        for worker in cluster.workers:
            cluster.wait(lambda worker=worker: _celery_ready(worker), timeout=remaining(),
                         what=f"Celery {worker.name} to be ready")  # fmt: skip
        yield cluster
    finally:
        if home is not None:
            home.stop_all()
        redis.stop()
        postgres.stop()
        emulator.stop()
        if os.environ.get("KIRIN_KEEP_DISTRIBUTED_TMP"):
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _owner(pid: int, processes: list[ManagedProcess]) -> ManagedProcess:
    """The process among ``processes`` that ``pid`` descends from (or is)."""
    import psutil

    lineage = {pid} | {p.pid for p in psutil.Process(pid).parents()}
    owners = [p for p in processes if p.popen.pid in lineage]
    assert len(owners) == 1, f"pid {pid} descends from {[p.name for p in owners]}"
    return owners[0]


@dataclass
class Figures:
    """What the test measured; printed at the end."""

    startup: float = 0.0
    all_but_one_deferred: float = 0.0
    takeover: float = 0.0
    resumed: float = 0.0
    moved: int = 0
    moved_checks: int = 0
    expected_checks: float = 0.0
    window: float = 0.0
    retry_deferred: float = 0.0
    storm_refused: int = 0
    total: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def report(self) -> str:
        extra_checks = self.moved_checks - self.expected_checks
        return "\n".join(
            [
                "Distributed Kirin scenario (2 triggerers, 2 Celery workers, PostgreSQL, Redis):",
                f"  start-up of every server             : {self.startup:6.1f} s",
                f"  trigger -> 39 of 40 waits deferred   : {self.all_but_one_deferred:6.1f} s",
                f"  triggerer SIGKILL -> waits reassigned: {self.takeover:6.1f} s ({self.moved} waits moved; "
                f"health threshold {TRIGGERER_HEALTH_THRESHOLD} s, heartbeat {TRIGGERER_HEARTBEAT_SEC} s)",
                f"  triggerer SIGKILL -> all moved polled: {self.resumed:6.1f} s",
                f"  status checks of the moved waits     : {self.moved_checks} in {self.window:.1f} s "
                f"after the kill vs {self.expected_checks:.1f} at the undisturbed waits' rate: "
                f"extra {extra_checks:+.1f} ({extra_checks / max(1, self.moved):+.2f} per moved wait)",
                f"  worker SIGKILL -> retry deferred     : {self.retry_deferred:6.1f} s",
                f"  status checks refused by the storm   : {self.storm_refused}",
                f"  emulator                             : {self.extra}",
                f"  total wall time (servers included)   : {self.total:6.1f} s",
            ]
        )


@pytest.mark.timeout(STARTUP_SECONDS + SCENARIO_SECONDS + 60)
def test_generations_survive_a_dead_triggerer_a_dead_worker_and_a_503_storm(
    cluster: Cluster, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> None:
    figures = Figures()
    t0 = time.monotonic()
    figures.startup = t0 - request.node.stash.get(_START_KEY, t0)
    deadline = t0 + SCENARIO_SECONDS

    def remaining() -> float:
        return max(1.0, deadline - time.monotonic())

    prompts = load_prompts()
    mapped = len(prompts)
    assert mapped >= 40
    assert len(set(prompts)) == mapped
    emulator, home = cluster.emulator, cluster.home

    # The 40th create is processed (the generation exists) but its response is held: the submitting
    # task is in flight when its worker dies.
    emulator.add_fault(Fault(endpoint="create", kind="delay", after_processing=True, seconds=HOLD_SECONDS,
                             skip=mapped - 1))  # fmt: skip
    cluster.cli_ok("dags", "unpause", DAG_ID, "--yes")
    cluster.cli_ok("dags", "trigger", DAG_ID, "--run-id", RUN_ID)

    # 1. 39 waits deferred; the 40th task is running, inside its held create.
    def all_but_held_deferred() -> int | None:
        if emulator.state.faults.applied.get("delay") != 1 or len(emulator.state.tasks) != mapped:
            return None
        held_task = list(emulator.state.tasks.values())[-1]
        held_index = prompts.index(held_task.params["prompt"])
        tis = cluster.tis()
        others = [state for m, (state, _, _) in tis.items() if m != held_index]
        state, _, pid = tis.get(held_index, (None, 0, None))
        if len(others) == mapped - 1 and set(others) == {"deferred"} and state == "running" and pid:
            return held_index
        return None

    held_index = cluster.wait(
        all_but_held_deferred, timeout=remaining(), what="39 waits deferred, 1 submit held"
    )
    figures.all_but_one_deferred = time.monotonic() - t0
    held_kirin_task = list(emulator.state.tasks.values())[-1]
    assert held_kirin_task.params["prompt"] == prompts[held_index]

    # 2. SIGKILL the Celery worker running the held submit (its whole tree: worker, pool, task process).
    _, first_try, pid = cluster.tis()[held_index]
    victim_worker = _owner(int(pid or 0), cluster.workers)
    victim_worker.kill()
    worker_killed_at = time.monotonic()

    # 3. SIGKILL the triggerer holding the most waits; the other must take them over.
    def all_assigned() -> dict[int | None, set[int]] | None:
        held = cluster.triggers_by_triggerer()
        return held if None not in held else None

    held_by = cluster.wait(
        all_assigned, timeout=remaining(), what="every deferred wait assigned to a triggerer"
    )
    victim_id = max(cluster.triggerers, key=lambda job_id: len(held_by.get(job_id, ())))
    (survivor_id,) = set(cluster.triggerers) - {victim_id}
    moved = held_by.get(victim_id, set())
    assert moved, f"no triggerer holds a wait: {held_by}"
    kirin_ids = {m: home.xcom(DAG_ID, RUN_ID, TASK_ID, "kirin_task_id", m) for m in range(mapped)}
    moved_kirin = {kirin_ids[m] for m in moved}
    stayed_kirin = {kirin_ids[m] for m in held_by.get(survivor_id, set())}
    checks_before = dict(emulator.state.status_checks)
    cluster.triggerers[victim_id].kill()
    killed_at = time.monotonic()
    taken_over: dict[str, float] = {}

    def moved_waits_resumed() -> bool:
        now_held = cluster.triggers_by_triggerer()
        if (
            "reassigned" not in taken_over
            and not now_held.get(victim_id)
            and moved <= now_held.get(survivor_id, set())
        ):
            taken_over["reassigned"] = time.monotonic()
        checks = emulator.state.status_checks
        polled = all(checks.get(k, 0) > checks_before.get(k, 0) for k in moved_kirin)
        if "reassigned" in taken_over and polled:
            taken_over["polled"] = time.monotonic()
            return True
        return False

    cluster.wait(moved_waits_resumed, timeout=remaining(), interval=0.2,
                 what=f"triggerer {survivor_id} to take over {sorted(moved)}")  # fmt: skip
    figures.takeover = taken_over["reassigned"] - killed_at
    figures.resumed = taken_over["polled"] - killed_at
    figures.moved = len(moved)

    # 4. The killed submit's retry reuses the held generation and defers: all 40 waits deferred at once.
    def all_deferred() -> bool:
        tis = cluster.tis()
        return len(tis) == mapped and {state for state, _, _ in tis.values()} == {"deferred"}

    cluster.wait(all_deferred, timeout=remaining(), what="all 40 waits deferred at once")
    figures.retry_deferred = time.monotonic() - worker_killed_at
    _, retry_try, _ = cluster.tis()[held_index]
    assert retry_try == first_try + 1, (first_try, retry_try)
    assert home.xcom(DAG_ID, RUN_ID, TASK_ID, "kirin_task_id", held_index) == held_kirin_task.task_id
    # Status checks after the kill: the moved waits against the rate of the undisturbed ones.
    time.sleep(max(0.0, killed_at + figures.resumed + 2 * POLL_INTERVAL - time.monotonic()))
    checks_after = dict(emulator.state.status_checks)
    figures.window = time.monotonic() - killed_at
    stayed_rate = statistics.mean(checks_after.get(k, 0) - checks_before.get(k, 0) for k in stayed_kirin) if (
        stayed_kirin
    ) else 0.0  # fmt: skip
    figures.moved_checks = sum(checks_after.get(k, 0) - checks_before.get(k, 0) for k in moved_kirin)
    figures.expected_checks = stayed_rate * len(moved_kirin)

    # 5. A 30-second 503 storm on every status check; Kirin finishes the generations 10 s into it.
    status_503_before = emulator.state.status_codes.get(503, 0)
    emulator.add_fault(
        Fault(endpoint="get", kind="http_error", status=503, times=-1, for_seconds=STORM_SECONDS)
    )
    time.sleep(COMPLETE_AFTER)
    assert {state for state, _, _ in cluster.tis().values()} == {"deferred"}, "a wait ended during the storm"
    for kirin_task in list(emulator.state.tasks.values()):
        emulator.complete_task(kirin_task.task_id)

    cluster.wait(
        lambda: home.run_state(DAG_ID, RUN_ID) in ("success", "failed"),
        timeout=remaining(),
        what="the dag run to finish",
    )
    figures.storm_refused = emulator.state.status_codes.get(503, 0) - status_503_before
    stats = emulator.stats()
    figures.extra = {k: stats[k] for k in ("create_requests", "creates", "lookups", "gets", "conflicts")}
    figures.total = time.monotonic() - request.node.stash.get(_START_KEY, t0)
    with capsys.disabled():
        print("\n" + figures.report())

    # The run and every mapped task succeeded.
    states = home.task_states(DAG_ID, RUN_ID)
    not_ok = {key: state for key, state in states.items() if state != "success"}
    assert home.run_state(DAG_ID, RUN_ID) == "success", f"not successful: {not_ok}"
    assert states == {(TASK_ID, m): "success" for m in range(mapped)}, states
    assert figures.storm_refused > 0, "the storm refused no status check"

    # Exactly one generation per task instance, from one create each: none paid twice.
    kirin_tasks = {t.task_id: t for t in emulator.state.tasks.values()}
    assert stats["creates"] == mapped, stats
    assert stats["create_requests"] == mapped, stats
    externals = [t.external_task_id for t in kirin_tasks.values()]
    assert None not in externals
    assert len(set(externals)) == mapped, externals

    # Each task's video is the one of its own prompt.
    results = home.xcoms(DAG_ID, RUN_ID, TASK_ID, "kirin_result")
    assert sorted(results) == list(range(mapped)), sorted(results)
    used = set()
    for map_index, result in results.items():
        kirin_task = kirin_tasks[result["task_id"]]
        assert kirin_task.params["prompt"] == prompts[map_index], (map_index, result["task_id"])
        assert result["status"] == "completed"
        assert result["videos"][0]["url"] == f"{emulator.url}/v1/files/{kirin_task.task_id}/video.mp4"
        used.add(kirin_task.task_id)
    assert used == set(kirin_tasks), "some generation belongs to no task"
    # The killed submit's retry got the held generation (it was created once, by the first try).
    assert results[held_index]["task_id"] == held_kirin_task.task_id
    # No other task needed its retry: the dead triggerer and the storm cost none.
    tries = {m: try_number for m, (_, try_number, _) in cluster.tis().items()}
    assert tries == {m: first_try + (m == held_index) for m in range(mapped)}, tries

    # The killed try never heard back from its create; the retry found that generation and reused it.
    logs = home.path / "logs" / f"dag_id={DAG_ID}" / f"run_id={RUN_ID}" / f"task_id={TASK_ID}"
    held_logs = logs / f"map_index={held_index}"
    killed_log = (held_logs / f"attempt={first_try}.log").read_text(errors="replace")
    retry_log = (held_logs / f"attempt={first_try + 1}.log").read_text(errors="replace")
    assert held_kirin_task.task_id not in killed_log
    assert f"Reusing Kirin task {held_kirin_task.task_id}" in retry_log
    history = home.query(
        "SELECT state FROM task_instance_history "
        "WHERE dag_id = ? AND run_id = ? AND task_id = ? AND map_index = ? AND try_number = ?",
        (DAG_ID, RUN_ID, TASK_ID, held_index, first_try),
    )
    assert history in ([("failed",)], [("up_for_retry",)]), history

    # The dead triggerer's waits ended in the survivor: each fired its event there, as the survivor's
    # own log says ("Trigger fired event ... map_index=N"), or the task's trigger log named with the
    # survivor's job id. That file is filled through the triggerer's log forwarding, which can lag
    # the stored event by more than the run takes (seen in CI on a loaded machine), so either counts.
    def not_fired_in_survivor() -> list[int]:
        own = cluster.triggerers[survivor_id].log_path.read_text(errors="replace").splitlines()
        fired = {
            int(line.split("map_index=", 1)[1].split()[0])
            for line in own
            if "Trigger fired event" in line and f"dag_id={DAG_ID}" in line and "map_index=" in line
        }
        missing = []
        for map_index in sorted(moved - fired):
            survivor_logs = (logs / f"map_index={map_index}").glob(f"attempt=*.log.trigger.{survivor_id}.log")
            if "Trigger fired event" not in "".join(p.read_text(errors="replace") for p in survivor_logs):
                missing.append(map_index)
        return missing

    cluster.wait(
        lambda: not not_fired_in_survivor(),
        timeout=30,
        what=f"'Trigger fired event' in the survivor's log or trigger log of each of {sorted(moved)}",
    )


_START_KEY = pytest.StashKey[float]()


@pytest.fixture(autouse=True)
def _record_start(request: pytest.FixtureRequest) -> None:
    """When the test's set-up began (the ``cluster`` fixture's start-up counts in the total time)."""
    request.node.stash[_START_KEY] = time.monotonic()
