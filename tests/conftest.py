"""Shared fixtures. The emulator fixtures (``kirin_emulator``, ``kirin_conn_env``,
``kirin_emulator_factory``) come from the package's pytest plugin, enabled here with ``pytest_plugins``
(opt-in, as a user's own conftest would). Test directories may add their own ``conftest.py``.

Tiers: modules that start real Airflow processes are marked ``airflow``; ``make test-fast`` runs the
rest (``-m "not airflow"``), ``make test`` runs everything."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:  # make ``airflow_helpers`` importable whatever the import mode
    sys.path.insert(0, _TESTS_DIR)

from airflow_helpers import migrate_template  # noqa: E402

from airflow_provider_kirin.emulator import EmulatorServer  # noqa: E402
from airflow_provider_kirin.hooks.kirin import forget_connection_readings  # noqa: E402

pytest_plugins = ["airflow_provider_kirin.emulator.pytest_plugin"]


@pytest.fixture(scope="session")
def airflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A metadata DB migrated by ``airflow db migrate`` once per session; homes start from copies."""
    return migrate_template(tmp_path_factory.mktemp("airflow-template"))


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
