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
adds ``.g2``, ``.g3``, ... (see :func:`submit_plan`).

An ``external_task_id`` the DAG author sets is used exactly as given: it is the author's key, and
it alone then decides what is reused.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_kirin.core.retry import TransientKirinError, retried
from airflow_provider_kirin.core.steps import Plan, send
from airflow_provider_kirin.core.waiting import outcome_of
from airflow_provider_kirin.exceptions import KirinConflictError, KirinValidationError

if TYPE_CHECKING:
    from airflow_provider_kirin.models import KirinTask, KirinVideoRequest
    from airflow_provider_kirin.protocol import KirinProtocol

log = logging.getLogger(__name__)

#: Failed generations one external id may be resubmitted after (``<id>``, ``<id>.g2``, ...).
MAX_GENERATIONS_PER_ID = 50

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
    item: str | None = None,
) -> str:
    """The deterministic ``external_task_id`` of one task instance asking for one set of inputs.

    ``namespace`` separates Airflow deployments that share one Kirin account (for example
    ``staging`` and ``prod`` running the same DAG), whose run ids can coincide. ``item`` names one
    item of a batch task (its stable ``key``, else its index): part of the instance, so two items
    with the same inputs still get two ids.
    """
    index = -1 if map_index is None else int(map_index)
    parts = (namespace, dag_id, run_id, task_id, str(index)) + (() if item is None else (item,))
    instance = _sha256(*parts)[:24]
    inputs = inputs_digest(fingerprint, variant)
    return f"af-{_readable(dag_id)}-{_readable(task_id)}-{instance}-{inputs}"


def external_task_id_from_context(
    context: Any, *, fingerprint: str, variant: str = "", namespace: str = "", item: str | None = None
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
        item=item,
    )


def with_derived_external_task_id(
    request: KirinVideoRequest,
    context: Any,
    *,
    variant: str = "",
    namespace: str = "",
    item: str | None = None,
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
        context, fingerprint=request.fingerprint(), variant=variant, namespace=namespace, item=item
    )
    return request.model_copy(update={"external_task_id": derived})


# -- submitting at most once per id, without I/O -------------------------------------------------
#
# The decisions of an idempotent submit live here, once, as plans (``steps.py``): they yield the
# requests to send and the sleeps between retries; ``KirinHook`` (requests) and ``KirinAsyncHook``
# (aiohttp) only carry them out.


def generation_id(external_task_id: str, generation: int) -> str:
    """The id of the ``generation``-th submission under one external id: ``<id>``, ``<id>.g2``, ..."""
    return external_task_id if generation == 1 else f"{external_task_id}.g{generation}"


def is_unusable(task: KirinTask) -> bool:
    """A generation no retry could succeed with: it ended, and not as a usable video
    (``waiting.outcome_of``: ``failed``, or ``completed`` without a video)."""
    outcome = outcome_of(task)
    return outcome is not None and not outcome.ok


def lookup_plan(protocol: KirinProtocol, external_task_id: str) -> Plan[KirinTask | None]:
    """The task created with ``external_task_id``, or ``None`` (404), under the retry policy."""
    call = protocol.lookup(external_task_id)
    return (yield from retried(protocol.config, call.label, lambda: send(call)))


def get_plan(protocol: KirinProtocol, task_id: str) -> Plan[KirinTask]:
    """The task's current envelope, under the retry policy."""
    call = protocol.get(task_id)
    answer = yield from retried(protocol.config, call.label, lambda: send(call))
    return protocol.one_task(call, answer)


def create_once_plan(protocol: KirinProtocol, request: KirinVideoRequest) -> Plan[KirinTask]:
    """One create under the retry policy. After an attempt that may have created the task (its
    answer was lost: a 5xx, a reset, a timeout after sending), the next attempt looks the
    ``external_task_id`` up first and returns the task it finds, so a retry never pays twice. A
    create without an ``external_task_id`` that may have reached Kirin is not retried at all
    (``KirinProtocol`` raises it as final). A 409 is raised as :class:`KirinConflictError`."""
    call = protocol.create(request)
    may_exist = False

    def attempt() -> Plan[KirinTask]:
        nonlocal may_exist
        if may_exist and call.external_task_id:
            existing = yield from send(protocol.lookup(call.external_task_id))
            if existing is not None:
                log.info(
                    "Kirin task %s was created by this create's earlier attempt, whose answer was "
                    "lost; using it.",
                    existing.task_id,
                )
                return existing
        try:
            return protocol.one_task(call, (yield from send(call)))
        except TransientKirinError as err:
            may_exist = may_exist or err.may_have_created
            raise

    return (yield from retried(protocol.config, call.label, attempt))


