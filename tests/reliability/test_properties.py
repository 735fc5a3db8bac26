"""Property-based tests: whatever a DAG passes in, and whatever the network hands back, the provider
raises only its own typed errors.

- ``KirinVideoRequest.build`` with arbitrary values of arbitrary types for every field raises nothing
  but :class:`KirinValidationError`, and what it accepts is a body the API takes.
- ``KirinProtocol.interpret`` with arbitrary status codes, headers (``Retry-After`` above all) and
  bodies returns a task, ``None`` (lookup: not found), or raises a :class:`KirinError` or the internal
  :class:`TransientKirinError`, whose ``final`` is the :class:`KirinError` a hook raises when retries
  run out.
- The pieces it relies on (``parse_retry_after``, ``exception_class_for``, ``normalize_code``,
  ``outcome_of``) and the trigger-event parser ``task_from_event`` hold the same line.

Example counts are modest (300 each, ``KIRIN_PROPERTY_EXAMPLES``) so that the file runs in seconds;
``make test-fast`` (the inner loop) runs 100 of them, ``make test`` all 300.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from datetime import timezone
from decimal import Decimal
from email.utils import format_datetime
from fractions import Fraction
from typing import Any

import pytest
from airflow.sdk import Connection
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from airflow_provider_kirin.core.config import KirinConnectionConfig
from airflow_provider_kirin.core.redaction import clean_text
from airflow_provider_kirin.core.retry import TransientKirinError, parse_retry_after
from airflow_provider_kirin.core.waiting import outcome_of
from airflow_provider_kirin.exceptions import (
    KirinError,
    KirinValidationError,
    error_from_event,
    exception_class_for,
    normalize_code,
)
from airflow_provider_kirin.models import KirinTask, KirinVideoRequest
from airflow_provider_kirin.protocol import ApiCall, KirinProtocol
from airflow_provider_kirin.triggers.kirin import task_from_event

EXAMPLES = settings(
    max_examples=int(os.environ.get("KIRIN_PROPERTY_EXAMPLES", "300")),
    deadline=None,
    database=None,  # nothing written into the repository
    derandomize=True,  # the same examples every run: a pass or a failure is reproducible
    # No shrinking: a failing run stays as short as a passing one; the counterexamples found so far are
    # pinned, minimal, as plain tests at the end of this file.
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: The protocol's key: it must never show up in an error, even when a response body echoes it.
API_KEY = "kirin-property-canary-key"
MAX_RETRY_AFTER = 60.0


class StrSubclass(str):
    """A ``str`` that is not exactly ``str`` (e.g. a templated value's wrapper type)."""


def attempt(call: Callable[[], Any], allowed: Any) -> tuple[Any, Any]:
    """``(result, None)``, or ``(None, error)`` for an error of the ``allowed`` types; anything else
    propagates and fails the property."""
    try:
        return call(), None
    except allowed as error:
        return None, error


# -- arbitrary values of arbitrary types -------------------------------------------------------------
HUGE_INTS = st.integers(4_400, 6_000).map(lambda digits: 10**digits)  # too long to print by default
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    HUGE_INTS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.complex_numbers(),
    st.decimals(),
    st.fractions(),
    st.text(),
    st.text().map(StrSubclass),
    st.binary(max_size=64),
    st.binary(max_size=64).map(bytearray),
    st.datetimes(),
    st.dates(),
    st.uuids(),
    st.builds(object),
    st.just(Ellipsis),
    st.just(NotImplemented),
    st.sampled_from([int, str, type(None)]),
)
ANYTHING = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
        st.frozensets(st.integers() | st.text(max_size=8), max_size=4),
        st.sets(st.text(max_size=8), max_size=4),
    ),
    max_leaves=8,
)


def field(*plausible: Any) -> st.SearchStrategy[Any]:
    """Plausible values of a field (valid and borderline ones, so the success path runs too) or anything."""
    return st.one_of(st.sampled_from(plausible), ANYTHING)


