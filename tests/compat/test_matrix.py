"""The compat suite's re-runs: the full suite's own tests that must hold on every Airflow line.

``make test-compat AIRFLOW=<version>`` runs this module and ``test_airflow_line.py`` (marker
``compat``) in that release's own virtualenv; ``make test`` does so for each older line. On the
newest line the originals already run in the full suite, so ``make pytest`` leaves this module out
(marker ``compat_rerun``). Nothing here skips: a broken line fails.

* provider discovery (``airflow providers list``/``hooks``/``links``), the entry point, and the
  provider info against the line's own ``provider_info.schema.json``;
* every example DAG imports with zero errors (``airflow dags list-import-errors``);
* the sync and async hooks and the trigger against the emulator (the trigger never blocks the loop);
* ``airflow dags test`` of the deferrable operator and of submit + deferrable sensor (the trigger
  runs inline), and of a failed generation raising its typed error with its code;
* the in-process secrets check (every log record, exception, event, XCom, repr);
* the batch operator under ``airflow dags test`` (manifest, videos, asset event; ``max_failed`` after
  a deferral) and its trigger (``max_in_flight``, a triggerer restart that creates nothing twice);
* spend control: a ceiling that fits 25 of 40, learned prices, and a dry run that predicts the
  ceilinged run under ``airflow dags test``;
* retry decisions under ``dags test``: a refused key ends a task with ``retries=3`` after one try
  (``AirflowFailException`` before 3.3), an outage is retried, ``retry_failed_generations=False``,
  and a 429's ``Retry-After`` (honoured from 3.3; the task's ``retry_delay`` before);
* the ``dag.test()`` recipe of docs/emulator.md, as written;
* OpenLineage (the provider's file transport) of ``dags test`` runs: the deferrable and batch
  examples' COMPLETE events (outputs, cost), a failed generation's FAIL event (its code).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import airflow
import pytest
from airflow_helpers import AirflowHome, DagsTestRun
from dags.test_emulator_recipe import test_the_dag_test_recipe_runs_as_written
from dags.test_example_dags import (
    FAST,
    test_deferrable_operator_example_succeeds,
    test_example_dags_have_no_import_errors_in_the_cli,
    test_submit_and_sense_example_succeeds,
)
from dags.test_example_dags import (
    test_seed_error_code_fails_the_deferrable_operator_with_its_typed_error as fails_with_typed_error,
)
from dags.test_lineage import (
    lineage_file,
    lineage_home,
    test_a_taskflow_task_calling_the_hook_gets_the_file_it_wrote_as_its_output,
    test_batch_example_complete_event_names_the_manifest_with_counts_and_total_cost,
    test_deferrable_example_complete_event_names_the_video_and_holds_the_cost,
    test_failed_generation_fail_event_carries_its_code_and_class,
)
from dags.test_retry_decisions import (
    test_a_429_with_retry_after_is_retried_after_that_many_seconds,
    test_a_failed_generation_is_not_retried_when_the_operator_says_so,
    test_a_refused_key_ends_the_task_after_one_try_despite_retries,
    test_an_outage_is_retried,
    test_dags_home,
)
from hooks.test_async_hook_and_trigger import (
    test_async_reads,
    test_trigger_failed_event_for_each_code,
    test_trigger_never_blocks_the_event_loop,
    test_trigger_success_event,
    test_trigger_timeout,
)
from hooks.test_batch_spend import (
    test_a_ceiling_that_fits_25_of_40_creates_exactly_those_and_a_retry_only_the_rest,
    test_without_prices_the_first_generation_of_a_kind_runs_alone_and_sets_the_price,
)
from hooks.test_batch_trigger import (
    test_max_in_flight_is_the_emulators_peak,
    test_triggerer_restart_mid_batch_creates_nothing_twice,
)
from hooks.test_sync_hook import (
    test_429_with_retry_after_is_honoured,
    test_create_get_lookup_wait_download,
    test_wrong_key_is_an_auth_error_at_once,
)
from operators.test_batch_operator import (
    batch_dags_test,
    home,
    test_a_dry_run_predicts_the_ceilinged_run_exactly,
    test_batch_writes_manifest_videos_and_asset_event,
    test_max_failed_fails_the_task_after_writing_the_manifest,
)
from reliability.test_secrets import canary, test_the_api_key_appears_nowhere
from unit.test_provider_info import (
    test_airflow_cli_shows_the_provider,
    test_entry_point_points_at_get_provider_info,
    test_valid_against_airflow_core_schema,
)

from airflow_provider_kirin.emulator import EmulatorServer
from airflow_provider_kirin.exceptions import KirinGenerationError

pytestmark = [pytest.mark.compat, pytest.mark.compat_rerun]


# The example DAGs' three homes of the full suite (its modules run on different workers) are one
# here: the lineage home, whose settings are the examples' plus the OpenLineage file transport,
# serves the example and provider-CLI tests too, in its one warm CLI process. A warm process costs
# about 9 CPU s to start, and a line's suite is mostly those starts.
@pytest.fixture(scope="module")
def example_home(lineage_home: AirflowHome) -> AirflowHome:
    return lineage_home


@pytest.fixture(scope="module")
def cli_home(lineage_home: AirflowHome) -> AirflowHome:
    return lineage_home


#: The fixtures and tests re-used from the full suite (pytest collects them here too; ``dags_test``
#: is the root conftest's).
__all__ = [
    "batch_dags_test",
    "canary",
    "home",
    "lineage_file",
    "lineage_home",
    "test_429_with_retry_after_is_honoured",
    "test_a_429_with_retry_after_is_retried_after_that_many_seconds",
    "test_a_ceiling_that_fits_25_of_40_creates_exactly_those_and_a_retry_only_the_rest",
    "test_a_dry_run_predicts_the_ceilinged_run_exactly",
    "test_a_failed_generation_is_not_retried_when_the_operator_says_so",
    "test_a_refused_key_ends_the_task_after_one_try_despite_retries",
    "test_a_taskflow_task_calling_the_hook_gets_the_file_it_wrote_as_its_output",
    "test_airflow_cli_shows_the_provider",
    "test_an_outage_is_retried",
    "test_async_reads",
    "test_batch_example_complete_event_names_the_manifest_with_counts_and_total_cost",
    "test_batch_writes_manifest_videos_and_asset_event",
    "test_create_get_lookup_wait_download",
    "test_dags_home",
    "test_deferrable_example_complete_event_names_the_video_and_holds_the_cost",
    "test_deferrable_operator_example_succeeds",
    "test_entry_point_points_at_get_provider_info",
    "test_example_dags_have_no_import_errors_in_the_cli",
    "test_failed_generation_fail_event_carries_its_code_and_class",
    "test_max_failed_fails_the_task_after_writing_the_manifest",
    "test_max_in_flight_is_the_emulators_peak",
    "test_submit_and_sense_example_succeeds",
    "test_the_api_key_appears_nowhere",
    "test_the_dag_test_recipe_runs_as_written",
    "test_trigger_failed_event_for_each_code",
    "test_trigger_never_blocks_the_event_loop",
    "test_trigger_success_event",
    "test_trigger_timeout",
    "test_triggerer_restart_mid_batch_creates_nothing_twice",
    "test_valid_against_airflow_core_schema",
    "test_without_prices_the_first_generation_of_a_kind_runs_alone_and_sets_the_price",
    "test_wrong_key_is_an_auth_error_at_once",
]


def test_the_installed_airflow_is_the_line_under_test() -> None:
    """``make test-compat`` says which Airflow it built; a venv holding another one fails here."""
    expected = os.environ.get("KIRIN_COMPAT_AIRFLOW")
    assert expected, "run the compat suite through `make test-compat AIRFLOW=<version>`"
    assert airflow.__version__ == expected


@pytest.mark.kirin_emulator(**FAST)
@pytest.mark.timeout(200)
def test_failed_generation_raises_its_typed_error_with_its_code(
    example_home: AirflowHome, dags_test: Callable[..., DagsTestRun], kirin_emulator: EmulatorServer
) -> None:
    """One seed error code end to end (the full suite covers every code on the newest line)."""
    fails_with_typed_error(example_home, dags_test, kirin_emulator, "002011095", KirinGenerationError)
