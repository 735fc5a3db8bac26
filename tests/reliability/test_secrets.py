"""The API key never leaves the provider: not in logs, exceptions, events, XComs, reprs or templates.

A private emulator runs with a distinctive key, and a realistic flow goes through the hook, the
async hook, the trigger and the operator, with faults whose bodies echo the key back (a 401 page
quoting the Authorization header, 5xx and non-JSON bodies, resets). Everything the provider produced
is collected: every log record (all loggers at DEBUG), everything written to stdout/stderr (Airflow
routes its own loggers through structlog to stdout), every exception as ``str``, ``repr``,
``to_dict()`` and pickle, every trigger event and serialized trigger, every XCom value, every
``repr``, and the operator's rendered template fields. The key must appear in none of it.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from airflow.providers.common.compat.sdk import TaskDeferred
from kirin_fakes import FakeTaskInstance, fault

from airflow_provider_kirin.emulator import EmulatorConfig, EmulatorServer
from airflow_provider_kirin.exceptions import (
    KirinAuthError,
    KirinBadResponseError,
    KirinError,
    KirinGenerationError,
    KirinNotFoundError,
    KirinRateLimitError,
    KirinStatusCheckError,
    KirinTaskCreationError,
    KirinUnreachableError,
)
from airflow_provider_kirin.hooks.kirin import KirinAsyncHook, KirinHook
from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator
from airflow_provider_kirin.triggers.kirin import KirinTaskTrigger, task_from_event

KEY = "kirin-leak-canary-key"
PROMPT = "a lantern festival over a river, drone shot"
ECHO_401 = f"invalid credentials: Authorization: Bearer {KEY}"
ECHO_HTML = f"<html><body><h1>502</h1><pre>upstream request: Authorization: Bearer {KEY}</pre></body></html>"
CANARY_TIMINGS = {"pending_seconds": 0.05, "processing_seconds": 0.2}


class Evidence:
    """Every text the provider produced, labelled by where it came from."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, where: str, value: Any) -> None:
        if isinstance(value, bytes):
            text = value.decode("utf-8", "replace")
        elif isinstance(value, str):
            text = value
        else:
            text = f"{value!r} {json.dumps(value, default=repr)}"
        self.items.append((where, text))

    def error(self, where: str, error: BaseException) -> None:
        self.add(f"{where}: str", str(error))
        self.add(f"{where}: repr", repr(error))
        self.add(f"{where}: pickle", pickle.dumps(error))
        if isinstance(error, KirinError):
            self.add(f"{where}: to_dict", error.to_dict())
            self.add(f"{where}: message", error.message)

    def leaks(self) -> list[str]:
        return [where for where, text in self.items if KEY in text]

    @property
    def text(self) -> str:
        return "\n".join(text for _, text in self.items)


@pytest.fixture
def canary(
    kirin_emulator_factory: Callable[..., EmulatorServer], use_conn: Callable[..., None]
) -> EmulatorServer:
    """A private emulator whose key is :data:`KEY`; ``kirin_default`` points at it."""
    server = kirin_emulator_factory(EmulatorConfig(api_key=KEY, **CANARY_TIMINGS))
    use_conn(server)
    return server


def test_the_echo_faults_really_carry_the_key(canary: EmulatorServer) -> None:
    """The control: what the faults below send back does contain the key, so redaction is needed."""
    canary.add_fault(endpoint="get", kind="http_error", status=401, error_message=ECHO_401)
    canary.add_fault(endpoint="get", kind="http_error", status=502, body=ECHO_HTML)
    for _ in range(2):
        response = requests.get(f"{canary.url}/v1/tasks/kt_x", headers=canary.headers, timeout=5)
        assert KEY in response.text


def expect(evidence: Evidence, where: str, cls: type[KirinError], call: Callable[[], Any]) -> KirinError:
    with pytest.raises(cls) as info:
        call()
    evidence.error(where, info.value)
    return info.value


async def run_trigger(evidence: Evidence, where: str, trigger: KirinTaskTrigger) -> dict[str, Any]:
    classpath, kwargs = trigger.serialize()
    evidence.add(f"{where}: serialized", [classpath, kwargs])
    rebuilt = KirinTaskTrigger(**kwargs)
    evidence.add(f"{where}: repr", repr(rebuilt))
    events = [event.payload async for event in rebuilt.run()]
    assert len(events) == 1
    evidence.add(f"{where}: event", events[0])
    return events[0]


