"""What differs between the Airflow lines, checked on each (marker ``compat``).

These run in the full suite on the newest line and, with ``test_matrix.py``, in each older line's
own virtualenv (``make test-compat AIRFLOW=<version>``):

* the connection form, as the line's own API server builds it for the UI;
* each ``_compat`` gate against the installed Airflow;
* the secrets check through a real ``airflow dags test`` whose failure echoes the key: no output
  or log line holds it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import airflow
import pytest
from airflow_helpers import AirflowHome, DagsTestRun
from dags.test_example_dags import FAST, example_home
from packaging.version import Version

from airflow_provider_kirin import _compat
from airflow_provider_kirin.emulator import EmulatorServer, Fault

pytestmark = [pytest.mark.compat, pytest.mark.airflow]  # starts Airflow processes: not in test-fast

#: The full suite's fixture this module uses (``dags_test`` is the root conftest's).
__all__ = ["example_home"]

KEY = "kirin-compat-canary-key"


#: What the UI's connection form is built from: the API server's own service, in a fresh process
#: (the providers manager is a process-wide singleton that earlier tests may have filled).
_HOOK_META = """
import json
from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
(meta,) = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "kirin"]
print(json.dumps(meta.model_dump(mode="json")))
"""


def test_connection_form_is_complete_on_this_line(tmp_path: Path) -> None:
    """The connection form the UI shows for ``kirin``, on every line.

    3.2+ builds it from the provider info's ``conn-fields``/``ui-field-behaviour``; 3.0 and 3.1
    from the hook's ``get_ui_field_behaviour``/``get_connection_form_widgets``, which ``_compat``
    derives from the same declaration. Airflow 3.0 turns the extra fields into form fields only
    when wtforms is installed (it comes with the FAB provider); without it the relabelled standard
    fields still hold, and the extra fields are edited as the connection's extra JSON.
    """
    from airflow_provider_kirin.get_provider_info import get_provider_info

    (declared,) = get_provider_info()["connection-types"]
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run(
        [sys.executable, "-c", _HOOK_META], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    meta = json.loads(out.stdout.strip().splitlines()[-1])
    assert meta["hook_name"] == "Kirin"
    standard = meta["standard_fields"]
    assert standard["host"]["title"] == "Base URL"
    assert standard["password"]["title"] == "API key"
    assert standard["login"]["hidden"] is True
    extra = meta["extra_fields"] or {}
    if Version(airflow.__version__).release < (3, 1) and importlib.util.find_spec("wtforms") is None:
        assert extra == {}
        return
    assert set(extra) == set(declared["conn-fields"]), extra
    assert extra["skip_tls_verification"]["schema"]["type"][0] == "boolean"
    assert "verify_ssl" not in extra  # the legacy switch is read, never drawn
    assert extra["max_retries"]["schema"]["type"][0] == "integer"
    # No pre-filled defaults: a connection saved from the form stores only what the user set.
    assert not extra["create_path"].get("value")
    assert "/v1/videos/generations" in extra["create_path"]["description"]


def test_compat_gates_match_the_line() -> None:
    """Each gate of ``_compat`` names the Airflow version that added the feature: check it."""
    import airflow.sdk.log as sdk_log

    assert hasattr(sdk_log, "amask_secret") == _compat.AIRFLOW_V_3_3_PLUS


def _airflow_30_mask_request(line: str) -> bool:
    """Airflow 3.0's own echo of a masking request, which no provider can prevent.

    In ``airflow dags test`` on 3.0 the in-process supervisor logs every request at debug level
    (``InProcessSupervisorComms.send`` in task-sdk 1.0.x) - including the ``MaskSecret`` that
    Airflow's own connection lookup sends with the password, before the masker has the password.
    That line is the whole exception: any other line holding the key fails the test, on 3.0 too.
    Airflow 3.1 registers the secret locally first, so its line is masked.
    """
    return Version(airflow.__version__).release < (3, 1) and bool(
        re.search(
            r"\[debug\s*\] Sending request\s+msg=MaskSecret\(value='[^']*', name=None, type='MaskSecret'\)$",
            line,
        )
    )


@pytest.mark.kirin_emulator(api_key=KEY, **FAST)
@pytest.mark.timeout(200)
def test_the_key_is_in_no_output_or_log_line_of_a_real_run(
    example_home: AirflowHome, dags_test: Callable[..., DagsTestRun], kirin_emulator: EmulatorServer
) -> None:
    """A deferrable run whose failed generation echoes the key: no output or log line holds it.

    In a process of its own (``warm=False``): nothing an earlier command taught the process (a
    secret registered for masking) can hide a leak here."""
    kirin_emulator.add_fault(
        Fault(kind="fail_task", endpoint="create", error_message=f"bad request: Authorization: Bearer {KEY}")
    )
    run = dags_test(example_home, "example_kirin_deferrable_operator", warm=False)
    output = run.output

    assert run.returncode != 0, run.tail()
    assert "KirinGenerationError" in output  # the echoing failure was really reported
    leaks = [line for line in output.splitlines() if KEY in line and not _airflow_30_mask_request(line)]
    # ``dags test`` prints the task's log; a log file, where the line writes one, is checked too.
    logs = [p for p in Path(example_home.path, "logs").rglob("*") if p.is_file()]
    leaks += [
        f"{p}: {line}" for p in logs for line in p.read_text(errors="replace").splitlines() if KEY in line
    ]
    assert leaks == [], "\n".join(leaks)


#: A worker's metrics, as the line's task runner sets them up (3.0/3.1: Airflow's ``Stats`` builds
#: itself from ``[metrics]``; 3.2: the Task SDK's ``Stats.initialize``; 3.3: ``stats.initialize``),
#: then one generation through the sync hook.
_METRICS_RUN = """
import inspect
from airflow_provider_kirin import _compat
try:
    from airflow.sdk.observability.metrics import stats_utils
except ImportError:
    stats_utils = None
if stats_utils is not None:
    facility = _compat.stats()
    if inspect.signature(stats_utils.get_stats_factory).parameters:
        facility.initialize(factory=stats_utils.get_stats_factory(facility))
    else:
        facility.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=False)
from airflow_provider_kirin.hooks.kirin import KirinHook
hook = KirinHook()
task = hook.create_task("a fox in the snow", external_task_id="metrics-line-1")
hook.wait_for_task(task.task_id, poll_interval=0.2, timeout=20, first_poll_delay=0)
"""


@pytest.mark.kirin_emulator(**FAST)
@pytest.mark.timeout(120)
def test_metrics_reach_airflows_statsd_backend_on_this_line(kirin_emulator: EmulatorServer) -> None:
    """``_compat.stats`` is the facility the line's own task runner configures: with ``[metrics]
    statsd_on`` a generation's metrics reach a StatsD listener on loopback."""
    import socket

    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(5)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__METRICS")},
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(listener.getsockname()[1]),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        "AIRFLOW_CONN_KIRIN_DEFAULT": kirin_emulator.airflow_conn_json(),
    }
    try:
        out = subprocess.run(
            [sys.executable, "-c", _METRICS_RUN], env=env, capture_output=True, text=True, timeout=90
        )
        assert out.returncode == 0, out.stderr[-3000:]
        lines: list[str] = []
        try:
            while not {"airflow.kirin.creates", "airflow.kirin.cost_micro_usd"} <= {
                line.partition(":")[0] for line in lines
            }:
                lines += listener.recv(65535).decode().splitlines()
        except TimeoutError:
            pass
    finally:
        listener.close()
    assert "airflow.kirin.creates:1|c" in lines, lines
    assert "airflow.kirin.cost_micro_usd:350000|c" in lines, lines
