"""Volume on a real Airflow: N prompts as N mapped single operators, against one batch task.

For each mode a fresh Airflow 3 (SQLite, LocalExecutor; api-server, scheduler, triggerer and
dag-processor as separate process groups, as ``tests/e2e`` runs them, through
``tests/airflow_helpers.py``) runs one DAG against the emulator in its own process (its CPU is not
counted):

``mapped``  ``KirinTextToVideoOperator.partial(wait_for_completion=True, deferrable=True)``
            ``.expand(prompt=N prompts)``: the way to do volume before the batch operator.
``batch``   one ``KirinBatchTextToVideoOperator(prompts=N prompts, max_in_flight=N)``.
``mapped_capped``  the mapped tasks in a pool of N/4 slots that deferred tasks also hold
            (``airflow pools set ... --include-deferred``): an account's concurrency limit, the
            Airflow way; at most N/4 generations run at once, and idle Airflow time counts.
``batch_capped``  the batch with ``max_in_flight=N/4``: the same limit, the provider's way.

Both use the same poll knobs, and the emulator's generations take the same time.

Measured per mode, from the trigger of the run to its end: Airflow CPU seconds (user + system of
every process of the four components and all their descendants, including exited, reaped
children: ``psutil`` ``cpu_times`` with ``children_*``, sampled before and after), per video; wall time;
task processes started (new descendants of the scheduler other than the LocalExecutor's
long-lived workers, sampled every 0.1 s); creates, lookups and status checks per video (the
emulator's counters).

Targets (issues 12 and 21): batch CPU per video at least 20x below mapped (uncapped against
uncapped, capped against capped); wall no worse; exactly one create per prompt; no more status
checks per video than mapped.

Run: ``python benchmarks/bench_batch.py [--n 200] [--processing 20] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import psutil
from _common import BenchResult, EmulatorProcess, Row, fmt, ratio, verdict
from airflow_helpers import AirflowHome, component_settings, free_port, migrate_template, wait_until

FULL_N = 200
#: The operators' defaults (``defaults.py``), the same in both modes.
POLL_INTERVAL = 10.0
FIRST_POLL_DELAY = 20.0
MODES = ("mapped", "batch", "mapped_capped", "batch_capped")
CAPPED_MODES = ("mapped_capped", "batch_capped")
#: The capped modes: at most N / this generations at once, like an account's concurrency limit
#: (50 for N = 200): the batch's ``max_in_flight``, the mapped tasks' pool (deferred tasks count).
CAP_DIVISOR = 4
POOL = "kirin_account"
#: Seconds Airflow idles, measured, before each run is triggered.
IDLE_SECONDS = 15.0

DAG_FILE = """
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_kirin.operators.batch import KirinBatchTextToVideoOperator
from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator

PROMPTS = [f"catalogue clip {{i}}: a product turning slowly on a plinth" for i in range({n})]
KNOBS = {{"poll_interval": {poll}, "first_poll_delay": {first}}}

with DAG(dag_id="bench_mapped", start_date=datetime(2026, 1, 1), schedule=None, max_active_tasks=1024):
    KirinTextToVideoOperator.partial(
        task_id="generate", wait_for_completion=True, deferrable=True, **KNOBS
    ).expand(prompt=PROMPTS)

with DAG(dag_id="bench_mapped_capped", start_date=datetime(2026, 1, 1), schedule=None, max_active_tasks=1024):
    KirinTextToVideoOperator.partial(
        task_id="generate", wait_for_completion=True, deferrable=True, pool="{pool}", **KNOBS
    ).expand(prompt=PROMPTS)

with DAG(dag_id="bench_batch", start_date=datetime(2026, 1, 1), schedule=None):
    KirinBatchTextToVideoOperator(
        task_id="batch", prompts=PROMPTS, max_in_flight={n}, deferrable=True, **KNOBS
    )

with DAG(dag_id="bench_batch_capped", start_date=datetime(2026, 1, 1), schedule=None):
    KirinBatchTextToVideoOperator(
        task_id="batch", prompts=PROMPTS, max_in_flight={cap}, deferrable=True, **KNOBS
    )
