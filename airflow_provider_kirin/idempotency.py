"""Deterministic ``external_task_id`` values: how a retried Airflow task finds the generation it
already paid for, and only that one.

The id is chosen *before* the create and is a pure function of the task instance **and of the
inputs that shape the video**, so:

- any try, on any worker, computes the same id for the same inputs and can look the task up,
  even if the try before it died between sending the create and recording anything (the window
  Airflow's ``ResumableJobMixin`` documents: a crash after submit, before the job id is saved);
- a change of inputs (a new prompt from a Variable, a templated file or a code change, another
  duration, ...) gives another id, so a cleared task never hands back the old prompt's video;
- ``variant`` asks for a deliberate fresh take of the same inputs (any string: ``"2"``,
  ``"{{ params.take }}"``); the empty default is the plain take.

Format: ``af-<dag_id>-<task_id>-<instance>-<inputs>``, where the readable parts are trimmed to
40 characters of ``[A-Za-z0-9_.-]``, ``<instance>`` is 24 hex digits of SHA-256 over
``(namespace, dag_id, run_id, task_id, map_index)`` and ``<inputs>`` 16 hex digits of SHA-256
over ``(request fingerprint, variant)``. At most 126 characters (130 with a ``.g50`` suffix),
well inside the 256 this provider allows (the API states no limit). A failed generation's retry
adds ``.g2``, ``.g3``, ... (see :meth:`~airflow_provider_kirin.hooks.kirin.KirinHook.submit_idempotent`).

An ``external_task_id`` the DAG author sets is used exactly as given: it is the author's key, and
it alone then decides what is reused.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_kirin.models import KirinVideoRequest

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _readable(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._-")[:40] or "x"


def _sha256(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def inputs_digest(fingerprint: str, variant: str = "") -> str:
    """The ``<inputs>`` part of a derived id: 16 hex digits over the request's fingerprint
    (:meth:`~airflow_provider_kirin.models.KirinVideoRequest.fingerprint`) and the variant."""
    return _sha256(fingerprint, variant)[:16]


def derive_external_task_id(
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int | None = -1,
    namespace: str = "",
    *,
    fingerprint: str,
    variant: str = "",
) -> str:
    """The deterministic ``external_task_id`` of one task instance asking for one set of inputs.

    ``namespace`` separates Airflow deployments that share one Kirin account (for example
    ``staging`` and ``prod`` running the same DAG), whose run ids can coincide.
    """
    index = -1 if map_index is None else int(map_index)
    instance = _sha256(namespace, dag_id, run_id, task_id, str(index))[:24]
    inputs = inputs_digest(fingerprint, variant)
    return f"af-{_readable(dag_id)}-{_readable(task_id)}-{instance}-{inputs}"


def external_task_id_from_context(
    context: Any, *, fingerprint: str, variant: str = "", namespace: str = ""
) -> str:
    """:func:`derive_external_task_id` for the task instance of an Airflow ``context``."""
    ti = context["ti"]
    return derive_external_task_id(
        ti.dag_id,
        ti.run_id,
        ti.task_id,
        getattr(ti, "map_index", -1),
        namespace=namespace,
        fingerprint=fingerprint,
        variant=variant,
    )


def with_derived_external_task_id(
    request: KirinVideoRequest, context: Any, *, variant: str = "", namespace: str = ""
) -> KirinVideoRequest:
    """``request`` with the derived id of the task instance in ``context`` and of the request's own
    inputs; a request that already has an ``external_task_id`` (the author's key) is returned as is.

    In a TaskFlow task::

        request = KirinVideoRequest.build(prompt=prompt, duration=5)
        request = with_derived_external_task_id(request, get_current_context())
        task, reused = KirinHook().submit_idempotent(request)
    """
    if request.external_task_id is not None:
        return request
    derived = external_task_id_from_context(
        context, fingerprint=request.fingerprint(), variant=variant, namespace=namespace
    )
    return request.model_copy(update={"external_task_id": derived})