def create_plan(protocol: KirinProtocol, request: KirinVideoRequest) -> Plan[tuple[KirinTask, bool]]:
    """Create ``request``; return ``(task, reused)``. A 409 ("external_task_id already used")
    means another try won the race between our lookup and our create, so that task is the
    generation we wanted: look it up and reuse it. Only if the lookup still finds nothing is the
    conflict raised."""
    try:
        created = yield from create_once_plan(protocol, request)
    except KirinConflictError:
        if not request.external_task_id:
            raise
        existing = yield from lookup_plan(protocol, request.external_task_id)
        if existing is None:
            raise KirinConflictError(
                f"Kirin answered 409 (external_task_id already used) for {request.external_task_id!r}, "
                "but a lookup of that id finds no task: the id may belong to another account or service."
            ) from None
        log.info(
            "Kirin task %s (external id %s) was created by a concurrent try of the same inputs; reusing it.",
            existing.task_id,
            request.external_task_id,
        )
        return existing, True
    return created, False


@dataclass(frozen=True)
class Found:
    """What :func:`find_plan` found for a request: a generation to reuse (``task``), or none, and
    then ``request`` carries the external id to create it under (``<id>`` or the next ``<id>.gN``).
    ``generation`` is N of the id found or to create (1 for ``<id>``)."""

    task: KirinTask | None
    request: KirinVideoRequest
    generation: int = 1


def find_plan(protocol: KirinProtocol, request: KirinVideoRequest) -> Plan[Found]:
    """Look ``<id>``, ``<id>.g2``, ``<id>.g3``, ... up in turn: the first task that is pending,
    processing (or in a status not seen before) or completed with a video is found for reuse; each
    one that ended unusable (:func:`is_unusable`: ``failed``, or ``completed`` without a video, so
    no retry could ever succeed with it) moves on to the next id; the first id with no task is the
    one to create under. Creates nothing."""
    from airflow_provider_kirin.models import KirinVideoRequest, validate_model

    if not request.external_task_id:
        raise KirinValidationError("external_task_id=None is invalid here; allowed: a non-empty string")
    base = request.external_task_id
    for generation in range(1, MAX_GENERATIONS_PER_ID + 1):
        candidate = generation_id(base, generation)
        existing = yield from lookup_plan(protocol, candidate)
        if existing is None:
            if candidate != base:
                request = validate_model(
                    KirinVideoRequest, {**request.to_payload(), "external_task_id": candidate}
                )
            return Found(None, request, generation)
        if not is_unusable(existing):
            return Found(existing, request, generation)
        log.info(
            "Kirin task %s (external id %s) ended %s (%s); the next try uses a new id.",
            existing.task_id,
            candidate,
            existing.status if existing.is_failed else "without a video",
            existing.error_code or "no code",
        )
    raise KirinValidationError(
        f"external_task_id={base!r} already has {MAX_GENERATIONS_PER_ID} failed generations; "
        "allowed: an id with fewer. Use a new external_task_id."
    )


def submit_plan(protocol: KirinProtocol, request: KirinVideoRequest) -> Plan[tuple[KirinTask, bool]]:
    """At most one paid generation per external id; return ``(task, reused)``: the generation
    :func:`find_plan` finds, else a new one created under the id it names (:func:`create_plan`).
    So a retry after a failed generation pays for a new one under a new, deterministic id, and a
    retry after anything else pays for nothing."""
    found = yield from find_plan(protocol, request)
    if found.task is not None:
        return found.task, True
    return (yield from create_plan(protocol, found.request))
