"""Tiny DAGs for the retry-decision tests in ``tests/dags/test_retry_decisions.py``: a task with
``retries`` whose failure a retry cannot fix (a refused key), one whose failure a retry can fix
(an outage), and one that Kirin asks to come back later (429 with ``Retry-After``).

``kirin_refused`` and ``kirin_no_retries`` are connections the test sets: a wrong key, and the
emulator with ``max_retries=0`` (each request tried once, so the task itself fails and retries).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator

DEFAULTS = {"start_date": datetime(2026, 1, 1), "schedule": None, "catchup": False, "tags": ["kirin-test"]}
#: The task's own retry delay where the test asks for a long one (the Retry-After test on 3.3).
RETRY_DELAY = timedelta(seconds=float(os.environ.get("KIRIN_TEST_RETRY_DELAY", "1")))

with DAG(dag_id="kirin_test_refused_key", **DEFAULTS):
    KirinTextToVideoOperator(
        task_id="generate",
        prompt="A lighthouse in a storm",
        kirin_conn_id="kirin_refused",
        retries=3,
        retry_delay=timedelta(seconds=1),
    )

with DAG(dag_id="kirin_test_outage_is_retried", **DEFAULTS):
    KirinTextToVideoOperator(
        task_id="generate",
        prompt="A lighthouse in a storm",
        kirin_conn_id="kirin_no_retries",
        retries=1,
        retry_delay=timedelta(seconds=1),
    )

with DAG(dag_id="kirin_test_retry_after", **DEFAULTS):
    KirinTextToVideoOperator(
        task_id="generate",
        prompt="A lighthouse in a storm",
        kirin_conn_id="kirin_no_retries",
        retries=3,
        retry_delay=RETRY_DELAY,
    )

with DAG(dag_id="kirin_test_failed_generation_not_retried", **DEFAULTS):
    KirinTextToVideoOperator(
        task_id="generate",
        prompt="A lighthouse in a storm",
        wait_for_completion=True,
        first_poll_delay=0.5,
        poll_interval=0.5,
        retries=2,
        retry_delay=timedelta(seconds=1),
        retry_failed_generations=False,  # a retry would pay for a new generation: fail instead
    )