BUILD_KWARGS = st.fixed_dictionaries(
    {
        "prompt": field("a fox in snow", "x", "x" * 2500, "x" * 2501, "", "   ", "\x00", "\ud800"),
        "negative_prompt": field(None, "", "blur", "n" * 2500, "n" * 2501),
        "duration": field(5, 10, "5", "10", 7, "5 ", 5.0, True, Decimal(5), Fraction(10)),
        "aspect_ratio": field("16:9", "9:16", "1:1", "4:3", "16:9 "),
        "mode": field("std", "pro", "STD", "ultra"),
        "watermark": field(False, True, 0, 1, "true", None),
        "callback_url": field(
            None, "https://example.com/cb", "http://127.0.0.1:9/x", "ftp://example.com", "http://[::1", "//x"
        ),
        "external_task_id": field(None, "run-1", "", " run-1", "r" * 256, "r" * 257),
    }
)


@EXAMPLES
@given(BUILD_KWARGS)
def test_request_model_raises_only_validation_errors(kwargs: dict[str, Any]) -> None:
    request, error = attempt(lambda: KirinVideoRequest.build(**kwargs), KirinValidationError)
    if error is not None:
        assert error.message.startswith("Invalid Kirin request: ")
        assert "allowed:" in error.message
        return
    # What it accepts is what the API takes: a JSON body, duration as a string, unset fields left out.
    payload = json.loads(json.dumps(request.to_payload()))
    assert payload["model"] == "kirin_v2_5_turbo_t2v"
    assert payload["duration"] in ("5", "10")
    assert payload["aspect_ratio"] in ("16:9", "9:16", "1:1")
    assert payload["mode"] in ("std", "pro")
    assert payload["watermark_info"] in ({"enabled": True}, {"enabled": False})
    assert 1 <= len(payload["prompt"]) <= 2500
    assert payload["prompt"].strip()
    assert None not in payload.values()


# -- arbitrary responses ---------------------------------------------------------------------------------
#: Read from an Airflow connection, as the hooks do (which registers the key with ``redact``).
PROTOCOL = KirinProtocol(
    KirinConnectionConfig.from_connection(
        Connection(
            conn_id="kirin_properties",
            conn_type="kirin",
            host="http://kirin.invalid",
            password=API_KEY,
            extra=json.dumps({"max_retry_after": MAX_RETRY_AFTER}),
        )
    )
)
CALLS: list[ApiCall] = [
    PROTOCOL.create(KirinVideoRequest.build(prompt="p", external_task_id="ext-1")),
    PROTOCOL.create(KirinVideoRequest.build(prompt="p")),
    PROTOCOL.get("kt_1"),
    PROTOCOL.lookup("ext-1"),
]

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["002011095", "002011099", 2011096, API_KEY, f"Bearer {API_KEY}"]),
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
STATUSES = ["pending", "processing", "completed", "failed", "COMPLETED ", "queued_for_gpu", ""]
VIDEO = st.fixed_dictionaries(
    {},
    optional={
        "type": JSON | st.just("video"),
        "url": JSON | st.just("https://cdn.example/v.mp4"),
        "size": JSON,
    },
)
ENVELOPE = st.fixed_dictionaries(
    {},
    optional={
        "task_id": JSON | st.just("kt_1"),
        "id": JSON | st.integers(),
        "external_task_id": JSON,
        "model": JSON,
        "status": JSON | st.sampled_from(STATUSES),
        "created_at": JSON,
        "output": JSON
        | st.lists(st.fixed_dictionaries({}, optional={"content": st.lists(VIDEO, max_size=2)})),
        "usage": JSON | st.fixed_dictionaries({}, optional={"cost": JSON, "discount": JSON}),
        "error": JSON
        | st.fixed_dictionaries({}, optional={"code": JSON, "error_message": JSON, "message": JSON}),
        "metadata": JSON,
    },
)
ERROR_BODY = st.fixed_dictionaries(
    {"error": JSON | st.fixed_dictionaries({"code": JSON, "error_message": JSON})}
)
BODIES = st.one_of(
    st.binary(max_size=300),
    JSON.map(json.dumps),
    ENVELOPE.map(json.dumps),
    ERROR_BODY.map(json.dumps),
    st.integers(1, 5_000).map(lambda depth: "[" * depth),  # nested past the recursion limit
    st.integers(1, 5_000).map(lambda depth: '{"error": ' * depth),
    st.just('{"task_id": "kt_1", "status": "completed", "usage": {"cost": ' + "9" * 5000 + "}}"),
    st.just(f"<html>401: invalid key Bearer {API_KEY}</html>"),
).map(lambda body: body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass"))

RETRY_AFTER = st.one_of(
    st.text(max_size=40),
    st.integers(-(10**6), 10**12).map(str),
    st.floats().map(str),
    st.datetimes(timezones=st.just(timezone.utc)).map(lambda when: format_datetime(when, usegmt=True)),
    st.sampled_from(["1", "0", "-1", "nan", "inf", "-inf", "1e999", "Wed, 21 Oct 2015 07:28:00 GMT", ""]),
    st.sampled_from(
        ["Fri, 31 Dec 9999 23:59:59 -2359", "Mon, 01 Jan 0001 00:00:00 +2359", "Thu, 31 Feb 2030"]
    ),
)
HEADERS = st.builds(
    lambda extra, retry_after: {**extra, "Retry-After": retry_after} if retry_after is not None else extra,
    st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=3),
    st.none() | RETRY_AFTER,
)
STATUS_CODES = st.one_of(
    st.sampled_from([200, 201, 202, 204, 301, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504]),
    st.integers(100, 599),
    st.integers(-1, 10_000),
)


