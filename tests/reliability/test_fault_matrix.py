"""The fault matrix: every fault the emulator can inject, against the public surfaces a DAG author uses,
over real HTTP on loopback, with the expected outcome and the emulator's own count of generations.

One row = one fault on one surface:

- ``sync-create``: ``KirinHook().create_task(prompt, external_task_id=...)``;
- ``sync-create-no-id``: the same without an ``external_task_id`` (no lookup is possible);
- ``idempotent``: ``KirinHook().submit_idempotent(request)``, the operator's path;
- ``sync-get`` / ``sync-wait`` / ``sync-download``: ``get_task``, ``wait_for_task``, ``download_video``;
- ``async-get``: ``KirinAsyncHook().get_task`` in an event loop;
- ``trigger``: a ``KirinTaskTrigger`` rebuilt from its serialized form and run to its one event.

``creates`` is the emulator's count of tasks it actually created (each one a paid generation): it must
be 1 for every successful submission, whatever happened on the wire, and never more.

The last tests cover the retry of a whole Airflow task through ``submit_idempotent``: after a failed
generation it submits a new one under ``<id>.g2`` (no 409), after anything else it reuses the task.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from airflow_helpers import free_port
from kirin_fakes import FakeTaskInstance, fault

from airflow_provider_kirin.emulator import EmulatorServer
from airflow_provider_kirin.emulator.app import load_sample_video
from airflow_provider_kirin.exceptions import (
    SEED_ERROR_CODES,
    KirinAuthError,
    KirinBadResponseError,
    KirinConflictError,
    KirinError,
    KirinGenerationError,
    KirinRateLimitError,
    KirinResultParsingError,
    KirinStatusCheckError,
    KirinStorageError,
    KirinTaskCreationError,
    KirinTaskFailedError,
    KirinUnreachableError,
)
from airflow_provider_kirin.hooks.kirin import KirinAsyncHook, KirinHook
from airflow_provider_kirin.models import KirinTask, KirinVideoRequest
from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator
from airflow_provider_kirin.triggers.kirin import KirinTaskTrigger, task_from_event

PROMPT = "a paper boat on a rainy street, macro lens"
#: The planned wait that ``retry.py`` logs before every retry.
RETRY_WAIT = re.compile(r"retrying in ([\d.]+) s")
#: Tasks of the matrix finish fast, so that polling surfaces reach an outcome quickly.
FAST_TASKS = {"pending_seconds": 0.05, "processing_seconds": 0.15}
ONE_MIB = 1024 * 1024

SURFACES = (
    "sync-create",
    "sync-create-no-id",
    "idempotent",
    "sync-get",
    "sync-wait",
    "sync-download",
    "async-get",
    "trigger",
)
CREATE_SURFACES = ("sync-create", "sync-create-no-id", "idempotent")


@dataclass(frozen=True)
class Case:
    """One row of the matrix.

    :param surface: one of :data:`SURFACES`.
    :param faults: rules added just before the call under test.
    :param setup_faults: rules added before the task a polling surface reads is created.
    :param taken: create a task under the same ``external_task_id`` first (a real 409 on re-create).
    :param error: ``None`` for success, else the exact class of the exception the call must raise.
    :param code: the exception's ``code``; :param http_status: its ``http_status``.
    :param message: a fragment the exception's message must contain.
    :param creates: the emulator's count of created tasks (paid generations) after the call.
    :param stats: further emulator counters that must have exactly these values.
    :param conn: connection extras on top of the fast retry policy.
    :param event: the status of the trigger's event (trigger rows).
    :param poll_error_seconds: the trigger's ``max_poll_error_seconds`` (how long failed checks may go on).
    :param waits: (min, max) of every retry wait ``retry.py`` logged, when the row checks them.
    :param reused: for ``idempotent``: the ``reused`` flag ``submit_idempotent`` must return.
    :param refused: point the connection at a port nothing listens on (the request never arrives).
    :param retries: how many retries ``retry.py`` must have logged.
    """

    surface: str
    faults: tuple[dict[str, Any], ...] = ()
    setup_faults: tuple[dict[str, Any], ...] = ()
    taken: bool = False
    error: type[KirinError] | None = None
    code: str | None = None
    http_status: int | None = None
    message: str | None = None
    creates: int = 1
    stats: dict[str, int] = field(default_factory=dict)
    conn: dict[str, Any] = field(default_factory=dict)
    event: str = "success"
    poll_error_seconds: float = 10.0
    waits: tuple[float, float] | None = None
    reused: bool = False
    refused: bool = False
    retries: int | None = None

    def __post_init__(self) -> None:
        assert self.surface in SURFACES, self.surface


def row(row_id: str, surface: str, **fields: Any) -> Any:
    return pytest.param(Case(surface, **fields), id=f"{row_id}/{surface}")


BURSTS = (500, 502, 503, 504)
TIMEOUT = {"timeout": 1.0}  # read timeout (s) of the rows whose fault holds a response back longer
HELD = 2.5  # seconds a held-back response waits: longer than TIMEOUT
SMALL_CAP = {"max_response_bytes": ONE_MIB}
HUGE = {"bytes": 2 * ONE_MIB}
NESTED = "[" * 50_000  # not JSON: a parser that recurses per "[" runs out of stack

MATRIX = [
    # -- no fault: the baseline of each surface --------------------------------------------------
    row("none", "sync-create", stats={"create_requests": 1, "lookups": 0}),
    row("none", "idempotent", stats={"create_requests": 1, "lookups": 1}),
    row("none", "trigger"),
    row("none", "sync-download", stats={"downloads": 1}),
    # -- 429 with Retry-After --------------------------------------------------------------------
    row(
        "429-retry-after-1",
        "sync-create",
        faults=(fault("create", "http_error", status=429, retry_after="1"),),
        stats={"create_requests": 2, "lookups": 0},
        waits=(1.0, 1.0),
    ),
    row(
        "429-retry-after-3600-capped",
        "sync-create",
        conn={"max_retry_after": 0.2, "retry_total_seconds": 30},
        faults=(fault("create", "http_error", status=429, retry_after="3600", times=2),),
        stats={"create_requests": 3},
        waits=(0.2, 0.2),
    ),
    row(
        "429-forever",
        "sync-create",
        conn={"max_retries": 2},
        faults=(fault("create", "http_error", status=429, retry_after="0", times=-1),),
        error=KirinRateLimitError,
        code="rate_limited",
        http_status=429,
        creates=0,
        stats={"create_requests": 3, "lookups": 0},
    ),
    row(
        "429-retry-after-1",
        "idempotent",
        faults=(
            fault("lookup", "http_error", status=429, retry_after="1"),
            fault("create", "http_error", status=429, retry_after="0"),
        ),
        stats={"lookups": 2, "create_requests": 2},
    ),
    row(
        "429-retry-after-1",
        "async-get",
        faults=(fault("get", "http_error", status=429, retry_after="1"),),
        stats={"gets": 2},
        waits=(1.0, 1.0),
    ),
    row("429-retry-after-1", "trigger", faults=(fault("get", "http_error", status=429, retry_after="1"),)),
    # -- 5xx bursts: three in a row, then the service answers --------------------------------------
    *[
        row(
            f"{status}-burst",
            "sync-create",
            faults=(fault("create", "http_error", status=status, times=3),),
            stats={"create_requests": 4, "lookups": 3},  # a lookup before every re-create
        )
        for status in BURSTS
    ],
    *[
        row(
            f"{status}-burst",
            "idempotent",
            faults=(fault("create", "http_error", status=status, times=3),),
            stats={"create_requests": 4, "lookups": 4},
        )
        for status in BURSTS
    ],
    *[
        row(
            f"{status}-burst",
            "async-get",
            faults=(fault("get", "http_error", status=status, times=3),),
            stats={"gets": 4},
        )
        for status in BURSTS
    ],
    row("503-burst", "trigger", faults=(fault("get", "http_error", status=503, times=3),)),
    row(
        "502-html-body-burst",
        "sync-create",
        faults=(fault("create", "http_error", status=502, body="<html>bad gateway</html>", times=2),),
        stats={"create_requests": 3, "lookups": 2},
    ),
    row(
        "503-forever",
        "sync-create",
        conn={"max_retries": 2},
        faults=(fault("create", "http_error", status=503, times=-1),),
        error=KirinTaskCreationError,
        code="002011099",
        http_status=503,
        creates=0,
        stats={"create_requests": 3, "lookups": 2},
    ),
    row(
        "503-forever",
        "async-get",
        conn={"max_retries": 2},
        faults=(fault("get", "http_error", status=503, times=-1),),
        error=KirinStatusCheckError,
        code="002011098",
        http_status=503,
        stats={"gets": 3},
    ),
    row(
        "503-forever",
        "trigger",
        faults=(fault("get", "http_error", status=503, times=-1),),
        poll_error_seconds=0.1,  # two or three checks 0.05 s apart, by how long each takes
        event="error",
        error=KirinStatusCheckError,
        code="002011098",  # the last check's error: the emulator's 503 for a get carries it
        http_status=503,
        message="status checks in a row failed over",
    ),
    row(
        "503",
        "sync-create-no-id",
        faults=(fault("create", "http_error", status=503),),
        error=KirinTaskCreationError,
        code="002011099",
        http_status=503,
        creates=0,
        stats={"create_requests": 1, "lookups": 0},  # no id to look up: not retried blindly
    ),
    # -- connection reset before / after the create reached the server ------------------------------
    row(
        "reset-before",
        "sync-create",
        faults=(fault("create", "reset_before"),),
        stats={"create_requests": 2, "lookups": 1},
    ),
    row(
        "reset-after",
        "sync-create",
        faults=(fault("create", "reset_after"),),
        stats={"create_requests": 1, "lookups": 1},  # the lookup found it: no second create
    ),
    row(
        "reset-before",
        "idempotent",
        faults=(fault("create", "reset_before"),),
        stats={"create_requests": 2, "lookups": 2},
    ),
    row(
        "reset-after",
        "idempotent",
        faults=(fault("create", "reset_after"),),
        stats={"create_requests": 1, "lookups": 2},
    ),
    row(
        "reset-after",
        "sync-create-no-id",
        faults=(fault("create", "reset_after"),),
        error=KirinUnreachableError,
        message="not retried",
        stats={"create_requests": 1},
    ),
    row(
        "reset-before-forever",
        "sync-create",
        conn={"max_retries": 2},
        faults=(fault("create", "reset_before", times=-1),),
        error=KirinUnreachableError,
        message="may have reached Kirin",
        creates=0,
        stats={"create_requests": 3, "lookups": 2},
    ),
    row(
        "connection-refused",
        "sync-create",
        refused=True,
        conn={"max_retries": 2},
        error=KirinUnreachableError,
        message="did not reach Kirin",
        creates=0,
        retries=2,  # retried: a request that never arrived cannot have created anything
        stats={"create_requests": 0},
    ),
    row("reset-before", "trigger", faults=(fault("get", "reset_before", times=2),)),
    row("reset-after", "trigger", faults=(fault("get", "reset_after", times=2),)),
    row("reset-after", "async-get", faults=(fault("get", "reset_after"),), stats={"gets": 2}),
    # -- read timeout (the response is held back longer than the read timeout) ----------------------
    row(
        "read-timeout-after-create",
        "sync-create",
        conn=TIMEOUT,
        faults=(fault("create", "delay", seconds=HELD, after_processing=True),),
        stats={"create_requests": 1, "lookups": 1},
    ),
    row(
        "read-timeout-after-create",
        "idempotent",
        conn=TIMEOUT,
        faults=(fault("create", "delay", seconds=HELD, after_processing=True),),
        stats={"create_requests": 1, "lookups": 2},
    ),
    row(
        "read-timeout-after-create",
        "sync-create-no-id",
        conn=TIMEOUT,
        faults=(fault("create", "delay", seconds=HELD, after_processing=True),),
        error=KirinUnreachableError,
        message="not retried",
        stats={"create_requests": 1},
    ),
    row("read-timeout", "async-get", conn=TIMEOUT, faults=(fault("get", "delay", seconds=HELD),)),
    row("read-timeout", "trigger", conn=TIMEOUT, faults=(fault("get", "delay", seconds=HELD),)),
    # -- non-JSON bodies -----------------------------------------------------------------------------
    row(
        "non-json-200",
        "sync-create",
        faults=(fault("create", "non_json", times=2),),
        stats={"create_requests": 3, "lookups": 2},  # a 2xx create may have made a task: look first
    ),
    row(
        "non-json-200",
        "idempotent",
        faults=(fault("lookup", "non_json"), fault("create", "non_json")),
        stats={"lookups": 3, "create_requests": 2},
    ),
    row(
        "non-json-200-forever",
        "sync-create",
        conn={"max_retries": 2},
        faults=(fault("create", "non_json", times=-1),),
        error=KirinBadResponseError,
        http_status=200,
        message="gateway",
        creates=0,
        stats={"create_requests": 3, "lookups": 2},
    ),
    row("non-json-200", "async-get", faults=(fault("get", "non_json", times=2),), stats={"gets": 3}),
    row("non-json-200", "trigger", faults=(fault("get", "non_json", times=2),)),
    row(
        "503-deeply-nested-json-body",
        "sync-get",
        faults=(fault("get", "http_error", status=503, body=NESTED, content_type="application/json"),),
        stats={"gets": 2},
    ),
    row(
        "503-deeply-nested-json-body",
        "trigger",
        faults=(fault("get", "http_error", status=503, body=NESTED, content_type="application/json"),),
    ),
    # -- unknown status, id instead of task_id ---------------------------------------------------------
    row("unknown-status", "sync-create", faults=(fault("create", "unknown_status"),)),
    row("unknown-status", "trigger", faults=(fault("get", "unknown_status", times=3),)),
    row(
        "unknown-status",
        "idempotent",
        taken=True,
        faults=(fault("lookup", "unknown_status"),),
        reused=True,
        stats={"create_requests": 1},
    ),
    row("id-alias", "sync-create", faults=(fault("create", "id_alias"),)),
    row("id-alias", "trigger", faults=(fault("get", "id_alias", times=3),)),
    # -- failed, with each of the five seed codes (and one unknown code) ----------------------------
    *[
        row(
            f"failed-{code}",
            surface,
            setup_faults=(fault("create", "fail_task", code=code),),
            event="failed",
            error=cls,
            code=code,
        )
        for code, cls in sorted(SEED_ERROR_CODES.items())
        for surface in ("sync-wait", "trigger")
    ],
    row(
        "failed-unknown-code",
        "trigger",
        setup_faults=(fault("create", "fail_task", code="009999999"),),
        event="failed",
        error=KirinTaskFailedError,
        code="009999999",
    ),
    # -- 409 on create ----------------------------------------------------------------------------------
    row(
        "409-id-taken",
        "sync-create",
        taken=True,
        # the 409 is resolved by a lookup: the caller gets the task that holds the id, no new create
        stats={"create_requests": 2, "conflicts": 1, "lookups": 1},
    ),
    row(
        "409-id-taken",
        "idempotent",
        taken=True,
        reused=True,
        stats={"create_requests": 1, "conflicts": 0, "lookups": 1},  # looked up, never re-created
    ),
    row(
        "409-injected",
        "sync-create",
        faults=(fault("create", "http_error", status=409),),
        error=KirinConflictError,
        code=None,  # a 409 whose id no lookup finds: our own, explained conflict
        http_status=None,
        message="finds no task",
        creates=0,
        stats={"create_requests": 1, "lookups": 1},
    ),
    # -- 401 ---------------------------------------------------------------------------------------------
    row(
        "401",
        "sync-create",
        faults=(fault("create", "http_error", status=401),),
        error=KirinAuthError,
        code="unauthorized",
        http_status=401,
        creates=0,
        stats={"create_requests": 1},
    ),
    row(
        "401",
        "trigger",
        faults=(fault("get", "http_error", status=401),),
        event="error",
        error=KirinAuthError,
        code="unauthorized",
        http_status=401,
        stats={"gets": 1},
    ),
    # -- huge body (larger than max_response_bytes) ------------------------------------------------------
    row(
        "huge-body",
        "sync-get",
        conn=SMALL_CAP,
        faults=(fault("get", "huge_body", **HUGE),),
        stats={"gets": 2},
    ),
    row(
        "huge-body",
        "async-get",
        conn=SMALL_CAP,
        faults=(fault("get", "huge_body", **HUGE),),
        stats={"gets": 2},
    ),
    row("huge-body", "trigger", conn=SMALL_CAP, faults=(fault("get", "huge_body", **HUGE),)),
    # A 2xx to a create means the task exists: the retry must find it, not create again.
    row(
        "huge-body",
        "sync-create",
        conn=SMALL_CAP,
        faults=(fault("create", "huge_body", **HUGE),),
        stats={"create_requests": 1, "conflicts": 0, "lookups": 1},
    ),
    row(
        "huge-body",
        "idempotent",
        conn=SMALL_CAP,
        faults=(fault("create", "huge_body", **HUGE),),
        stats={"create_requests": 1, "conflicts": 0, "lookups": 2},
    ),
    row(
        "huge-body",
        "sync-create-no-id",
        conn=SMALL_CAP,
        faults=(fault("create", "huge_body", **HUGE),),
        error=KirinBadResponseError,
        http_status=200,
        message="not retried",
        stats={"create_requests": 1},  # no id to look up: a second create would pay twice
    ),
    # -- completed with no video -------------------------------------------------------------------------
    *[
        row(
            "completed-no-video",
            surface,
            faults=(fault("get", "completed_no_video", times=-1),),
            event="failed",
            error=KirinResultParsingError,
            message="no video URL",
        )
        for surface in ("sync-wait", "trigger")
    ],
    # -- downloads ---------------------------------------------------------------------------------------
    row(
        "truncated-download",
        "sync-download",
        faults=(fault("download", "truncated_download", bytes=1000),),
        error=KirinStorageError,
        message="Downloading the video",  # "was cut short", or the transport's IncompleteRead
        stats={"downloads": 1},
    ),
    row(
        "reset-download",
        "sync-download",
        faults=(fault("download", "reset_before"),),
        error=KirinStorageError,
        message="ConnectionError",
        stats={"downloads": 1},
    ),
]


async def run_case(case: Case, server: EmulatorServer, external_id: str, destination: Path) -> Any:
    """Drive ``case``'s surface; return what it returned (a task, ``(task, reused)``, or a path)."""
    hook = KirinHook()
    if case.taken:
        KirinHook().create_task(PROMPT, external_task_id=external_id)
    if case.surface in CREATE_SURFACES:
        server.add_faults(list(case.faults))
        if case.surface == "sync-create":
            return hook.create_task(PROMPT, external_task_id=external_id)
        if case.surface == "sync-create-no-id":
            return hook.create_task(PROMPT)
        return hook.submit_idempotent(KirinVideoRequest.build(prompt=PROMPT, external_task_id=external_id))

    server.add_faults(list(case.setup_faults))
    created = KirinHook().create_task(PROMPT, external_task_id=external_id)
    if case.surface == "sync-download":
        done = KirinHook().wait_for_task(created.task_id, poll_interval=0.05, timeout=15, first_poll_delay=0)
        server.add_faults(list(case.faults))
        return hook.download_video(done.video_urls[0], destination).path
    server.add_faults(list(case.faults))
    if case.surface == "sync-get":
        return hook.get_task(created.task_id)
    if case.surface == "sync-wait":
        return hook.wait_for_task(created.task_id, poll_interval=0.05, timeout=15, first_poll_delay=0)
    if case.surface == "async-get":
        async with KirinAsyncHook() as async_hook:
            return await async_hook.get_task(created.task_id)
    # trigger: rebuilt from its serialized form, as a triggerer does
    classpath, kwargs = KirinTaskTrigger(
        created.task_id,
        poll_interval=0.05,
        deadline=time.time() + 20,
        max_poll_error_seconds=case.poll_error_seconds,
    ).serialize()
    assert classpath == "airflow_provider_kirin.triggers.kirin.KirinTaskTrigger"
    events = [event.payload async for event in KirinTaskTrigger(**kwargs).run()]
    assert len(events) == 1, events
    assert events[0]["status"] == case.event, events[0]
    assert events[0]["kirin_task_id"] == created.task_id
    return task_from_event(events[0])


