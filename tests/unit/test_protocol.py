"""What each response means (the transport edge is a status, headers and body bytes)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr

from airflow_provider_kirin.core.config import KirinConnectionConfig
from airflow_provider_kirin.core.retry import TransientKirinError
from airflow_provider_kirin.exceptions import (
    KirinAuthError,
    KirinBadResponseError,
    KirinConflictError,
    KirinNotFoundError,
    KirinRateLimitError,
    KirinRequestRejectedError,
    KirinTaskCreationError,
    KirinTaskFailedError,
    KirinUnreachableError,
    KirinValidationError,
)
from airflow_provider_kirin.models import KirinVideoRequest
from airflow_provider_kirin.protocol import KirinProtocol

KEY = "kirin-protocol-test-key"


@pytest.fixture
def protocol() -> KirinProtocol:
    return KirinProtocol(
        KirinConnectionConfig(
            base_url="https://gw.example.com/api/",
            api_key=SecretStr(KEY),
            task_path="/jobs/{task_id}/state",
            max_retry_after=30,
            max_response_bytes=4096,
        )
    )


def body(data: object) -> bytes:
    return json.dumps(data).encode()


def test_calls_use_the_configured_paths(protocol: KirinProtocol) -> None:
    create = protocol.create(KirinVideoRequest.build(prompt="p", external_task_id="e1"))
    assert (create.method, create.url) == ("POST", "https://gw.example.com/api/v1/videos/generations")
    assert create.body is not None
    assert create.body["external_task_id"] == "e1"
    get = protocol.get("kt_1.a:b")
    assert get.url == "https://gw.example.com/api/jobs/kt_1.a%3Ab/state"
    lookup = protocol.lookup("e1")
    assert (lookup.url, lookup.params) == ("https://gw.example.com/api/v1/tasks", {"external_task_id": "e1"})


@pytest.mark.parametrize("bad", ["kt/../x y", "..", ".", "/abs", "kt\x00", "kt\u00e9"])
def test_task_ids_that_could_change_the_path_are_refused(protocol: KirinProtocol, bad: str) -> None:
    # Never a dot segment or a separator in the URL path (GET /v1/ or /v1/tasks/ with the key).
    with pytest.raises(KirinValidationError, match=r"task_id=.*letters, digits"):
        protocol.get(bad)


@pytest.mark.parametrize("bad", ["", "  ", None, 7])
def test_ids_are_validated_before_any_request(protocol: KirinProtocol, bad: object) -> None:
    with pytest.raises(KirinValidationError):
        protocol.get(bad)  # type: ignore[arg-type]


def test_headers_carry_the_key_but_nothing_else_shows_it(protocol: KirinProtocol) -> None:
    assert protocol.headers()["Authorization"] == f"Bearer {KEY}"
    assert KEY not in repr(protocol)
    assert KEY not in repr(protocol.config)
    assert KEY not in str(protocol.config.model_dump())


def test_success_parses_the_envelope(protocol: KirinProtocol) -> None:
    call = protocol.get("kt_1")
    task = protocol.interpret(call, 200, {}, body({"task_id": "kt_1", "status": "processing"}))
    assert task is not None
    assert task.status == "processing"


def test_lookup_404_is_none_but_get_404_is_an_error(protocol: KirinProtocol) -> None:
    assert protocol.interpret(protocol.lookup("e"), 404, {}, b"") is None
    with pytest.raises(KirinNotFoundError) as info:
        protocol.interpret(
            protocol.get("kt_1"), 404, {}, body({"error": {"code": "nf", "error_message": "gone"}})
        )
    assert info.value.task_id == "kt_1"
    assert "gone" in info.value.message


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, KirinRequestRejectedError),
        (401, KirinAuthError),
        (403, KirinAuthError),
        (409, KirinConflictError),
        (422, KirinRequestRejectedError),
    ],
)
def test_final_client_errors_are_raised_at_once(protocol: KirinProtocol, status: int, cls: type) -> None:
    with pytest.raises(cls) as info:
        protocol.interpret(protocol.get("kt_1"), status, {}, b"<html>nope</html>")
    assert info.value.http_status == status
    assert "<html>nope</html>" in info.value.message  # the raw snippet, for the DAG author


@pytest.mark.parametrize(
    ("status", "headers", "retry_after", "final"),
    [
        (429, {"Retry-After": "7"}, 7.0, KirinRateLimitError),
        (429, {"Retry-After": "99999"}, 30.0, KirinRateLimitError),  # capped by max_retry_after
        (503, {}, None, KirinBadResponseError),
        (500, {"Retry-After": "soon"}, None, KirinBadResponseError),
    ],
)
def test_retryable_statuses(
    protocol: KirinProtocol, status: int, headers: dict, retry_after: float | None, final: type
) -> None:
    with pytest.raises(TransientKirinError) as info:
        protocol.interpret(protocol.get("kt_1"), status, headers, b"")
    assert info.value.retry_after == retry_after
    assert type(info.value.final) is final


def test_create_5xx_with_external_id_is_retried_after_a_lookup(protocol: KirinProtocol) -> None:
    call = protocol.create(KirinVideoRequest.build(prompt="p", external_task_id="e1"))
    with pytest.raises(TransientKirinError) as info:
        protocol.interpret(call, 502, {}, b"")
    assert info.value.may_have_created


def test_create_5xx_without_external_id_is_not_retried(protocol: KirinProtocol) -> None:
    call = protocol.create(KirinVideoRequest.build(prompt="p"))
    with pytest.raises(KirinBadResponseError) as info:
        protocol.interpret(call, 502, {}, b"")
    assert info.value.may_have_created is True


def test_create_error_code_in_the_body_wins(protocol: KirinProtocol) -> None:
    call = protocol.create(KirinVideoRequest.build(prompt="p", external_task_id="e1"))
    with pytest.raises(TransientKirinError) as info:
        protocol.interpret(call, 500, {}, body({"error": {"code": "002011099", "error_message": "no"}}))
    assert type(info.value.final) is KirinTaskCreationError
    assert info.value.final.code == "002011099"


@pytest.mark.parametrize(
    "raw",
    [b"<html>gateway</html>", b"", b"{", body({"status": "pending"}), body([1, 2]), body({"task_id": "k"})],
)
def test_unparseable_success_bodies_are_transient_parse_errors(protocol: KirinProtocol, raw: bytes) -> None:
    with pytest.raises(TransientKirinError) as info:
        protocol.interpret(protocol.get("kt_1"), 200, {}, raw)
    assert isinstance(info.value.final, KirinBadResponseError)


def test_an_oversized_body_is_a_parse_error_and_quotes_a_short_snippet(protocol: KirinProtocol) -> None:
    with pytest.raises(TransientKirinError) as info:
        protocol.interpret(protocol.get("kt_1"), 200, {}, b"x" * 4096, truncated=True)
    assert "max_response_bytes=4096" in info.value.final.message
    big = b"<html>" + b"y" * 100_000 + KEY.encode()
    with pytest.raises(TransientKirinError) as info:
        protocol.interpret(protocol.get("kt_1"), 200, {}, big)
    assert len(info.value.final.message) < 1000


def test_error_bodies_are_scrubbed_of_the_key(protocol: KirinProtocol) -> None:
    from airflow_provider_kirin.core.redaction import register_secret

    register_secret(KEY)
    with pytest.raises(KirinAuthError) as info:
        protocol.interpret(
            protocol.get("kt_1"), 401, {}, body({"error": {"error_message": f"bad key {KEY}"}})
        )
    assert KEY not in str(info.value)


def test_transport_failures(protocol: KirinProtocol) -> None:
    get = protocol.get("kt_1")
    failure = protocol.transport_failure(get, ConnectionResetError("reset"))
    assert isinstance(failure, TransientKirinError)
    assert type(failure.final) is KirinUnreachableError
    assert failure.final.may_have_created is None  # a read never creates anything

    with_id = protocol.create(KirinVideoRequest.build(prompt="p", external_task_id="e1"))
    failure = protocol.transport_failure(with_id, TimeoutError("read"))
    assert isinstance(failure, TransientKirinError)
    assert failure.may_have_created
    assert type(failure.final) is KirinUnreachableError
    assert failure.final.may_have_created is True

    no_id = protocol.create(KirinVideoRequest.build(prompt="p"))
    not_retried = protocol.transport_failure(no_id, TimeoutError())
    assert type(not_retried) is KirinUnreachableError
    assert not_retried.may_have_created is True
    assert not isinstance(not_retried, KirinTaskFailedError)
    refused = protocol.transport_failure(no_id, ConnectionRefusedError())
    assert isinstance(refused, TransientKirinError)
    assert not refused.may_have_created


def _requests_connect_failure(reason: BaseException) -> BaseException:
    """What ``requests`` raises when urllib3 could not connect: ConnectionError(MaxRetryError(reason))."""
    import requests
    import urllib3.exceptions

    return requests.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/v1/tasks", reason))  # type: ignore[arg-type]


def _aiohttp_connector_error() -> BaseException:
    import aiohttp
    from aiohttp.client_reqrep import ConnectionKey

    key = ConnectionKey("gw.example.com", 443, True, True, None, None, None)
    return aiohttp.ClientConnectorError(key, OSError(111, "no route"))


@pytest.mark.parametrize(
    ("make_error", "reached"),
    [
        # never connected, whatever the text says (decided by type, not by message)
        (
            lambda: _requests_connect_failure(
                __import__("urllib3").exceptions.NewConnectionError(None, "zzz")
            ),
            False,
        ),
        (
            lambda: _requests_connect_failure(
                __import__("urllib3").exceptions.NameResolutionError("h", None, OSError())
            ),
            False,
        ),
        (lambda: __import__("requests").ConnectTimeout("connect timed out"), False),
        (_aiohttp_connector_error, False),
        (lambda: ConnectionRefusedError(111, "refused"), False),
        # may have reached the server: resets, read timeouts, total deadlines, unknown failures
        (
            lambda: _requests_connect_failure(
                __import__("urllib3").exceptions.ProtocolError("Connection refused")
            ),
            True,
        ),
        (lambda: __import__("requests").ReadTimeout("Connection refused"), True),
        (lambda: __import__("aiohttp").ServerDisconnectedError(), True),
        (lambda: ConnectionResetError("reset"), True),
        (lambda: TimeoutError("total deadline"), True),
        (lambda: RuntimeError("NewConnectionError"), True),
    ],
)
def test_whether_a_request_reached_the_server_is_decided_by_type(make_error: Any, reached: bool) -> None:
    from airflow_provider_kirin.protocol import reached_server

    assert reached_server(make_error()) is reached


def test_a_create_answer_without_the_external_id_still_carries_the_id_sent(protocol: KirinProtocol) -> None:
    call = protocol.create(KirinVideoRequest.build(prompt="p", external_task_id="mine-1"))
    task = protocol.interpret(call, 200, {}, body({"task_id": "kt_1", "status": "pending"}))
    assert task is not None
    assert task.external_task_id == "mine-1"
    echoed = protocol.interpret(
        call, 200, {}, body({"task_id": "kt_1", "status": "pending", "external_task_id": "mine-1"})
    )
    assert echoed is not None
    assert echoed.external_task_id == "mine-1"


def test_a_get_or_create_answer_without_a_task_is_a_bad_response(protocol: KirinProtocol) -> None:
    with pytest.raises(KirinBadResponseError, match="holds no task"):
        protocol.one_task(protocol.get("kt_1"), None)