def no_secret(error: KirinError) -> None:
    for text in (str(error), repr(error), json.dumps(error.to_dict(), default=str)):
        assert API_KEY not in text


@EXAMPLES
@given(st.sampled_from(CALLS), STATUS_CODES, HEADERS, BODIES, st.booleans())
def test_interpret_raises_only_typed_errors(
    call: ApiCall, status: int, headers: dict[str, str], body: bytes, truncated: bool
) -> None:
    outcome, error = attempt(
        lambda: PROTOCOL.interpret(call, status, headers, body, truncated=truncated),
        (KirinError, TransientKirinError),
    )
    if isinstance(error, TransientKirinError):
        assert isinstance(error.final, KirinError)
        assert status == 429 or status >= 500 or 200 <= status < 300
        assert error.retry_after is None or 0.0 <= error.retry_after <= MAX_RETRY_AFTER
        no_secret(error.final)
        return
    if isinstance(error, KirinError):
        json.dumps(error.to_dict())  # trigger events carry it
        no_secret(error)
        return
    if outcome is None:
        assert (status, call.operation) == (404, "lookup")
        return
    assert isinstance(outcome, KirinTask)
    assert 200 <= status < 300
    check_task_is_usable(outcome)


def check_task_is_usable(task: KirinTask) -> None:
    """A parsed envelope can be read, pushed to XCom and judged without anything but typed errors."""
    assert isinstance(task.task_id, str)
    assert task.task_id
    json.dumps(task.to_result())
    json.dumps(task.model_dump(mode="json"))
    assert isinstance(task.is_terminal, bool)
    assert all(isinstance(url, str) for url in task.video_urls)
    outcome = outcome_of(task)
    if outcome is None:
        assert not task.is_terminal
    elif outcome.ok:
        assert outcome.task is task
        assert task.is_completed
        assert task.video_urls
    else:
        assert task.is_terminal
        assert isinstance(outcome.error, KirinError)


@EXAMPLES
@given(st.one_of(ENVELOPE.map(json.dumps), JSON.map(json.dumps), st.binary(max_size=200)))
def test_parse_task_raises_only_transient_parse_errors(body: str | bytes) -> None:
    task, error = attempt(lambda: PROTOCOL.parse_task(CALLS[2], body, http_status=200), TransientKirinError)
    if error is not None:
        assert isinstance(error.final, KirinError)
        return
    check_task_is_usable(task)


@EXAMPLES
@given(st.none() | RETRY_AFTER, st.floats(0, 3600))
def test_retry_after_is_none_or_within_the_cap(value: str | None, cap: float) -> None:
    seconds = parse_retry_after(value, cap=cap)
    assert seconds is None or 0.0 <= seconds <= cap


@EXAMPLES
@given(JSON, st.none() | st.integers(-1000, 10_000))
def test_every_code_and_status_maps_to_a_kirin_error(code: Any, http_status: int | None) -> None:
    normalized = normalize_code(code)
    assert normalized is None or (isinstance(normalized, str) and normalized.strip() == normalized)
    cls = exception_class_for(code, http_status)
    assert issubclass(cls, KirinError)
    error = cls("message", code=code, http_status=http_status)
    # A code that echoes the key is scrubbed, then capped.
    assert error.code == (clean_text(normalized, 64) if normalized else None)


