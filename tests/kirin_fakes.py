"""Small test doubles and builders shared by the test modules (importable as ``kirin_fakes``; the
root ``conftest.py`` puts ``tests/`` on ``sys.path``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_kirin.core.batch import BatchItem


class FakeTaskInstance(SimpleNamespace):
    """What the operator reads from ``context["ti"]``: its identity, and ``xcom_push`` (into
    ``pushed``). Build it with ``dag_id``, ``run_id``, ``task_id``, ``map_index`` and ``pushed={}``."""

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def fault(endpoint: str, kind: str, **params: Any) -> dict[str, Any]:
    """An emulator fault rule in its JSON form (see ``airflow_provider_kirin.emulator.faults``)."""
    return {"endpoint": endpoint, "kind": kind, **params}


def batch_items(prompts: list[Any], run_id: str = "run-1", dag_id: str = "dag") -> list[BatchItem]:
    """Validated batch items with the ids the batch operator derives for them (task ``batch``)."""
    from airflow_provider_kirin.core.batch import parse_items, with_derived_ids

    ti = SimpleNamespace(dag_id=dag_id, run_id=run_id, task_id="batch", map_index=-1)
    return with_derived_ids(parse_items(prompts, {"duration": 5}), {"ti": ti})
