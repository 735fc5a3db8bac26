"""Airflow cluster policy for the tests' AIRFLOW_HOMEs (``tests/airflow_helpers.py`` copies it to
``<home>/config/``, where Airflow imports it in every component and task process).

The example DAGs are written as users write them, with the provider's real waiting defaults (first
check after 20 s, then every 10 s). The emulator generates in well under a second, so a test that
runs an example shortens the Kirin waits here, through ``KIRIN_TEST_*`` environment variables it
sets explicitly, instead of the example carrying test knobs. A mapped task (``.partial().expand()``)
reaches the policy as one ``MappedOperator`` whose tasks are built from its ``partial_kwargs`` when
they run: its waits are shortened there.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

#: Each ``KIRIN_TEST_*`` variable and the task arguments it sets.
KNOBS = {
    "KIRIN_TEST_FIRST_POLL_DELAY": ("first_poll_delay",),
    "KIRIN_TEST_POLL_INTERVAL": ("poll_interval", "poke_interval"),
}


def _accepted(operator_class: type) -> set[str]:
    """The keyword arguments ``operator_class`` (or a base class it passes ``**kwargs`` to) takes."""
    return {name for cls in operator_class.__mro__ for name in inspect.signature(cls.__init__).parameters}


def task_policy(task: Any) -> None:
    mapped = isinstance(getattr(task, "partial_kwargs", None), dict)  # a MappedOperator
    operator_class = task.operator_class if mapped else type(task)
    if not isinstance(operator_class, type) or not operator_class.__module__.startswith(
        "airflow_provider_kirin."
    ):
        return
    for variable, names in KNOBS.items():
        value = os.environ.get(variable)
        if value is None:
            continue
        for name in names:
            if mapped and name in _accepted(operator_class):
                task.partial_kwargs[name] = float(value)
            elif not mapped and hasattr(task, name):
                setattr(task, name, float(value))