EVENTS = st.one_of(
    ANYTHING,
    st.fixed_dictionaries(
        {"status": st.sampled_from(["success", "failed", "timeout", "error"]) | JSON},
        optional={"task": ENVELOPE | JSON, "error": JSON, "kirin_task_id": JSON},
    ),
)


@EXAMPLES
@given(EVENTS)
def test_trigger_events_resolve_to_a_task_or_a_typed_error(event: Any) -> None:
    """``execute_complete`` turns whatever event it is resumed with into a task or a KirinError."""
    try:
        task = task_from_event(event)
    except KirinError:
        return
    assert isinstance(task, KirinTask)
    assert event["status"] == "success"


@EXAMPLES
@given(st.dictionaries(st.sampled_from(["error_type", "message", "code", "task_id", "http_status"]), JSON))
def test_error_events_always_rebuild_a_kirin_error(data: dict[str, Any]) -> None:
    assert isinstance(error_from_event(data), KirinError)


def test_the_strategies_reach_the_success_paths() -> None:
    """Guard against vacuous properties: the plausible values above do build a request and parse a task."""
    request = KirinVideoRequest.build(
        prompt="a fox in snow", duration="10", external_task_id=str(uuid.uuid4())
    )
    assert request.to_payload()["duration"] == "10"
    body = json.dumps(
        {"id": 7, "status": "COMPLETED ", "output": [{"content": [{"url": "https://v/x.mp4"}]}]}
    )
    task = PROTOCOL.interpret(PROTOCOL.get("7"), 200, {}, body.encode())  # a get answers for its own id
    assert task is not None
    assert (task.task_id, task.status, task.video_urls) == ("7", "completed", ["https://v/x.mp4"])


# -- the counterexamples found so far, pinned as plain tests ---------------------------------------------
@pytest.mark.parametrize("name", ["prompt", "negative_prompt", "duration", "mode", "external_task_id"])
def test_an_int_too_long_to_print_is_a_validation_error(name: str) -> None:
    """Python refuses to turn an int of more than 4300 digits into text; the error must still be typed."""
    fields: dict[str, Any] = {"prompt": "a fox in snow", name: 10**5000}
    with pytest.raises(KirinValidationError, match=name):
        KirinVideoRequest.build(**fields)


@pytest.mark.parametrize(
    ("status", "body"),
    [(503, b"[" * 3_000), (400, b'{"error": ' * 3_000), (200, b"[" * 3_000)],
    ids=["503-nested-array", "400-nested-object", "200-nested-array"],
)
def test_a_deeply_nested_body_is_a_typed_error(status: int, body: bytes) -> None:
    """A body nested deeper than Python's recursion limit is just another unparseable body."""
    with pytest.raises((KirinError, TransientKirinError)) as info:
        PROTOCOL.interpret(CALLS[2], status, {}, body)
    error = info.value.final if isinstance(info.value, TransientKirinError) else info.value
    assert isinstance(error, KirinError)
    assert error.http_status == status


@pytest.mark.parametrize("field_name", ["code", "error_message"])
def test_an_error_body_echoing_the_key_never_shows_it(field_name: str) -> None:
    body = json.dumps(
        {"error": {"code": "bad_key", "error_message": "bad key", field_name: API_KEY}}
    ).encode()
    with pytest.raises(KirinError) as info:
        PROTOCOL.interpret(CALLS[2], 401, {}, body)
    no_secret(info.value)


@pytest.mark.parametrize(
    "task",
    [{}, {"task_id": "kt_1"}, {"status": "completed"}, {"task_id": "", "status": "x"}],
    ids=["empty", "no-status", "no-task-id", "empty-task-id"],
)
def test_a_success_event_without_a_valid_task_is_a_kirin_error(task: dict[str, Any]) -> None:
    """``task_from_event`` promises a task or a KirinError: a malformed success event is not a success."""
    with pytest.raises(KirinError):
        task_from_event({"status": "success", "kirin_task_id": "kt_1", "task": task})
