"""Small test doubles and builders shared by the test modules (importable as ``kirin_fakes``; the
root ``conftest.py`` puts ``tests/`` on ``sys.path``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


class FakeTaskInstance(SimpleNamespace):
    """What the operator reads from ``context["ti"]``: its identity, and ``xcom_push`` (into
    ``pushed``). Build it with ``dag_id``, ``run_id``, ``task_id``, ``map_index`` and ``pushed={}``."""

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def fault(endpoint: str, kind: str, **params: Any) -> dict[str, Any]:
    """An emulator fault rule in its JSON form (see ``airflow_provider_kirin.emulator.faults``)."""
    return {"endpoint": endpoint, "kind": kind, **params}
