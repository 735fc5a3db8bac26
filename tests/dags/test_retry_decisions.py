"""Retry decisions that fit the error, in real ``airflow dags test`` runs (which retry a failed
task once its ``retry_delay`` has passed, like the scheduler) against the bundled emulator.

- a refused API key fails a task with ``retries=3`` after its first try, on every line (Airflow 3.3:
  ``KirinRetryPolicy``; 3.0-3.2: ``AirflowFailException``); the control: an outage *is* retried;
- ``retry_failed_generations=False``: a failed generation fails the task at once, nothing more paid;
- a 429 with ``Retry-After: 7``: on 3.3 the next try comes about 7 s later, whatever the task's
  ``retry_delay`` (5 minutes here); before 3.3 there is no retry policy, so the task's own
  ``retry_delay`` applies (2 s there, to keep the test short).

The compat suite re-runs these on every Airflow line (``tests/compat/test_matrix.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

import pytest
from airflow_helpers import AirflowHome, DagsTestRun
from dags.test_example_dags import FAST, raised_kirin_errors, test_dags_home

from airflow_provider_kirin import _compat
from airflow_provider_kirin.emulator import EmulatorServer, Fault

pytestmark = pytest.mark.airflow  # starts real Airflow processes: not in `make test-fast`

#: The fixtures of the example-DAG tests this module uses.
__all__ = ["test_dags_home"]


def connections(server: EmulatorServer) -> dict[str, str]:
    """``kirin_refused`` (a key the emulator refuses) and ``kirin_no_retries`` (every request
    tried once: the task itself fails, and Airflow decides about the next try)."""
    refused = json.loads(server.airflow_conn_json())
    refused["password"] = "not-the-key"
    return {
        "AIRFLOW_CONN_KIRIN_REFUSED": json.dumps(refused),
        "AIRFLOW_CONN_KIRIN_NO_RETRIES": server.airflow_conn_json({"max_retries": 0}),
    }


def tries(
    home: AirflowHome, dag_id: str, run_id: str
) -> list[tuple[int, str | None, str | None, str | None]]:
    """``(try_number, state, start_date, end_date)`` of every try of ``generate``, in order."""
    sql = "SELECT try_number, state, start_date, end_date FROM {} WHERE dag_id = ? AND run_id = ?"
    rows = home.query(sql.format("task_instance_history"), (dag_id, run_id))
    rows += home.query(sql.format("task_instance"), (dag_id, run_id))
    return sorted(rows)


def _when(text: str) -> datetime:
    return datetime.fromisoformat(str(text).replace(" ", "T"))


@pytest.mark.kirin_emulator(**FAST)
@pytest.mark.timeout(200)
def test_a_refused_key_ends_the_task_after_one_try_despite_retries(
    test_dags_home: AirflowHome, dags_test: Callable[..., DagsTestRun], kirin_emulator: EmulatorServer
) -> None:
    dag_id = "kirin_test_refused_key"
    run = dags_test(test_dags_home, dag_id, **connections(kirin_emulator))

    assert run.returncode != 0, run.tail()
    assert test_dags_home.run_state(dag_id, run.run_id) == "failed"
    assert [(n, state) for n, state, *_ in tries(test_dags_home, dag_id, run.run_id)] == [(1, "failed")]
    assert kirin_emulator.stats()["unauthorized"] == 1  # one request: nothing retried it
    assert any(name == "KirinAuthError" for name, _ in raised_kirin_errors(run.output)), run.tail()
    if _compat.HAS_RETRY_POLICY:
        assert "cannot be fixed by a retry" in run.output  # KirinRetryPolicy's reason, logged by Airflow
    else:
        assert "AirflowFailException" in run.output


@pytest.mark.kirin_emulator(**FAST)
@pytest.mark.timeout(200)
def test_an_outage_is_retried(
    test_dags_home: AirflowHome, dags_test: Callable[..., DagsTestRun], kirin_emulator: EmulatorServer
) -> None:
    """The control: ``dags test`` does retry, and a 503 is worth another try."""
    dag_id = "kirin_test_outage_is_retried"
    kirin_emulator.add_fault(Fault(kind="http_error", endpoint="lookup", status=503))
    run = dags_test(test_dags_home, dag_id, **connections(kirin_emulator))

    assert run.returncode == 0, run.tail()
    assert [(n, state) for n, state, *_ in tries(test_dags_home, dag_id, run.run_id)] == [
        (1, "failed"),
        (2, "success"),
    ]
    assert kirin_emulator.stats()["creates"] == 1


@pytest.mark.kirin_emulator(**FAST)
@pytest.mark.timeout(200)
def test_a_failed_generation_is_not_retried_when_the_operator_says_so(
    test_dags_home: AirflowHome, dags_test: Callable[..., DagsTestRun], kirin_emulator: EmulatorServer
) -> None:
    dag_id = "kirin_test_failed_generation_not_retried"
    kirin_emulator.add_fault(Fault(kind="fail_task", code="002011095", times=-1))
    run = dags_test(test_dags_home, dag_id)

    assert run.returncode != 0, run.tail()
    assert [(n, state) for n, state, *_ in tries(test_dags_home, dag_id, run.run_id)] == [(1, "failed")]
    assert kirin_emulator.stats()["creates"] == 1  # retries=2, yet no second generation paid for
    assert any(name == "KirinGenerationError" for name, _ in raised_kirin_errors(run.output)), run.tail()


@pytest.mark.kirin_emulator(**FAST)
@pytest.mark.timeout(240)
def test_a_429_with_retry_after_is_retried_after_that_many_seconds(
    test_dags_home: AirflowHome, dags_test: Callable[..., DagsTestRun], kirin_emulator: EmulatorServer
) -> None:
    dag_id = "kirin_test_retry_after"
    kirin_emulator.add_fault(Fault(kind="http_error", endpoint="lookup", status=429, retry_after="7"))
    # 3.3: the task's own retry_delay is 5 minutes, the policy's Retry-After must win. Before 3.3
    # the task's retry_delay applies: 2 s keeps the test short.
    delay = "300" if _compat.HAS_RETRY_POLICY else "2"
    env = {**connections(kirin_emulator), "KIRIN_TEST_RETRY_DELAY": delay}
    run = dags_test(test_dags_home, dag_id, **env)

    assert run.returncode == 0, run.tail()
    (first, second) = tries(test_dags_home, dag_id, run.run_id)
    assert (first[:2], second[:2]) == ((1, "failed"), (2, "success"))
    gap = (_when(second[2]) - _when(first[3])).total_seconds()
    print(f"next try {gap:.1f} s after the 429 with Retry-After: 7 (task retry_delay {delay} s)")
    if _compat.HAS_RETRY_POLICY:
        assert 6.5 <= gap <= 40, gap  # about 7 s: Retry-After, not the 300 s retry_delay
        (override,) = test_dags_home.query(
            "SELECT retry_delay_override FROM task_instance_history WHERE dag_id = ? AND run_id = ?",
            (dag_id, run.run_id),
        )
        assert override[0] == 7
    else:
        assert 1.5 <= gap <= 40, gap
    assert kirin_emulator.stats()["creates"] == 1