"""


@dataclass
class ModeResult:
    mode: str
    n: int
    state: str
    wall: float
    cpu: float
    task_processes: int
    creates: int
    lookups: int
    gets: int
    task_states: dict[str, int]
    #: Airflow's own CPU s per s with nothing to run (its four components idling, measured for
    #: ``IDLE_SECONDS`` before the trigger): what any run pays for its wall time.
    idle_rate: float = 0.0

    def per_video(self, value: float) -> float:
        return value / self.n

    @property
    def above_idle(self) -> float:
        """CPU s of the run beyond what idle Airflow would have used over the same wall time."""
        return max(0.0, self.cpu - self.idle_rate * self.wall)


def _tree(leader: int) -> list[psutil.Process]:
    """``leader`` and every live descendant (task processes may start their own sessions)."""
    try:
        root = psutil.Process(leader)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_cpu(leaders: list[int]) -> float:
    """CPU seconds of every live process under ``leaders``, with their exited, reaped children."""
    total = 0.0
    for leader in leaders:
        for proc in _tree(leader):
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system + times.children_user + times.children_system
    return total


class TaskProcessCounter(threading.Thread):
    """Distinct task processes seen under the scheduler (sampled every 0.1 s): every new
    descendant that is not one of the LocalExecutor's long-lived workers."""

    def __init__(self, leader: int) -> None:
        super().__init__(daemon=True)
        self.leader = leader
        self.seen: set[tuple[int, float]] = set()
        self.titles: dict[str, int] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.1):
            for proc in _tree(self.leader)[1:]:
                try:
                    key = (proc.pid, proc.create_time())
                    if key in self.seen:
                        continue
                    title = " ".join(proc.cmdline())
                except psutil.Error:
                    continue
                if "LocalExecutor" in title:
                    continue
                self.seen.add(key)
                kind = title.split(" -- ")[0][:40]
                self.titles[kind] = self.titles.get(kind, 0) + 1

    def stop(self) -> int:
        self._done.set()
        self.join(5)
        return len(self.seen)


def run_mode(
    mode: str, n: int, root: Path, template: Path, emulator: EmulatorProcess, budget: float
) -> ModeResult:
    dag_id = f"bench_{mode}"
    dags = root / f"dags-{mode}"
    dags.mkdir()
    (dags / "bench_batch_dags.py").write_text(
        DAG_FILE.format(n=n, cap=_cap(n), pool=POOL, poll=POLL_INTERVAL, first=FIRST_POLL_DELAY)
    )
    port = free_port()
    home = AirflowHome.create(
        root / f"home-{mode}",
        template,
        dags_folder=dags,
        settings={
            **component_settings(port, parallelism=32),
            "AIRFLOW__TRIGGERER__CAPACITY": "1000",
            # As in tests/e2e: a faster exit report keeps resumed deferred tasks clear of Airflow
            # 3.3's re-queue race (apache/airflow#67287).
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            "AIRFLOW_CONN_KIRIN_DEFAULT": emulator.conn_json,
        },
    )
    try:
        home.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(port))
        home.start("dag-processor", "dag-processor")
        scheduler = home.start("scheduler", "scheduler", "--skip-serve-logs")
        home.start("triggerer", "triggerer", "--skip-serve-logs")
        wait_until(
            lambda: home.query("SELECT 1 FROM dag WHERE dag_id = ? AND is_stale = 0", (dag_id,)),
            timeout=180,
            what=f"the dag-processor to store {dag_id}",
            diagnostics=home.diagnostics,
        )
        if mode == "mapped_capped":
            pool = home.cli("pools", "set", POOL, str(_cap(n)), "Kirin account", "--include-deferred")
            assert pool.returncode == 0, pool.stdout + pool.stderr
        unpause = home.cli("dags", "unpause", dag_id, "--yes")
        assert unpause.returncode == 0, unpause.stdout + unpause.stderr
        time.sleep(5)  # let start-up settle before the baseline
        emulator.reset()
        leaders = [p.popen.pid for p in home.processes]
        idle_before = tree_cpu(leaders)
        time.sleep(IDLE_SECONDS)
        idle_rate = (tree_cpu(leaders) - idle_before) / IDLE_SECONDS
        counter = TaskProcessCounter(scheduler.popen.pid)
        counter.start()
        cpu_before, started = tree_cpu(leaders), time.monotonic()
        trigger = home.cli("dags", "trigger", dag_id, "--run-id", f"bench_{mode}")
        assert trigger.returncode == 0, trigger.stdout + trigger.stderr

        def finished() -> str | None:
            state = home.run_state(dag_id, f"bench_{mode}")
            return state if state in ("success", "failed") else None

        state = str(wait_until(finished, timeout=budget, interval=0.5, what=f"{dag_id} to finish"))
        wall = time.monotonic() - started
        cpu = tree_cpu(leaders) - cpu_before
        processes = counter.stop()
        stats = emulator.stats()
        ti_states = home.query(
            "SELECT state, COUNT(*) FROM task_instance WHERE dag_id = ? GROUP BY state", (dag_id,)
        )
        print(f"   {mode}: {state} in {wall:.0f} s, {cpu:.1f} CPU s, {processes} task processes, {ti_states}")
        return ModeResult(
            mode,
            n,
            state,
            wall,
            cpu,
            processes,
            int(stats["creates"]),
            int(stats["lookups"]),
            int(stats["gets"]),
            {str(k): int(v) for k, v in ti_states},
            idle_rate,
        )
    finally:
        home.stop_all()


