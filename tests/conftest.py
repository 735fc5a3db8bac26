"""Shared fixtures. The emulator fixtures (``kirin_emulator``, ``kirin_conn_env``,
``kirin_emulator_factory``) come from the package's pytest plugin, enabled here with ``pytest_plugins``
(opt-in, as a user's own conftest would). Test directories may add their own ``conftest.py``.

Tiers: modules that start real Airflow processes are marked ``airflow``; ``make test-fast`` runs the
rest (``-m "not airflow"``), ``make test`` runs everything."""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:  # make ``airflow_helpers`` importable whatever the import mode
    sys.path.insert(0, _TESTS_DIR)

from airflow_helpers import AirflowHome, DagsTestRun, migrate_template  # noqa: E402

if TYPE_CHECKING:
    from airflow_provider_kirin.emulator import EmulatorServer

pytest_plugins = ["airflow_provider_kirin.emulator.pytest_plugin"]


@pytest.fixture(scope="session")
def airflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A metadata DB migrated by ``airflow db migrate`` once per run; homes start from copies.

    Under pytest-xdist the workers share one: the first to need it migrates it (under a lock) in the
    run's common temporary directory, the others wait for it and copy it."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return migrate_template(tmp_path_factory.mktemp("airflow-template"))
    shared = tmp_path_factory.getbasetemp().parent / "airflow-template"
    shared.mkdir(exist_ok=True)
    with open(shared / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            done = shared / ".migrated"
            if not done.exists():
                migrate_template(shared)
                done.touch()
            return shared / "airflow.db"
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


#: How long one ``airflow dags test`` may take.
DAGS_TEST_TIMEOUT = 150


@pytest.fixture
def dags_test(kirin_emulator: EmulatorServer) -> Callable[..., DagsTestRun]:
    """``dags_test(home, dag_id, *, server=kirin_emulator, conn_extra=None, timeout=..., warm=True,
    **env) -> DagsTestRun``: one ``airflow dags test`` in ``home`` with ``kirin_default`` pointing at
    ``server`` (with the connection extras ``conn_extra``) and the variables ``env`` (Airflow
    Variables as ``AIRFLOW_VAR_*``, the test cluster policy's ``KIRIN_TEST_*``). In the home's warm
    CLI process unless ``warm=False`` (see ``airflow_helpers``)."""

    def run(
        home: AirflowHome,
        dag_id: str,
        *,
        server: EmulatorServer | None = None,
        conn_extra: dict[str, Any] | None = None,
        timeout: float = DAGS_TEST_TIMEOUT,
        warm: bool = True,
        **env: str,
    ) -> DagsTestRun:
        conn = (server or kirin_emulator).airflow_conn_json(conn_extra)
        return home.dags_test(dag_id, {"AIRFLOW_CONN_KIRIN_DEFAULT": conn, **env}, timeout=timeout, warm=warm)

    return run


#: Fast retries for tests: the policy is the real one, only its time scale is shorter.
FAST_RETRIES: dict[str, object] = {
    "retry_max_wait": 0.05,
    "max_retries": 5,
    "timeout": 2,
    "connect_timeout": 2,
}


@pytest.fixture
def use_conn(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Point ``kirin_default`` (or another id) at a server, with :data:`FAST_RETRIES` plus ``extra``."""

    def use(
        server: EmulatorServer, conn_id: str = "kirin_default", api_key: str | None = None, **extra: object
    ) -> None:
        # Imported here, not at the top: the xdist controller loads this file too, and does not need
        # Airflow (which the hook imports: about 2 s of every pytest run's start).
        from airflow_provider_kirin.hooks.kirin import forget_connection_readings

        conn = json.loads(server.airflow_conn_json({**FAST_RETRIES, **extra}))
        if api_key is not None:
            conn["password"] = api_key
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        forget_connection_readings()  # async hooks share a reading for a while: see this change now

    return use


@pytest.fixture
def emulator(kirin_emulator: EmulatorServer, use_conn: Callable[..., None]) -> EmulatorServer:
    """The shared emulator, reset, with ``kirin_default`` pointing at it and fast retries."""
    use_conn(kirin_emulator)
    return kirin_emulator


# -- running in parallel (``make pytest``: pytest-xdist, ``--dist loadfile``) --------------------------
# Each test module runs whole on one worker: its module-scoped homes and warm CLI processes are made
# once, and no two workers share a home (each home is a temporary directory of the worker that made
# it; every server listens on a free port). (``--dist loadgroup`` would allow finer units, but it does
# not group on pytest 9.2 with xdist 3.8: pytest-dev/pytest-xdist#1386.)
#: Modules that start Airflow or wait long, longest first (seconds each takes alone, measured on a
#: quiet 2-core machine; re-measure with ``--durations``): they are handed out first, so that the
#: idle ones overlap the busy ones and no long module starts last. Any other module with a test
#: marked ``airflow`` or ``slow`` follows them; the unit tier comes last.
LONG_MODULES = (
    "tests/e2e/test_real_airflow.py",  # four components, ~150 s
    "tests/dags/test_example_dags.py",  # ~20 `dags test`, ~90 s
    "tests/reliability/test_outage.py",  # ~85 s, idle
    "tests/hooks/test_batch_at_volume.py",  # ~60 s
    "tests/operators/test_operator_and_sensor.py",
    "tests/operators/test_batch_operator.py",
    "tests/packaging/test_wheel.py",
    "tests/reliability/test_retry_reuses_generation.py",
    "tests/benchmarks/test_bench_smoke.py",
)
#: Modules of the unit tier that mostly wait (deadlines, Retry-After, generations; seconds of wall
#: time against under a fifth of it in CPU): handed out right after :data:`LONG_MODULES`, beside the
#: CPU-heavy Airflow modules, rather than at the end, where three of them waiting at once can leave
#: the CPU idle.
WAITING_MODULES = (
    "tests/reliability/test_fault_matrix.py",  # ~25 s, 3 s of CPU
    "tests/hooks/test_batch_trigger.py",
    "tests/reliability/test_hostile_server.py",
    "tests/emulator/test_emulator.py",
    "tests/hooks/test_async_hook_and_trigger.py",
    "tests/hooks/test_sync_hook.py",
    "tests/hooks/test_metrics.py",
    "tests/reliability/test_emulator_safety.py",
    "tests/reliability/test_secrets.py",
    "tests/hooks/test_batch_spend.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under xdist, :data:`LONG_MODULES` first, then :data:`WAITING_MODULES`, then the other modules
    that start Airflow or wait long, then the rest: xdist hands modules out in collection order
    (``--no-loadscope-reorder``)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return

    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0]

    marked = ("airflow", "slow")
    long_running = {module(item) for item in items if any(map(item.get_closest_marker, marked))}

    ordered = LONG_MODULES + WAITING_MODULES

    def rank(item: pytest.Item) -> int:
        if module(item) in ordered:
            return ordered.index(module(item))
        return len(ordered) + (module(item) not in long_running)

    items.sort(key=rank)  # stable: collection order within a rank, so modules stay whole


#: Fixtures that run servers and can show the tail of their logs (``diagnostics()``): a real
#: Airflow (``tests/e2e``) and a cluster of servers (``tests/distributed``).
DIAGNOSED_FIXTURES = ("real_airflow", "cluster")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
    """A failing test that used one of :data:`DIAGNOSED_FIXTURES` gets the tail of its servers' logs."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for name in DIAGNOSED_FIXTURES:
        diagnostics = getattr(getattr(item, "funcargs", {}).get(name), "diagnostics", None)
        if callable(diagnostics):
            report.sections.append((f"{name} logs ({report.when})", diagnostics()))


# -- how many Airflow processes the run started (airflow_helpers.STARTS) ---------------------------------
def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist worker hands its counts to the controller (``pytest_testnodedown`` below)."""
    import airflow_helpers

    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["airflow_starts"] = dict(airflow_helpers.STARTS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """Also: the first worker to finish touches ``$KIRIN_SUITE_TAIL_FILE``, if set. From then on
    the run is in its tail (fewer modules left than workers), and ``make test`` starts the compat
    lines beside it rather than after it."""
    import airflow_helpers

    airflow_helpers.STARTS.update(getattr(node, "workeroutput", {}).get("airflow_starts", {}))
    if tail_file := os.environ.get("KIRIN_SUITE_TAIL_FILE"):
        Path(tail_file).touch()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line: the Airflow processes the tests started through ``airflow_helpers``, by kind."""
    import airflow_helpers

    starts = airflow_helpers.STARTS
    if starts:
        kinds = ", ".join(f"{kind}: {count}" for kind, count in sorted(starts.items()))
        cold = sum(count for kind, count in starts.items() if kind != "commands run warm")
        terminalreporter.write_line(f"Airflow processes started: {cold} ({kinds})")
