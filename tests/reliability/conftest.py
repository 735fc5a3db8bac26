"""Fixtures of the reliability suite: the ``kirin_default`` connection pointed at the bundled emulator
with the real retry policy on a shorter time scale (the same pattern as ``tests/hooks/conftest.py``)."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from collections.abc import Callable

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from airflow_provider_kirin.emulator import EmulatorServer

# Hypothesis keeps caches in ``./.hypothesis`` (the repository): keep them in a temporary directory.
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="kirin-reliability-hypothesis-")
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)
set_hypothesis_home_dir(_HYPOTHESIS_HOME)

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

    return use


@pytest.fixture
def emulator(kirin_emulator: EmulatorServer, use_conn: Callable[..., None]) -> EmulatorServer:
    """The shared emulator, reset, with ``kirin_default`` pointing at it and fast retries."""
    use_conn(kirin_emulator)
    return kirin_emulator
