"""A local emulator of the Kirin V2.5 Turbo text-to-video API, for tests, demos and benchmarks.

It speaks the contract of ``docs/api-contract.md`` over real HTTP, moves tasks through
``pending -> processing -> completed|failed`` on a configurable clock, serves a real MP4, and can
be told to misbehave (HTTP errors, connection resets, delays, odd payloads) with fault rules.

Example::

    from airflow_provider_kirin.emulator import EmulatorConfig, EmulatorServer, Fault

    with EmulatorServer(EmulatorConfig(pending_seconds=0.2, processing_seconds=0.5)) as emu:
        emu.add_fault(Fault(endpoint="create", kind="reset_after"))
        ...  # point the client at emu.url with key emu.api_key

Command line: ``python -m airflow_provider_kirin.emulator --port 8765``.
Pytest: ``pytest_plugins = ["airflow_provider_kirin.emulator.pytest_plugin"]``.

Importing this package starts nothing and does not import FastAPI or uvicorn; ``create_app`` and
``EmulatorServer`` are loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_kirin.emulator.config import DEFAULT_API_KEY, EmulatorConfig
from airflow_provider_kirin.emulator.faults import Fault

if TYPE_CHECKING:
    from airflow_provider_kirin.emulator.app import create_app
    from airflow_provider_kirin.emulator.server import EmulatorServer

__all__ = ["DEFAULT_API_KEY", "EmulatorConfig", "EmulatorServer", "Fault", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from airflow_provider_kirin.emulator.app import create_app

        return create_app
    if name == "EmulatorServer":
        from airflow_provider_kirin.emulator.server import EmulatorServer

        return EmulatorServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