@pytest.mark.kirin_emulator(**FAST_TASKS)
@pytest.mark.parametrize("case", MATRIX)
async def test_fault_matrix(
    case: Case,
    emulator: EmulatorServer,
    use_conn: Callable[..., None],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if case.conn:
        use_conn(emulator, **case.conn)
    if case.refused:  # the same connection, on a port nothing listens on
        conn = json.loads(os.environ["AIRFLOW_CONN_KIRIN_DEFAULT"])
        conn["host"] = f"http://127.0.0.1:{free_port()}"
        monkeypatch.setenv("AIRFLOW_CONN_KIRIN_DEFAULT", json.dumps(conn))
    external_id = "fm-" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.callspec.id).strip("-")
    destination = tmp_path / "video.mp4"
    caplog.set_level(logging.WARNING, logger="airflow_provider_kirin.core.retry")

    if case.error is None:
        result = await run_case(case, emulator, external_id, destination)
        check_success(case, emulator, result, external_id, destination)
    else:
        with pytest.raises(KirinError) as info:
            await run_case(case, emulator, external_id, destination)
        error = info.value
        assert type(error) is case.error, f"{type(error).__name__}: {error}"
        assert (error.code, error.http_status) == (case.code, case.http_status), error.to_dict()
        if case.message is not None:
            assert case.message in error.message
        if case.surface == "sync-download":
            assert_empty(tmp_path)  # a failed download leaves nothing behind

    stats = emulator.stats()
    assert stats["creates"] == case.creates, stats
    assert {name: stats[name] for name in case.stats} == case.stats, stats
    if case.retries is not None:
        assert len(RETRY_WAIT.findall(caplog.text)) == case.retries, caplog.text
    if case.waits is not None:
        waits = [float(w) for w in RETRY_WAIT.findall(caplog.text)]
        assert waits, "no retry was logged"
        low, high = case.waits
        assert all(low <= wait <= high for wait in waits), waits


