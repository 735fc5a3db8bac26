"""The DAG of the pool test in ``tests/e2e/test_real_airflow.py``: five deferrable generations,
mapped over prompts, all in the ``kirin`` pool. The test sets the pool (slots, ``include_deferred``)
before each run; the DAG itself never changes."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator

DAG_ID = "kirin_e2e_pool_cap"
POOL = "kirin"
POLL = 0.5
PROMPTS = [
    "A lighthouse at dusk, waves crashing, drone shot",
    "A cat chasing a laser dot across a wooden floor",
    "Time-lapse of a city skyline from day to night",
    "A paper boat drifting down a rainy street gutter",
    "Hot air balloons rising over a valley at dawn",
]

with DAG(
    dag_id=DAG_ID,
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["kirin-e2e"],
):
    KirinTextToVideoOperator.partial(
        task_id="generate",
        duration=5,
        wait_for_completion=True,
        deferrable=True,
        pool=POOL,
        first_poll_delay=POLL,
        poll_interval=POLL,
    ).expand(prompt=PROMPTS)
