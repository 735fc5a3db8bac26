"""The compat suite: what must work on every supported Airflow line (3.0, 3.1, 3.2, 3.3).

``make test`` runs it for each older line in that line's own virtualenv (``make test-compat
AIRFLOW=3.1.8`` runs one); the newest line runs the whole suite instead, where the originals of the
tests re-used here already run. Nothing here skips: a broken line fails.

It re-uses the suite's own tests and fixtures (imported below) where they hold on every line, and
adds the checks whose expectation depends on the line (the connection form, ``on_kill``):

* provider discovery (``airflow providers list``/``hooks``/``links``) and the provider info against
  the line's own ``provider_info.schema.json``;
* every example DAG imports with zero errors;
* the sync and async hooks and the trigger against the emulator;
* ``airflow dags test`` of the deferrable operator and of submit + deferrable sensor (the trigger
  runs inline), and of a failed generation raising its typed error with its code;
* the secrets check: in-process (every log record, exception, event, XCom, repr) and through a real
  ``airflow dags test`` whose failure echoes the key (no output or log-file line holds it).
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
from typing import Any

import airflow
import pytest
from airflow_helpers import AirflowHome
from dags.test_example_dags import (
    FAST,
    _tail,
    dags_test,
    example_home,
    test_deferrable_operator_example_succeeds,
    test_example_dags_have_no_import_errors_in_the_cli,
    test_submit_and_sense_example_succeeds,
)
from dags.test_example_dags import (
    test_seed_error_code_fails_the_deferrable_operator_with_its_typed_error as fails_with_typed_error,
)
from hooks.test_async_hook_and_trigger import (
    test_async_reads,
    test_trigger_failed_event_for_each_code,
    test_trigger_never_blocks_the_event_loop,
    test_trigger_success_event,
    test_trigger_timeout,
)
from hooks.test_sync_hook import (
    test_429_with_retry_after_is_honoured,
    test_create_get_lookup_wait_download,
    test_wrong_key_is_an_auth_error_at_once,
)
from packaging.version import Version
from reliability.test_secrets import canary, test_the_api_key_appears_nowhere
from unit.test_provider_info import (
    test_airflow_cli_shows_the_provider,
    test_entry_point_points_at_get_provider_info,
    test_valid_against_airflow_core_schema,
)

from airflow_provider_kirin import _compat
from airflow_provider_kirin.emulator import EmulatorServer, Fault
from airflow_provider_kirin.exceptions import KirinGenerationError

pytestmark = pytest.mark.compat

#: The fixtures and tests re-used from the full suite (pytest collects them here too).
__all__ = [
    "canary",
    "dags_test",
    "example_home",
    "test_429_with_retry_after_is_honoured",
    "test_airflow_cli_shows_the_provider",
    "test_async_reads",
    "test_create_get_lookup_wait_download",
    "test_deferrable_operator_example_succeeds",
    "test_entry_point_points_at_get_provider_info",
    "test_example_dags_have_no_import_errors_in_the_cli",
    "test_submit_and_sense_example_succeeds",
    "test_the_api_key_appears_nowhere",
    "test_trigger_failed_event_for_each_code",
    "test_trigger_never_blocks_the_event_loop",
    "test_trigger_success_event",
    "test_trigger_timeout",
    "test_valid_against_airflow_core_schema",
    "test_wrong_key_is_an_auth_error_at_once",
]

KEY = "kirin-compat-canary-key"


def test_the_installed_airflow_is_the_line_under_test() -> None:
    """``make test-compat`` says which Airflow it built; a venv holding another one fails here."""
    expected = os.environ.get("KIRIN_COMPAT_AIRFLOW")
    assert expected, "run the compat suite through `make test-compat AIRFLOW=<version>`"
    assert airflow.__version__ == expected


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
    assert extra["verify_ssl"]["schema"]["type"][0] == "boolean"
    assert extra["max_retries"]["schema"]["type"][0] == "integer"
    assert extra["create_path"]["value"] == "/v1/videos/generations"


def test_compat_gates_match_the_line() -> None:
    """Each gate of ``_compat`` names the Airflow version that added the feature: check it."""
    import airflow.sdk.log as sdk_log

    assert hasattr(sdk_log, "amask_secret") == _compat.AIRFLOW_V_3_3_PLUS


@pytest.mark.kirin_emulator(**FAST)
@pytest.mark.timeout(200)
def test_failed_generation_raises_its_typed_error_with_its_code(
    example_home: AirflowHome, dags_test: Callable[..., Any], kirin_emulator: EmulatorServer
) -> None:
    """One seed error code end to end (the full suite covers every code on the newest line)."""
    fails_with_typed_error(example_home, dags_test, kirin_emulator, "002011095", KirinGenerationError)


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
    example_home: AirflowHome, dags_test: Callable[..., Any], kirin_emulator: EmulatorServer
) -> None:
    """A deferrable run whose failed generation echoes the key: no output or log line holds it."""
    kirin_emulator.add_fault(
        Fault(kind="fail_task", endpoint="create", error_message=f"bad request: Authorization: Bearer {KEY}")
    )
    result, _, output = dags_test(example_home, "example_kirin_deferrable_operator")

    assert result.returncode != 0, _tail(output)
    assert "KirinGenerationError" in output  # the echoing failure was really reported
    leaks = [line for line in output.splitlines() if KEY in line and not _airflow_30_mask_request(line)]
    # ``dags test`` prints the task's log; a log file, where the line writes one, is checked too.
    logs = [p for p in Path(example_home.path, "logs").rglob("*") if p.is_file()]
    leaks += [
        f"{p}: {line}" for p in logs for line in p.read_text(errors="replace").splitlines() if KEY in line
    ]
    assert leaks == [], "\n".join(leaks)