async def test_the_api_key_appears_nowhere(
    canary: EmulatorServer,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: every logger, every level
    evidence = Evidence()
    hook = KirinHook()

    # -- a submission that survives echoing faults, then a wait, a download, the XCom result --------
    canary.add_faults(
        [
            fault("create", "non_json", body=ECHO_HTML),
            fault("create", "http_error", status=503, error_message=ECHO_401),
            fault("create", "reset_after"),
        ]
    )
    created = hook.create_task(PROMPT, external_task_id="leak-1")
    assert canary.stats()["creates"] == 1
    canary.add_faults(
        [
            fault("get", "http_error", status=502, body=ECHO_HTML),
            fault("get", "non_json", body=ECHO_HTML),
            fault("get", "reset_before"),
        ]
    )
    done = hook.wait_for_task(created.task_id, poll_interval=0.05, timeout=15, first_poll_delay=0)
    evidence.add("wait_for_task result", done.model_dump(mode="json"))
    evidence.add("xcom: to_result", done.to_result())
    path = hook.download_video(done.video_urls[0], tmp_path).path
    assert path.stat().st_size > 0
    evidence.add("test_connection", hook.test_connection())

    # -- errors whose response bodies echo the key -------------------------------------------------
    canary.add_fault(endpoint="get", kind="http_error", status=401, error_message=ECHO_401)
    expect(evidence, "401 JSON echo", KirinAuthError, lambda: hook.get_task(done.task_id))
    canary.add_fault(endpoint="get", kind="http_error", status=401, body=ECHO_HTML)
    expect(evidence, "401 HTML echo", KirinAuthError, lambda: hook.get_task(done.task_id))
    canary.add_fault(endpoint="get", kind="http_error", status=404, error_message=ECHO_401)
    expect(evidence, "404 echo", KirinNotFoundError, lambda: hook.get_task(done.task_id))
    canary.add_fault(endpoint="get", kind="http_error", status=503, error_message=ECHO_401, times=-1)
    expect(evidence, "5xx echo forever", KirinStatusCheckError, lambda: hook.get_task(done.task_id))
    canary.clear_faults()
    canary.add_fault(endpoint="get", kind="http_error", status=429, error_message=ECHO_401, times=-1)
    expect(evidence, "429 echo forever", KirinRateLimitError, lambda: hook.get_task(done.task_id))
    canary.clear_faults()
    canary.add_fault(endpoint="get", kind="non_json", body=ECHO_HTML, times=-1)
    expect(evidence, "non-JSON echo forever", KirinBadResponseError, lambda: hook.get_task(done.task_id))
    canary.clear_faults()
    canary.add_fault(endpoint="get", kind="reset_before", times=-1)
    expect(evidence, "reset forever", KirinUnreachableError, lambda: hook.get_task(done.task_id))
    canary.clear_faults()
    canary.add_fault(endpoint="create", kind="http_error", status=503, error_message=ECHO_401)
    expect(evidence, "create without id, 5xx echo", KirinTaskCreationError, lambda: hook.create_task(PROMPT))
    canary.add_fault(endpoint="create", kind="fail_task", error_message=ECHO_401)
    failing = hook.create_task(PROMPT, external_task_id="leak-failed")
    expect(
        evidence,
        "failed generation echo",
        KirinGenerationError,
        lambda: hook.wait_for_task(failing.task_id, poll_interval=0.05, timeout=15, first_poll_delay=0),
    )

    # -- the async hook and the trigger -----------------------------------------------------------
    canary.add_fault(endpoint="get", kind="http_error", status=502, body=ECHO_HTML)
    async with KirinAsyncHook() as async_hook:
        evidence.add("async hook repr", repr(async_hook))
        evidence.add("async get_task", (await async_hook.get_task(done.task_id)).model_dump(mode="json"))
        canary.add_fault(endpoint="get", kind="http_error", status=401, error_message=ECHO_401)
        with pytest.raises(KirinAuthError) as info:
            await async_hook.get_task(done.task_id)
        evidence.error("async 401 echo", info.value)

    second = hook.create_task(PROMPT, external_task_id="leak-trigger")
    canary.add_faults(
        [
            fault("get", "http_error", status=503, error_message=ECHO_401),
            fault("get", "non_json", body=ECHO_HTML),
            fault("get", "reset_after"),
        ]
    )
    deadline = time.time() + 20
    event = await run_trigger(
        evidence, "trigger success", KirinTaskTrigger(second.task_id, poll_interval=0.05, deadline=deadline)
    )
    assert event["status"] == "success"
    evidence.add("trigger success: task_from_event", task_from_event(event).to_result())
    canary.add_fault(endpoint="get", kind="http_error", status=401, error_message=ECHO_401)
    event = await run_trigger(
        evidence, "trigger 401", KirinTaskTrigger(second.task_id, poll_interval=0.05, deadline=deadline)
    )
    assert event["status"] == "error"
    with pytest.raises(KirinAuthError) as info:
        task_from_event(event)
    evidence.error("trigger 401: task_from_event", info.value)
    canary.add_fault(endpoint="get", kind="http_error", status=503, body=ECHO_HTML, times=-1)
    event = await run_trigger(
        evidence,
        "trigger 5xx forever",
        KirinTaskTrigger(second.task_id, poll_interval=0.05, deadline=deadline, max_poll_error_seconds=0.05),
    )
    assert event["status"] == "error"
    canary.clear_faults()

    # -- the operator: rendered templates, XComs, the deferral and its resumption --------------------
    ti = FakeTaskInstance(
        dag_id="leak_dag", run_id="manual__leak", task_id="generate", map_index=-1, pushed={}
    )
    context: dict[str, Any] = {
        "ti": ti,
        "ds": "2024-05-01",
        "ds_nodash": "20240501",
        "params": {"neg": "blur"},
    }
    operator = KirinTextToVideoOperator(
        task_id="generate",
        prompt=PROMPT + " on {{ ds }}",
        negative_prompt="{{ params.neg }}",
        external_task_id="leak-op-{{ ds_nodash }}",
        wait_for_completion=True,
        deferrable=False,
        first_poll_delay=0,
        poll_interval=0.05,
        timeout=15,
    )
    operator.render_template_fields(context)  # type: ignore[arg-type]
    rendered = {name: getattr(operator, name) for name in operator.template_fields}
    assert rendered["prompt"] == PROMPT + " on 2024-05-01"
    assert rendered["external_task_id"] == "leak-op-20240501"
    evidence.add("rendered template fields", rendered)
    canary.add_fault(endpoint="create", kind="http_error", status=503, error_message=ECHO_401)
    evidence.add("operator return value", operator.execute(context))  # type: ignore[arg-type]
    evidence.add("operator repr", repr(operator))

    deferring = KirinTextToVideoOperator(
        task_id="generate_deferred",
        prompt=PROMPT,
        external_task_id="leak-op-deferred",
        wait_for_completion=True,
        deferrable=True,
        first_poll_delay=0,
        poll_interval=0.05,
        timeout=15,
    )
    with pytest.raises(TaskDeferred) as deferred:
        deferring.execute(context)  # type: ignore[arg-type]
    evidence.add("TaskDeferred", f"{deferred.value!s} {deferred.value!r}")
    event = await run_trigger(evidence, "operator trigger", deferred.value.trigger)
    evidence.add("execute_complete", deferring.execute_complete(context, event=event))  # type: ignore[arg-type]
    evidence.add("xcom pushes", ti.pushed)
    evidence.add("deferring operator repr", repr(deferring))

    # -- reprs of everything that holds the connection ----------------------------------------------
    for name, value in {
        "hook": hook,
        "hook.config": hook.config,
        "hook.protocol": hook.protocol,
        "hook.session": hook.session.__dict__,
    }.items():
        evidence.add(f"repr {name}", repr(value))
    evidence.add("config model_dump", hook.config.model_dump(mode="json"))
    evidence.add("config str", str(hook.config))

    # -- every log line ------------------------------------------------------------------------------
    formatter = logging.Formatter()
    for record in caplog.records:
        evidence.add(f"log {record.name}", record.getMessage())
        if record.exc_info:
            evidence.add(f"log {record.name} traceback", formatter.formatException(record.exc_info))
    evidence.add("caplog.text", caplog.text)
    out, err = capfd.readouterr()
    evidence.add("stdout", out)
    evidence.add("stderr", err)

    # The capture is not vacuous: it holds the retries, the operator's lines and redacted echoes.
    assert "retrying in" in evidence.text
    assert "Submitted Kirin task" in evidence.text
    assert "***" in evidence.text, "the echoed key reached the provider and was redacted"
    assert evidence.leaks() == []


async def test_an_error_code_echoing_the_key_is_redacted(canary: EmulatorServer) -> None:
    """A gateway that puts the rejected key into the error *code*: the code is part of the message."""
    canary.add_fault(endpoint="get", kind="http_error", status=401, code=KEY)
    with pytest.raises(KirinAuthError) as info:
        KirinHook().get_task("kt_any")
    evidence = Evidence()
    evidence.error("401 code echo", info.value)
    assert evidence.leaks() == []


async def test_a_failed_trigger_event_does_not_carry_an_echoed_key(canary: EmulatorServer) -> None:
    """The ``failed`` event holds the failed task's envelope; it is stored in the metadata DB."""
    canary.add_fault(endpoint="create", kind="fail_task", error_message=ECHO_401)
    task = KirinHook().create_task(PROMPT, external_task_id="leak-failed-event")
    evidence = Evidence()
    event = await run_trigger(
        evidence,
        "failed event",
        KirinTaskTrigger(task.task_id, poll_interval=0.05, deadline=time.time() + 20),
    )
    assert event["status"] == "failed"
    with pytest.raises(KirinGenerationError) as info:
        task_from_event(event)
    evidence.error("failed event: task_from_event", info.value)
    assert evidence.leaks() == []


async def test_turning_tls_verification_off_logs_a_warning(
    canary: EmulatorServer,
    use_conn: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    use_conn(canary, conn_id="kirin_insecure", verify_ssl=False)
    caplog.set_level(logging.DEBUG)
    warning = "TLS verification is OFF for Kirin connection 'kirin_insecure'"

    assert KirinHook().config.verify_ssl is True  # the secure connection: no warning
    insecure = KirinHook("kirin_insecure")
    assert insecure.session.verify is False
    assert insecure.get_task_by_external_id("none") is None  # plain http to the emulator still works
    async with KirinAsyncHook("kirin_insecure") as async_hook:
        assert (await async_hook.get_config()).verify_ssl is False

    out, err = capfd.readouterr()
    logged = out + err + caplog.text
    assert logged.count(warning) == 2, logged  # once per hook, sync and async
    assert "TLS verification is OFF for Kirin connection 'kirin_default'" not in logged
    assert KEY not in logged