def assert_empty(directory: Path) -> None:
    assert list(directory.iterdir()) == []


def check_success(
    case: Case, server: EmulatorServer, result: Any, external_id: str, destination: Path
) -> None:
    if case.surface == "sync-download":
        assert result == destination
        assert destination.read_bytes() == load_sample_video()
        return
    if case.surface == "idempotent":
        task, reused = result
        assert reused is case.reused
    else:
        task = result
    assert isinstance(task, KirinTask)
    if case.surface == "sync-create-no-id":
        assert server.task(task.task_id) is not None
        return
    on_server = server.task_by_external_id(external_id)
    assert on_server is not None
    assert task.task_id == on_server["task_id"], "the caller got the task the server holds"
    if case.surface in ("sync-wait", "trigger"):
        assert task.is_completed
        assert task.video_urls


# -- the retry of a whole Airflow task: submit_idempotent again ------------------------------------------
@pytest.mark.kirin_emulator(**FAST_TASKS)
def test_retry_after_a_failed_generation_submits_a_new_one_under_g2(emulator: EmulatorServer) -> None:
    emulator.add_fault(endpoint="create", kind="fail_task", code="002011095", times=2)
    hook = KirinHook()
    request = KirinVideoRequest.build(prompt=PROMPT, external_task_id="retry-gen")

    first, reused = hook.submit_idempotent(request)
    assert (first.external_task_id, reused) == ("retry-gen", False)
    with pytest.raises(KirinGenerationError):
        hook.wait_for_task(first.task_id, poll_interval=0.05, timeout=15, first_poll_delay=0)

    second, reused = hook.submit_idempotent(request)  # the Airflow retry
    assert (second.external_task_id, reused) == ("retry-gen.g2", False)
    assert second.task_id != first.task_id
    stats = emulator.stats()
    assert (stats["creates"], stats["create_requests"], stats["conflicts"]) == (2, 2, 0)
    with pytest.raises(KirinGenerationError):
        hook.wait_for_task(second.task_id, poll_interval=0.05, timeout=15, first_poll_delay=0)

    third, reused = hook.submit_idempotent(request)  # the next retry: .g3
    assert (third.external_task_id, reused) == ("retry-gen.g3", False)
    assert hook.wait_for_task(third.task_id, poll_interval=0.05, timeout=15, first_poll_delay=0).is_completed

    again, reused = hook.submit_idempotent(request)  # a retry after success pays nothing
    assert (again.task_id, reused) == (third.task_id, True)
    stats = emulator.stats()
    assert (stats["creates"], stats["create_requests"], stats["conflicts"]) == (3, 3, 0)


