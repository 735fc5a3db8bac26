"""The request model enforces every rule of the vendor's page; the envelope tolerates what the contract
says a client must tolerate."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from airflow_provider_kirin.exceptions import KirinValidationError
from airflow_provider_kirin.models import MODEL_ID, KirinTask, KirinVideoRequest

VALID = {"prompt": "a red fox in fresh snow"}


def build(**overrides: object) -> KirinVideoRequest:
    return KirinVideoRequest.build(**{**VALID, **overrides})  # type: ignore[arg-type]


# -- the request ----------------------------------------------------------------------------------
def test_defaults_and_wire_form() -> None:
    payload = build().to_payload()
    assert payload == {
        "model": MODEL_ID,
        "prompt": "a red fox in fresh snow",
        "duration": "5",
        "aspect_ratio": "16:9",
        "mode": "std",
        "watermark_info": {"enabled": False},
    }


def test_every_field_on_the_wire() -> None:
    payload = build(
        negative_prompt="blur",
        duration=10,
        aspect_ratio="9:16",
        mode="pro",
        watermark=True,
        callback_url="https://hooks.example.com/kirin",
        external_task_id="run-1",
    ).to_payload()
    assert payload["duration"] == "10"
    assert payload["watermark_info"] == {"enabled": True}
    assert payload["negative_prompt"] == "blur"
    assert payload["callback_url"] == "https://hooks.example.com/kirin"
    assert payload["external_task_id"] == "run-1"
    assert payload["aspect_ratio"] == "9:16"
    assert payload["mode"] == "pro"


@pytest.mark.parametrize("duration", [5, 10, "5", "10"])
def test_duration_accepts_int_or_str_and_sends_str(duration: object) -> None:
    assert build(duration=duration).to_payload()["duration"] == str(duration)


def test_limits_are_inclusive() -> None:
    assert len(build(prompt="x" * 2500).prompt) == 2500
    assert build(prompt="x").prompt == "x"
    assert len(build(negative_prompt="n" * 2500).negative_prompt or "") == 2500
    assert build(negative_prompt="").to_payload()["negative_prompt"] == ""


@pytest.mark.parametrize(
    ("field", "value", "allowed_fragment"),
    [
        ("prompt", "", "1 to 2500 characters"),
        ("prompt", "x" * 2501, "1 to 2500 characters"),
        ("prompt", "   ", "not only white space"),
        ("prompt", 42, "1 to 2500 characters"),
        ("prompt", None, "1 to 2500 characters"),
        ("negative_prompt", "n" * 2501, "at most 2500 characters"),
        ("duration", 7, "'5', '10'"),
        ("duration", "15", "'5', '10'"),
        ("duration", True, "'5', '10'"),
        ("duration", 5.0, "'5', '10'"),
        ("aspect_ratio", "4:3", "'16:9', '9:16', '1:1'"),
        ("mode", "turbo", "'std', 'pro'"),
        ("watermark", "yes", "True or False"),
        ("callback_url", "ftp://example.com/x", "http:// or https:// URL"),
        ("callback_url", "not a url", "http:// or https:// URL"),
        ("callback_url", "https://", "http:// or https:// URL"),
        ("external_task_id", "", "1 to 256 characters"),
        ("external_task_id", " padded ", "no white space at either end"),
        ("external_task_id", "x" * 257, "at most 256 characters"),
    ],
)
def test_each_rule_rejects_naming_field_value_and_allowed(
    field: str, value: object, allowed_fragment: str
) -> None:
    with pytest.raises(KirinValidationError) as info:
        build(**{field: value})
    message = str(info.value)
    assert f"{field}=" in message
    assert allowed_fragment in message
    shown = repr(value)
    assert shown[:40] in message or "long)" in message  # long values are shortened, not dumped


def test_all_bad_fields_are_named_at_once() -> None:
    with pytest.raises(KirinValidationError) as info:
        build(mode="fast", aspect_ratio="2:1")
    assert "mode='fast'" in str(info.value)
    assert "aspect_ratio='2:1'" in str(info.value)


def test_model_is_fixed() -> None:
    with pytest.raises(Exception, match="kirin_v2_5_turbo_t2v"):
        KirinVideoRequest.model_validate({**VALID, "model": "another_model"})


def test_validation_error_is_a_value_error_too() -> None:
    with pytest.raises(ValueError, match="prompt"):
        build(prompt="")


# -- the envelope ----------------------------------------------------------------------------------
def envelope(**fields: object) -> dict:
    base = {"task_id": "kt_1", "status": "pending", "model": MODEL_ID, "external_task_id": None}
    base.update(fields)
    return base


@pytest.mark.parametrize(
    ("status", "terminal", "completed", "failed"),
    [
        ("pending", False, False, False),
        ("processing", False, False, False),
        ("completed", True, True, False),
        ("failed", True, False, True),
        ("queued_for_gpu", False, False, False),
        ("COMPLETED", True, True, False),
    ],
)
def test_every_status(status: str, terminal: bool, completed: bool, failed: bool) -> None:
    task = KirinTask.model_validate(envelope(status=status))
    assert (task.is_terminal, task.is_completed, task.is_failed) == (terminal, completed, failed)


def test_completed_envelope_accessors() -> None:
    task = KirinTask.model_validate(
        envelope(
            status="completed",
            output=[
                {
                    "content": [
                        {"type": "video", "url": "https://cdn.example.com/a.mp4", "size": "1280x720"},
                        {"type": "image", "url": "https://cdn.example.com/poster.jpg", "size": "1280x720"},
                    ]
                },
                {"content": [{"type": "video", "url": "https://cdn.example.com/b.mp4"}]},
            ],
            usage={"cost": "0.35", "discount": 0.05},
            metadata={"seed": 7},
        )
    )
    assert task.video_urls == ["https://cdn.example.com/a.mp4", "https://cdn.example.com/b.mp4"]
    assert task.cost == "0.35"
    assert task.discount == 0.05
    result = task.to_result()
    assert json.loads(json.dumps(result)) == result
    assert result["videos"][0] == {
        "url": "https://cdn.example.com/a.mp4",
        "type": "video",
        "size": "1280x720",
    }
    assert result["metadata"] == {"seed": 7}
    assert set(result) == {"task_id", "external_task_id", "status", "videos", "cost", "discount", "metadata"}


def test_failed_envelope_accessors_and_code_normalisation() -> None:
    task = KirinTask.model_validate(
        envelope(status="failed", error={"code": 2011095, "error_message": "boom"})
    )
    assert task.error_code == "002011095"
    assert task.error_message == "boom"
    assert task.cost is None
    assert task.video_urls == []


def test_unknown_fields_and_id_alias_are_tolerated() -> None:
    raw = {"id": 12345, "status": "processing", "x_future": {"a": 1}, "usage": {"cost": 0.7, "credits": 3}}
    task = KirinTask.model_validate(raw)
    assert task.task_id == "12345"
    assert task.cost == "0.7"
    assert task.model_extra == {"x_future": {"a": 1}}


@pytest.mark.parametrize(
    "raw",
    [
        {"status": "pending"},  # no id at all
        {"task_id": "", "status": "pending"},
        {"task_id": "kt_1"},  # no status
        {"task_id": "kt_1", "status": "completed", "output": "not-a-list"},
    ],
)
def test_malformed_envelopes_are_rejected_by_the_model(raw: dict) -> None:
    with pytest.raises(ValidationError):
        KirinTask.model_validate(raw)


def test_every_request_field_is_an_argument_everywhere() -> None:
    """A field declared on the model is accepted by each place a DAG author or the server meets
    it; adding a field and forgetting one of them fails here, naming it."""
    import inspect

    from airflow_provider_kirin.emulator.validation import KNOWN_FIELDS
    from airflow_provider_kirin.models import BUILD_ARGS, VIDEO_ARGS, RequestArgs
    from airflow_provider_kirin.operators.batch import KirinBatchTextToVideoOperator
    from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator

    declared = {"watermark" if name == "watermark_info" else name for name in KirinVideoRequest.model_fields}
    declared.discard("model")  # fixed, never an argument
    places = {
        "RequestArgs": {"prompt", *RequestArgs.__annotations__},
        "BUILD_ARGS": set(BUILD_ARGS),
        "KirinTextToVideoOperator": set(inspect.signature(KirinTextToVideoOperator.__init__).parameters),
        "KirinBatchTextToVideoOperator (shared defaults)": {
            "prompt",
            *inspect.signature(KirinBatchTextToVideoOperator.__init__).parameters,
        },
        "the emulator": {"watermark" if name == "watermark_info" else name for name in KNOWN_FIELDS},
    }
    missing = {
        place: sorted((declared if "Batch" not in place else set(VIDEO_ARGS)) - names)
        for place, names in places.items()
    }
    assert {place: names for place, names in missing.items() if names} == {}


def test_pending_tasks_are_shared_per_id_and_status_in_a_bounded_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_provider_kirin import models

    monkeypatch.setattr(models, "_PENDING_STUBS", {})
    monkeypatch.setattr(models, "MAX_PENDING_STUBS", 3)
    first = KirinTask.pending("kt_1", "processing")
    assert KirinTask.pending("kt_1", "processing") is first  # a wait's checks allocate no new task
    queued, other = KirinTask.pending("kt_1", "queued"), KirinTask.pending("kt_2", "processing")
    assert (queued.task_id, queued.status) == ("kt_1", "queued")
    assert (other.task_id, other.status) == ("kt_2", "processing")
    assert first is not queued
    assert first is not other
    assert (first.task_id, first.status, first.output) == ("kt_1", "processing", None)
    assert not first.is_terminal
    for n in range(10):
        KirinTask.pending(f"kt_{n}", "processing")
    assert len(models._PENDING_STUBS) <= 3
    assert KirinTask.pending("kt_1", "processing") == first  # equal, if no longer the same object