def _cap(n: int) -> int:
    return max(1, n // CAP_DIVISOR)


def run(
    n: int = FULL_N, processing: float = 30.0, budget: float = 900.0, modes: tuple[str, ...] = MODES
) -> BenchResult:
    root = Path(tempfile.mkdtemp(prefix="kirin-bench-batch-"))
    try:
        template = migrate_template(root / "template")
        results: dict[str, ModeResult] = {}
        with EmulatorProcess(pending_seconds=0.0, processing_seconds=processing) as emulator:
            for mode in modes:
                results[mode] = run_mode(mode, n, root, template, emulator, budget)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return _result(results, n, processing)


def _rows(batch: ModeResult, mapped: ModeResult, name: str) -> list[Row]:
    """The table rows of one batch run against the mapped run."""
    n = batch.n
    cpu_b, cpu_m = batch.per_video(batch.cpu), mapped.per_video(mapped.cpu)
    cpu_ratio = ratio(cpu_m, cpu_b)
    checks_b, checks_m = batch.per_video(batch.gets), mapped.per_video(mapped.gets)
    return [
        Row(name, "run state", batch.state, mapped.state, "", "success", verdict(batch.state == "success")),
        Row(
            name,
            "Airflow CPU s per video",
            fmt(cpu_b, 3),
            fmt(cpu_m, 3),
            fmt(ratio(cpu_b, cpu_m), 3),
            ">= 20x less",
            verdict(cpu_ratio is not None and cpu_ratio >= 20),
        ),
        Row(
            name,
            "Airflow CPU s per video above idle Airflow",
            fmt(batch.per_video(batch.above_idle), 3),
            fmt(mapped.per_video(mapped.above_idle), 3),
            fmt(ratio(batch.above_idle, mapped.above_idle), 3),
        ),
        Row(
            name,
            "Airflow idle CPU s per s (before the run)",
            fmt(batch.idle_rate, 3),
            fmt(mapped.idle_rate, 3),
        ),
        Row(
            name,
            "Airflow CPU s (all)",
            fmt(batch.cpu, 1),
            fmt(mapped.cpu, 1),
            fmt(ratio(batch.cpu, mapped.cpu)),
        ),
        Row(
            name,
            "wall s",
            fmt(batch.wall, 0),
            fmt(mapped.wall, 0),
            fmt(ratio(batch.wall, mapped.wall)),
            "no worse",
            verdict(batch.wall <= mapped.wall),
        ),
        Row(name, "task processes started", str(batch.task_processes), str(mapped.task_processes)),
        Row(
            name,
            "creates per video",
            fmt(batch.per_video(batch.creates)),
            fmt(mapped.per_video(mapped.creates)),
            "",
            "exactly 1",
            verdict(batch.creates == n),
        ),
        Row(
            name,
            "lookups per video",
            fmt(batch.per_video(batch.lookups)),
            fmt(mapped.per_video(mapped.lookups)),
        ),
        Row(
            name,
            "status checks per video",
            fmt(checks_b),
            fmt(checks_m),
            fmt(ratio(checks_b, checks_m)),
            "<= mapped",
            verdict(checks_b <= checks_m),
        ),
    ]


def _result(results: dict[str, ModeResult], n: int, processing: float) -> BenchResult:
    rows = []
    if "batch" in results:
        rows += _rows(results["batch"], results["mapped"], f"batch N={n}")
    rows += _rows(results["batch_capped"], results["mapped_capped"], f"batch N={n} cap {_cap(n)}")
    notes = [
        f"batch: {n} prompts on a real Airflow (LocalExecutor, parallelism 32, SQLite), generations of "
        f"{processing:.0f} s, poll every {POLL_INTERVAL:.0f} s after {FIRST_POLL_DELAY:.0f} s; peer column = "
        "the same prompts as mapped deferrable KirinTextToVideoOperator tasks (for `cap`, in a pool of "
        f"N/{CAP_DIVISOR} slots that deferred tasks hold too: the same limit the Airflow way). CPU is every "
        "Airflow process (api-server, scheduler + its workers and task processes, triggerer, dag-processor), "
        f"from the trigger of the run to its end; 'above idle' subtracts what the same Airflow used idling "
        f"({IDLE_SECONDS:.0f} s measured before the trigger) over the run's wall time: under a cap the wall "
        "time is set by the cap, and idle Airflow's share of it is the same for either way. "
        "`batch`: max_in_flight = N (every prompt at once, "
        f"like the mapped tasks); `cap`: max_in_flight = N/{CAP_DIVISOR}, like an account's limit, "
        "where later items' first checks come when earlier ones were seen done (batch.LearnedDurations). "
        "With every prompt at once the batch checks on each create's clock, while a mapped task's wait "
        "starts when Airflow gets its trigger running, often after the generation ended: fewer checks, "
        "noticed later."
    ]
    raw = {mode: vars(result) for mode, result in results.items()}
    return BenchResult(rows, raw, notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=FULL_N, help="prompts per run")
    parser.add_argument("--processing", type=float, default=30.0, help="seconds per generation")
    parser.add_argument("--budget", type=float, default=900.0, help="seconds each run may take")
    parser.add_argument("--quick", action="store_true", help="N = 50")
    parser.add_argument("--json", type=Path, help="write the result as JSON here")
    parser.add_argument("--capped-only", action="store_true", help="only the two capped modes")
    args = parser.parse_args(argv)
    n = 50 if args.quick and args.n == FULL_N else args.n
    modes = CAPPED_MODES if args.capped_only else MODES
    return run(n, args.processing, args.budget, modes).report(args.json)


if __name__ == "__main__":
    sys.exit(main())
