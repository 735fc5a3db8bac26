"""The operator's and the sensor's branches in this process, against the emulator: what they do in
the worker, what they hand the triggerer, and how they resume, without an Airflow process (the
``airflow dags test`` runs in ``test_operator_and_sensor.py`` and ``tests/dags`` show the same
paths inside Airflow)."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.exceptions import TaskDeferred
from kirin_fakes import FakeTaskInstance

from airflow_provider_kirin.emulator import EmulatorServer
from airflow_provider_kirin.exceptions import KirinGenerationError, KirinValidationError
from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator
from airflow_provider_kirin.sensors.kirin import KirinTaskSensor
from airflow_provider_kirin.triggers.kirin import KirinTaskTrigger

QUICK = {"pending_seconds": 0.05, "processing_seconds": 0.15}
WAIT = {"first_poll_delay": 0.0, "poll_interval": 0.05, "timeout": 15}


def task_instance(task_id: str = "generate") -> FakeTaskInstance:
    return FakeTaskInstance(dag_id="d", run_id="manual__1", task_id=task_id, map_index=-1, pushed={})


async def fire(trigger: KirinTaskTrigger) -> dict[str, Any]:
    """The trigger rebuilt from its serialized form, as a triggerer does; its one event."""
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_kirin.triggers.kirin.KirinTaskTrigger"
    events = [event.payload async for event in KirinTaskTrigger(**kwargs).run()]
    assert len(events) == 1, events
    return events[0]


@pytest.mark.kirin_emulator(**QUICK)
async def test_deferrable_operator_submits_defers_and_resumes(emulator: EmulatorServer) -> None:
    ti = task_instance()
    operator = KirinTextToVideoOperator(
        task_id="generate", prompt="a fox", wait_for_completion=True, deferrable=True, **WAIT
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({"ti": ti})  # type: ignore[arg-type]
    kirin_task_id = ti.pushed["kirin_task_id"]
    assert emulator.stats()["creates"] == 1
    assert "kirin_result" not in ti.pushed  # nothing waited in the worker
    assert deferred.value.method_name == "execute_complete"
    resume = dict(deferred.value.kwargs)
    lineage = resume.pop("kirin_lineage")  # what the deferring try knew, for the lineage facets
    assert resume == {"reused": False, "max_cost": None}
    assert (lineage["kirin_task_id"], lineage["reused"]) == (kirin_task_id, False)
    trigger = deferred.value.trigger
    assert isinstance(trigger, KirinTaskTrigger)

    event = await fire(trigger)
    assert (event["status"], event["kirin_task_id"]) == ("success", kirin_task_id)
    resumed = operator.execute_complete({"ti": ti}, event, **deferred.value.kwargs)  # type: ignore[arg-type]
    assert resumed == kirin_task_id
    assert ti.pushed["kirin_result"]["status"] == "completed"
    assert ti.pushed["kirin_result"]["reused"] is False
    assert operator.kirin_video_url == ti.pushed["kirin_result"]["videos"][0]["url"]
    assert emulator.stats()["creates"] == 1


@pytest.mark.kirin_emulator(**QUICK)
async def test_deferred_failed_generation_resumes_into_its_typed_error(emulator: EmulatorServer) -> None:
    emulator.add_fault(endpoint="create", kind="fail_task", code="002011095")
    ti = task_instance()
    operator = KirinTextToVideoOperator(
        task_id="generate", prompt="a fox", wait_for_completion=True, deferrable=True, **WAIT
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({"ti": ti})  # type: ignore[arg-type]
    event = await fire(deferred.value.trigger)  # type: ignore[arg-type]
    assert event["status"] == "failed"
    with pytest.raises(KirinGenerationError) as error:
        operator.execute_complete({"ti": ti}, event, **deferred.value.kwargs)  # type: ignore[arg-type]
    assert (error.value.code, error.value.task_id) == ("002011095", ti.pushed["kirin_task_id"])
    assert "kirin_result" not in ti.pushed


@pytest.mark.kirin_emulator(**QUICK)
def test_operator_waits_in_the_worker_when_not_deferrable(emulator: EmulatorServer) -> None:
    ti = task_instance()
    operator = KirinTextToVideoOperator(
        task_id="generate", prompt="a fox", wait_for_completion=True, deferrable=False, **WAIT
    )
    kirin_task_id = operator.execute({"ti": ti})  # type: ignore[arg-type]
    assert kirin_task_id == ti.pushed["kirin_task_id"]
    assert ti.pushed["kirin_result"]["status"] == "completed"
    assert emulator.stats()["creates"] == 1


@pytest.mark.parametrize("deferrable", [True, False])
def test_a_retry_after_the_generation_finished_reuses_it_without_waiting(
    emulator: EmulatorServer, deferrable: bool
) -> None:
    """Try 2 of a task whose worker died after Kirin finished: the same inputs find the completed
    generation, which is the result at once (no defer, no wait, no second create)."""
    first = KirinTextToVideoOperator(task_id="generate", prompt="a fox")
    kirin_task_id = first.execute({"ti": task_instance()})  # type: ignore[arg-type]
    emulator.complete_task(kirin_task_id)

    ti = task_instance()
    retry = KirinTextToVideoOperator(
        task_id="generate", prompt="a fox", wait_for_completion=True, deferrable=deferrable, **WAIT
    )
    assert retry.execute({"ti": ti}) == kirin_task_id  # type: ignore[arg-type]
    assert (ti.pushed["kirin_result"]["status"], ti.pushed["kirin_result"]["reused"]) == ("completed", True)
    assert emulator.stats()["creates"] == 1


def test_submit_only_returns_at_once(emulator: EmulatorServer) -> None:
    ti = task_instance()
    operator = KirinTextToVideoOperator(task_id="generate", prompt="a fox")
    kirin_task_id = operator.execute({"ti": ti})  # type: ignore[arg-type]
    assert kirin_task_id == ti.pushed["kirin_task_id"]
    assert ti.pushed["kirin_request"]["prompt"] == "a fox"
    assert "kirin_result" not in ti.pushed
    assert emulator.task(kirin_task_id)["status"] in ("pending", "processing")


@pytest.mark.parametrize(
    "fields",
    [{"prompt": ""}, {"prompt": "p", "aspect_ratio": "4:3"}, {"prompt": "p", "callback_url": "ftp://x"}],
)
def test_bad_input_fails_before_any_request(emulator: EmulatorServer, fields: dict[str, Any]) -> None:
    operator = KirinTextToVideoOperator(task_id="generate", **fields)
    with pytest.raises(KirinValidationError):
        operator.execute({"ti": task_instance()})  # type: ignore[arg-type]
    stats = emulator.stats()
    assert stats["create_requests"] + stats["lookups"] + stats["gets"] == 0


@pytest.mark.kirin_emulator(**QUICK)
async def test_deferrable_sensor_defers_and_resumes_with_the_result(emulator: EmulatorServer) -> None:
    submitted = KirinTextToVideoOperator(task_id="submit", prompt="a fox").execute(
        {"ti": task_instance("submit")}  # type: ignore[arg-type]
    )
    ti = task_instance("wait_for_video")
    sensor = KirinTaskSensor(
        task_id="wait_for_video",
        kirin_task_id=submitted,
        deferrable=True,
        poke_interval=0.05,
        first_poll_delay=0,
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({"ti": ti})  # type: ignore[arg-type]
    event = await fire(deferred.value.trigger)  # type: ignore[arg-type]
    result = sensor.execute_complete({"ti": ti}, event)  # type: ignore[arg-type]
    assert (result["task_id"], result["status"]) == (submitted, "completed")
    assert ti.pushed["kirin_result"] == result
    assert emulator.stats()["creates"] == 1


@pytest.mark.kirin_emulator(**QUICK)
def test_poking_sensor_checks_until_the_generation_is_done(emulator: EmulatorServer) -> None:
    submitted = KirinTextToVideoOperator(task_id="submit", prompt="a fox").execute(
        {"ti": task_instance("submit")}  # type: ignore[arg-type]
    )
    ti = task_instance("wait_for_video")
    sensor = KirinTaskSensor(
        task_id="wait_for_video", kirin_task_id=submitted, mode="poke", poke_interval=0.05, first_poll_delay=0
    )
    result = sensor.execute({"ti": ti})  # type: ignore[arg-type]
    assert (result["task_id"], result["status"]) == (submitted, "completed")
    assert ti.pushed["kirin_result"] == result
    assert emulator.state.status_checks[submitted] >= 2  # "not yet" at least once, then done
    assert emulator.stats()["creates"] == 1
