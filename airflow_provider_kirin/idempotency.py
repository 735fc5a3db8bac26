"""Deterministic ``external_task_id`` values: how a retried Airflow task finds the generation it
already paid for instead of paying for a second one.

The id is chosen *before* the create and is a pure function of the task instance, so any try, on
any worker, computes the same id and can look the task up, even if the try before it died
between sending the create and recording anything. That closes the window Airflow's
``ResumableJobMixin`` documents (a crash after submit but before the job id is persisted).

Format: ``af-<dag_id>-<task_id>-<hash>``, where the readable parts are trimmed to 40 characters
of ``[A-Za-z0-9_.-]`` and ``<hash>`` is 24 hex digits of SHA-256 over
``(namespace, dag_id, run_id, task_id, map_index)``. At most 109 characters (113 with a
``.g50`` suffix), well inside the 256 this provider allows (the API states no limit). A failed
generation's retry adds
``.g2``, ``.g3``, ... (see :meth:`~airflow_provider_kirin.hooks.kirin.KirinHook.submit_idempotent`).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _readable(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._-")[:40] or "x"


def derive_external_task_id(
    dag_id: str, run_id: str, task_id: str, map_index: int | None = -1, namespace: str = ""
) -> str:
    """The deterministic ``external_task_id`` of one task instance.

    ``namespace`` separates Airflow deployments that share one Kirin account (for example
    ``staging`` and ``prod`` running the same DAG), whose run ids can coincide.
    """
    index = -1 if map_index is None else int(map_index)
    digest = hashlib.sha256(
        "\x1f".join((namespace, dag_id, run_id, task_id, str(index))).encode("utf-8")
    ).hexdigest()[:24]
    return f"af-{_readable(dag_id)}-{_readable(task_id)}-{digest}"


def external_task_id_from_context(context: Any, namespace: str = "") -> str:
    """:func:`derive_external_task_id` for the task instance of an Airflow ``context``."""
    ti = context["ti"]
    return derive_external_task_id(
        ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1), namespace=namespace
    )
