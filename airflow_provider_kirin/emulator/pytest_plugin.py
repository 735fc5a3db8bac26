"""Pytest fixtures for testing against the Kirin emulator.

Opt-in: enable it with ``pytest_plugins = ["airflow_provider_kirin.emulator.pytest_plugin"]`` in
your root ``conftest.py`` (or ``-p airflow_provider_kirin.emulator.pytest_plugin``). Installing the
provider registers nothing in anyone's pytest runs.

Fixtures:

* ``kirin_emulator`` -- an :class:`EmulatorServer` with fast timings (pending 0.2 s, processing
  0.5 s). One server is shared by the session; before and after each test its tasks, counters,
  faults and settings are reset. Per-test settings: ``@pytest.mark.kirin_emulator(**fields)`` or
  override the ``kirin_emulator_config`` fixture.
* ``kirin_conn_env`` -- ``kirin_emulator`` with ``AIRFLOW_CONN_KIRIN_DEFAULT`` set to it.
* ``kirin_emulator_factory`` -- ``factory(config=None, **server_kwargs)`` starts extra,
  private servers (stopped after the test).

Example::

    @pytest.mark.kirin_emulator(processing_seconds=0.1)
    def test_happy_path(kirin_conn_env):
        kirin_conn_env.add_fault(kind="http_error", endpoint="create", status=429, retry_after="0")
        ...  # run the hook/operator; it reads AIRFLOW_CONN_KIRIN_DEFAULT
        assert kirin_conn_env.stats()["create_requests"] == 2

This module imports nothing heavy at load time: it is loaded by every pytest run once installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from airflow_provider_kirin.emulator.config import EmulatorConfig
    from airflow_provider_kirin.emulator.server import EmulatorServer

FAST_TIMINGS: dict[str, Any] = {"pending_seconds": 0.2, "processing_seconds": 0.5}
"""Settings of the fixtures' emulator unless a test asks for others."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kirin_emulator(**fields): EmulatorConfig fields for the kirin_emulator fixture"
    )


@pytest.fixture(scope="session")
def kirin_emulator_session() -> Iterator[EmulatorServer]:
    """The session's shared emulator (prefer ``kirin_emulator``, which resets it per test)."""
    from airflow_provider_kirin.emulator.config import EmulatorConfig
    from airflow_provider_kirin.emulator.server import EmulatorServer

    server = EmulatorServer(EmulatorConfig(**FAST_TIMINGS)).start()
    yield server
    server.stop()


@pytest.fixture
def kirin_emulator_config(request: pytest.FixtureRequest) -> EmulatorConfig:
    """Settings for this test: :data:`FAST_TIMINGS` plus the ``kirin_emulator`` marker's fields."""
    from airflow_provider_kirin.emulator.config import EmulatorConfig

    marker = request.node.get_closest_marker("kirin_emulator")
    return EmulatorConfig(**{**FAST_TIMINGS, **(marker.kwargs if marker else {})})


@pytest.fixture
def kirin_emulator(
    kirin_emulator_session: EmulatorServer, kirin_emulator_config: EmulatorConfig
) -> Iterator[EmulatorServer]:
    """A running emulator with a clean slate: no tasks, zero counters, no faults."""
    from airflow_provider_kirin.emulator.config import EmulatorConfig

    server = kirin_emulator_session
    server.state.config = kirin_emulator_config
    server.reset()
    yield server
    server.reset()
    server.state.config = EmulatorConfig(**FAST_TIMINGS)


@pytest.fixture
def kirin_conn_env(kirin_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> EmulatorServer:
    """``kirin_emulator`` with ``AIRFLOW_CONN_KIRIN_DEFAULT`` pointing at it (JSON form)."""
    monkeypatch.setenv("AIRFLOW_CONN_KIRIN_DEFAULT", kirin_emulator.airflow_conn_json())
    return kirin_emulator


@pytest.fixture
def kirin_emulator_factory() -> Iterator[Callable[..., EmulatorServer]]:
    """Start private emulators: ``factory(EmulatorConfig(...), http="httptools")``."""
    from airflow_provider_kirin.emulator.config import EmulatorConfig
    from airflow_provider_kirin.emulator.server import EmulatorServer

    started: list[EmulatorServer] = []

    def factory(config: EmulatorConfig | None = None, **server_kwargs: Any) -> EmulatorServer:
        server = EmulatorServer(config or EmulatorConfig(**FAST_TIMINGS), **server_kwargs).start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
