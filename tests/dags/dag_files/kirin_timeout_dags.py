"""Tiny DAGs for the timeout tests in ``tests/dags/test_example_dags.py``: each waits for a Kirin
generation with a timeout far shorter than the emulator's processing time, through a different path
(the deferrable operator's trigger, the operator's own polling in the worker, a poking sensor)."""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator
from airflow_provider_kirin.sensors.kirin import KirinTaskSensor

TIMEOUT = float(os.environ.get("KIRIN_TEST_TIMEOUT", "3"))
POLL = 0.5
DEFAULTS = {"start_date": datetime(2026, 1, 1), "schedule": None, "catchup": False, "tags": ["kirin-test"]}

with DAG(dag_id="kirin_test_deferrable_operator_timeout", **DEFAULTS):
    KirinTextToVideoOperator(
        task_id="generate",
        prompt="A glacier calving into the sea, very slowly",
        wait_for_completion=True,
        deferrable=True,
        first_poll_delay=POLL,
        poll_interval=POLL,
        timeout=TIMEOUT,
    )

with DAG(dag_id="kirin_test_sync_operator_timeout", **DEFAULTS):
    KirinTextToVideoOperator(
        task_id="generate",
        prompt="A glacier calving into the sea, very slowly",
        wait_for_completion=True,
        deferrable=False,
        first_poll_delay=POLL,
        poll_interval=POLL,
        timeout=TIMEOUT,
    )

with DAG(dag_id="kirin_test_sensor_timeout", **DEFAULTS):
    submit = KirinTextToVideoOperator(task_id="submit", prompt="A glacier calving into the sea, very slowly")
    KirinTaskSensor(
        task_id="wait_for_video",
        kirin_task_id=submit.output,
        deferrable=False,
        mode="poke",
        first_poll_delay=POLL,
        poke_interval=POLL,
        timeout=TIMEOUT,
    )