@pytest.mark.parametrize("status", ["pending", "processing", "completed", "queued_for_gpu"])
def test_retry_after_an_unfinished_or_completed_task_reuses_it(emulator: EmulatorServer, status: str) -> None:
    if status == "pending":
        emulator.configure(pending_seconds=60)
    elif status in ("processing", "queued_for_gpu"):
        emulator.configure(pending_seconds=0, processing_seconds=60)
    hook = KirinHook()
    request = KirinVideoRequest.build(prompt=PROMPT, external_task_id=f"retry-{status}")
    first, reused = hook.submit_idempotent(request)
    assert reused is False
    if status == "completed":
        emulator.complete_task(first.task_id)
    if status == "queued_for_gpu":  # a status this provider has never seen: "not finished yet"
        emulator.add_fault(endpoint="lookup", kind="unknown_status", status_value=status)

    again, reused = hook.submit_idempotent(request)
    assert (again.task_id, again.status, reused) == (first.task_id, status, True)
    stats = emulator.stats()
    assert (stats["creates"], stats["create_requests"], stats["conflicts"]) == (1, 1, 0)


@pytest.mark.kirin_emulator(**FAST_TASKS)
def test_operator_retry_after_a_failed_generation_pays_for_exactly_one_more(
    emulator: EmulatorServer,
) -> None:
    """Two tries of one task instance (same dag, run, task, map index): the first generation fails,
    the second try submits ``<derived id>.g2`` and succeeds."""
    emulator.add_fault(endpoint="create", kind="fail_task", code="002011099")
    ti = FakeTaskInstance(dag_id="d", run_id="manual__1", task_id="generate", map_index=-1, pushed={})

    def attempt() -> str:
        operator = KirinTextToVideoOperator(
            task_id="generate",
            prompt=PROMPT,
            wait_for_completion=True,
            deferrable=False,
            first_poll_delay=0,
            poll_interval=0.05,
            timeout=15,
        )
        return operator.execute({"ti": ti})  # type: ignore[arg-type]

    with pytest.raises(KirinTaskCreationError) as info:
        attempt()
    assert info.value.code == "002011099"
    failed_id = ti.pushed["kirin_task_id"]
    base = emulator.task(failed_id)["external_task_id"]
    assert base.startswith("af-d-generate-")

    kirin_task_id = attempt()
    assert kirin_task_id != failed_id
    assert emulator.task(kirin_task_id)["external_task_id"] == f"{base}.g2"
    assert ti.pushed["kirin_result"]["status"] == "completed"
    stats = emulator.stats()
    assert (stats["creates"], stats["conflicts"]) == (2, 0)


def test_matrix_rows_are_unique_and_cover_every_fault_kind() -> None:
    """The table above is the one in docs/reliability.md: every emulator fault kind has a row."""
    from airflow_provider_kirin.emulator.faults import KINDS

    ids = [param.id for param in MATRIX]
    assert len(ids) == len(set(ids))
    kinds = {f["kind"] for param in MATRIX for f in (*param.values[0].faults, *param.values[0].setup_faults)}
    assert kinds == set(KINDS)
    statuses = {f.get("status") for param in MATRIX for f in param.values[0].faults}
    assert {429, 500, 502, 503, 504, 409, 401} <= statuses
    assert {param.values[0].surface for param in MATRIX} == set(SURFACES)
