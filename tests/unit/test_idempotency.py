"""The derived ``external_task_id``: it follows the task instance and every input that shapes the
video, and nothing else."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_kirin.idempotency import derive_external_task_id, with_derived_external_task_id
from airflow_provider_kirin.models import KirinVideoRequest

BASE: dict[str, Any] = {"prompt": "a fox", "negative_prompt": None, "duration": 5, "aspect_ratio": "16:9"}


def derived(variant: str = "", **fields: Any) -> str:
    request = KirinVideoRequest.build(**{**BASE, **fields})
    return derive_external_task_id(
        "dag", "run-1", "task", -1, fingerprint=request.fingerprint(), variant=variant
    )


def test_same_inputs_same_id() -> None:
    assert derived() == derived()
    assert derived(duration="5") == derived(duration=5)  # the same value, as str or int


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "a fox "},
        {"negative_prompt": "blur"},
        {"duration": 10},
        {"aspect_ratio": "1:1"},
        {"mode": "pro"},
        {"watermark": True},
    ],
)
def test_every_shaping_input_changes_the_id(change: dict[str, Any]) -> None:
    assert derived(**change) != derived()


def test_callback_url_does_not_shape_the_video() -> None:
    assert derived(callback_url="https://hooks.example.com/k") == derived()


def test_variant_is_a_fresh_take() -> None:
    assert derived(variant="2") != derived()
    assert derived(variant="2") == derived(variant="2")


def test_task_instance_parts_and_namespace_change_the_id() -> None:
    fp = KirinVideoRequest.build(prompt="a fox").fingerprint()
    ids = {
        derive_external_task_id("dag", "run-1", "task", -1, fingerprint=fp),
        derive_external_task_id("dag", "run-2", "task", -1, fingerprint=fp),
        derive_external_task_id("dag", "run-1", "task", 0, fingerprint=fp),
        derive_external_task_id("dag", "run-1", "other", -1, fingerprint=fp),
        derive_external_task_id("dag", "run-1", "task", -1, namespace="prod", fingerprint=fp),
    }
    assert len(ids) == 5


def test_id_stays_within_the_api_limit_and_is_valid() -> None:
    fp = KirinVideoRequest.build(prompt="a fox").fingerprint()
    long_id = derive_external_task_id("d" * 250, "r" * 250, "t" * 250, 9999, fingerprint=fp)
    assert len(long_id) <= 126
    assert KirinVideoRequest.build(prompt="x", external_task_id=long_id + ".g50").external_task_id


def test_context_helper_derives_only_when_the_author_set_no_id() -> None:
    ti = SimpleNamespace(dag_id="dag", run_id="run-1", task_id="task", map_index=3)
    context = {"ti": ti}
    request = KirinVideoRequest.build(prompt="a fox")
    with_id = with_derived_external_task_id(request, context, variant="b")
    assert with_id.external_task_id == derive_external_task_id(
        "dag", "run-1", "task", 3, fingerprint=request.fingerprint(), variant="b"
    )
    own = KirinVideoRequest.build(prompt="a fox", external_task_id="my-key")
    assert with_derived_external_task_id(own, context, variant="b").external_task_id == "my-key"
