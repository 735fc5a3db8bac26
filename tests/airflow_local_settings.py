"""Airflow cluster policy for the tests' AIRFLOW_HOMEs (``tests/airflow_helpers.py`` copies it to
``<home>/config/``, where Airflow imports it in every component and task process).

The example DAGs are written as users write them, with the provider's real waiting defaults (first
check after 20 s, then every 10 s). The emulator generates in well under a second, so a test that
runs an example shortens the Kirin waits here, through ``KIRIN_TEST_*`` environment variables it
sets explicitly, instead of the example carrying test knobs.
"""

from __future__ import annotations

import os
from typing import Any


def task_policy(task: Any) -> None:
    if not type(task).__module__.startswith("airflow_provider_kirin."):
        return
    first = os.environ.get("KIRIN_TEST_FIRST_POLL_DELAY")
    if first is not None and hasattr(task, "first_poll_delay"):
        task.first_poll_delay = float(first)
    interval = os.environ.get("KIRIN_TEST_POLL_INTERVAL")
    if interval is not None:
        for name in ("poll_interval", "poke_interval"):
            if hasattr(task, name):
                setattr(task, name, float(interval))
