"""The one map from API error codes and HTTP statuses to typed exceptions."""

from __future__ import annotations

import pickle

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout

from airflow_provider_kirin.core.redaction import clean_text, redact, register_secret
from airflow_provider_kirin.exceptions import (
    KirinAuthError,
    KirinBadResponseError,
    KirinConflictError,
    KirinError,
    KirinGenerationError,
    KirinHTTPResponseError,
    KirinNotFoundError,
    KirinRateLimitError,
    KirinRequestRejectedError,
    KirinResultParsingError,
    KirinStatusCheckError,
    KirinTaskCreationError,
    KirinTaskFailedError,
    KirinTaskTimeoutError,
    KirinValidationError,
    error_from_event,
    exception_class_for,
    normalize_code,
)

SEED = {
    "002011095": KirinGenerationError,
    "002011096": KirinResultParsingError,
    "002011097": KirinHTTPResponseError,
    "002011098": KirinStatusCheckError,
    "002011099": KirinTaskCreationError,
}


@pytest.mark.parametrize(("code", "cls"), SEED.items())
def test_seed_codes(code: str, cls: type) -> None:
    assert exception_class_for(code) is cls
    assert exception_class_for(int(code)) is cls  # a JSON number lost the leading zeros
    assert exception_class_for(code, 500) is cls  # the code wins over the status
    assert issubclass(cls, KirinTaskFailedError)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (401, KirinAuthError),
        (403, KirinAuthError),
        (404, KirinNotFoundError),
        (409, KirinConflictError),
        (429, KirinRateLimitError),
        (400, KirinRequestRejectedError),
        (422, KirinRequestRejectedError),
        (500, KirinBadResponseError),
        (502, KirinBadResponseError),
        (503, KirinBadResponseError),
        (504, KirinBadResponseError),
    ],
)
def test_http_statuses(status: int, cls: type) -> None:
    assert exception_class_for(None, status) is cls
    assert exception_class_for("unauthorized", status) is cls  # unknown codes fall back to the status


def test_unknown_code_without_status_is_a_failed_task() -> None:
    assert exception_class_for("999999999") is KirinTaskFailedError
    assert exception_class_for(None) is KirinTaskFailedError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (2011095, "002011095"),
        ("2011099", "002011099"),
        ("002011096", "002011096"),
        (" x1 ", "x1"),
        ("", None),
    ],
)
def test_normalize_code(raw: object, expected: str | None) -> None:
    assert normalize_code(raw) == expected


def test_hierarchy_for_airflow() -> None:
    assert issubclass(KirinError, AirflowException)
    assert issubclass(KirinTaskTimeoutError, AirflowSensorTimeout)  # so soft_fail applies
    assert issubclass(KirinValidationError, ValueError)


def test_error_carries_context_and_says_what_to_do() -> None:
    err = KirinGenerationError("Kirin generation failed: boom", code=2011095, task_id="kt_9", http_status=200)
    assert (err.code, err.task_id, err.http_status, err.message) == (
        "002011095",
        "kt_9",
        200,
        "Kirin generation failed: boom",
    )
    text = str(err)
    assert "task_id=kt_9" in text
    assert "code=002011095" in text
    assert KirinGenerationError.hint in text


def test_round_trips_through_events_and_pickle() -> None:
    err = KirinStatusCheckError("lost", code="002011098", task_id="kt_2", http_status=503)
    again = error_from_event(err.to_dict())
    assert type(again) is KirinStatusCheckError
    assert again.to_dict() == err.to_dict()
    unpickled = pickle.loads(pickle.dumps(err))
    assert type(unpickled) is KirinStatusCheckError
    assert str(unpickled) == str(err)


def test_unknown_event_error_type_becomes_the_base_class() -> None:
    assert type(error_from_event({"error_type": "Nope", "message": "m"})) is KirinError


def test_messages_never_hold_a_registered_secret_or_bearer_token() -> None:
    register_secret("kirin-test-secret-value")
    err = KirinAuthError(
        "server said: Authorization: Bearer kirin-test-secret-value; key=kirin-test-secret-value"
    )
    assert "kirin-test-secret-value" not in str(err)
    assert "kirin-test-secret-value" not in repr(err)
    assert "Bearer ***" in str(err)
    assert redact("Bearer abc.def") == "Bearer ***"


@pytest.mark.parametrize(
    "echo",
    [
        "kirin-escape-me/42",
        "kirin\\u002descape\\u002Dme\\/42",  # JSON: \u002d (either case) and \/
        "kirin%2Descape%2dme%2F42",  # URL-encoded
        "\\u006birin-escape-me/42",
    ],
)
def test_redact_knows_the_key_escaped(echo: str) -> None:
    register_secret("kirin-escape-me/42")
    assert redact(f"<p>{echo}</p>") == "<p>***</p>"


def test_clean_text_redacts_before_it_cuts() -> None:
    register_secret("kirin-straddle-key-0123456789")
    for at in range(280, 300):
        text = clean_text("x" * at + "kirin-straddle-key-0123456789", 300)
        assert "kirin-str" not in text
        assert "0123456789" not in text
    assert clean_text("m" * 2_000_000).endswith("(2000000 characters in all)")
    assert len(clean_text("m" * 2_000_000)) < 600
