"""The derived ``external_task_id``: it follows the task instance and every input that shapes the
video, and nothing else."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_kirin.core.config import KirinConnectionConfig
from airflow_provider_kirin.core.idempotency import (
    create_plan,
    derive_external_task_id,
    submit_plan,
    with_derived_external_task_id,
)
from airflow_provider_kirin.core.steps import PlanRunner, Send, Sleep, Step
from airflow_provider_kirin.models import KirinVideoRequest
from airflow_provider_kirin.protocol import KirinProtocol

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


# -- the sans-I/O submit plan both hooks carry out -------------------------------------------------------
PROTOCOL = KirinProtocol(
    KirinConnectionConfig.model_validate(
        {"base_url": "http://127.0.0.1:1", "api_key": "k" * 8, "max_retries": 3}
    )
)


def _task(status: str, external_task_id: str, **extra: Any) -> Any:
    from airflow_provider_kirin.models import KirinTask

    return KirinTask.model_validate({"task_id": f"kt-{external_task_id}", "status": status,
                                     "external_task_id": external_task_id, **extra})  # fmt: skip


def what(step: Step) -> tuple[str, ...]:
    """A step in words: ``("lookup", id)``, ``("create", id)``, ``("get", task id)`` or ``("sleep",)``."""
    if isinstance(step, Sleep):
        return ("sleep",)
    return (step.call.operation, str(step.call.external_task_id or step.call.task_id))


def test_submit_plan_looks_up_then_creates() -> None:
    plan = submit_plan(PROTOCOL, KirinVideoRequest.build(prompt="p", external_task_id="x"))
    assert what(next(plan)) == ("lookup", "x")
    step = plan.send(None)
    assert what(step) == ("create", "x")
    assert isinstance(step, Send)
    assert (step.call.body or {})["external_task_id"] == "x"
    with pytest.raises(StopIteration) as done:
        plan.send(_task("pending", "x"))
    assert done.value.value[1] is False


def test_submit_plan_moves_past_failed_generations_and_reuses_the_rest() -> None:
    plan = submit_plan(PROTOCOL, KirinVideoRequest.build(prompt="p", external_task_id="x"))
    assert what(next(plan)) == ("lookup", "x")
    assert what(plan.send(_task("failed", "x"))) == ("lookup", "x.g2")
    assert what(plan.send(_task("completed", "x.g2"))) == ("lookup", "x.g3")  # completed without a video
    with pytest.raises(StopIteration) as done:
        plan.send(_task("processing", "x.g3"))
    assert done.value.value == (_task("processing", "x.g3"), True)

    plan = submit_plan(PROTOCOL, KirinVideoRequest.build(prompt="p", external_task_id="y"))
    next(plan)
    plan.send(_task("failed", "y"))
    step = plan.send(None)
    assert what(step) == ("create", "y.g2")


def test_a_409_is_resolved_by_lookup_or_raised() -> None:
    from airflow_provider_kirin.exceptions import KirinConflictError

    plan = create_plan(PROTOCOL, KirinVideoRequest.build(prompt="p", external_task_id="z"))
    assert what(next(plan)) == ("create", "z")
    assert what(plan.throw(KirinConflictError("409"))) == ("lookup", "z")
    with pytest.raises(StopIteration) as done:
        plan.send(_task("pending", "z"))
    assert done.value.value[1] is True

    plan = create_plan(PROTOCOL, KirinVideoRequest.build(prompt="p", external_task_id="z"))
    next(plan)
    plan.throw(KirinConflictError("409"))
    with pytest.raises(KirinConflictError, match="finds no task"):
        plan.send(None)


def test_create_retries_look_up_only_after_an_attempt_that_may_have_created() -> None:
    from airflow_provider_kirin.core.retry import TransientKirinError
    from airflow_provider_kirin.exceptions import KirinBadResponseError, KirinUnreachableError

    plan = create_plan(PROTOCOL, KirinVideoRequest.build(prompt="p", external_task_id="x"))
    assert what(next(plan)) == ("create", "x")
    # a failure that did not create anything: the retry creates again, no lookup
    not_created = TransientKirinError(KirinBadResponseError("503"), may_have_created=False)
    assert what(plan.throw(not_created)) == ("sleep",)
    assert what(plan.send(None)) == ("create", "x")
    # an attempt that may have created the task: the next attempt looks it up first ...
    maybe = TransientKirinError(KirinUnreachableError("reset"), may_have_created=True)
    assert what(plan.throw(maybe)) == ("sleep",)
    assert what(plan.send(None)) == ("lookup", "x")
    # ... and uses what it finds instead of creating again
    with pytest.raises(StopIteration) as done:
        plan.send(_task("pending", "x"))
    assert done.value.value == (_task("pending", "x"), False)


def test_the_retry_policy_ends_with_the_typed_error() -> None:
    from airflow_provider_kirin.core.retry import TransientKirinError
    from airflow_provider_kirin.exceptions import KirinBadResponseError

    plan = create_plan(PROTOCOL, KirinVideoRequest.build(prompt="p", external_task_id="w"))
    runner = PlanRunner(plan)
    steps = []
    with pytest.raises(KirinBadResponseError, match="503"):
        drive(runner, steps, TransientKirinError(KirinBadResponseError("503"), may_have_created=False))
    assert steps.count(("create", "w")) == 4  # max_retries=3: four tries in all
    assert steps.count(("sleep",)) == 3


def drive(runner: PlanRunner[Any], steps: list[tuple[str, ...]], error: Exception) -> None:
    """Answer every request with ``error`` and every sleep with nothing, recording the steps."""
    while (step := runner.next_step()) is not None:
        steps.append(what(step))
        if isinstance(step, Send):
            runner.fail(error)
