"""The DAG of ``tests/reliability/test_retry_reuses_generation.py``: one Kirin submission with one
Airflow retry. Its knobs come from ``KIRIN_RELIABILITY_*`` environment variables set by the test."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator

DAG_ID = "kirin_reliability_retry"

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["kirin", "reliability-test"],
):
    KirinTextToVideoOperator(
        task_id="generate",
        prompt="a lighthouse in a winter storm, slow dolly-in",
        duration=5,
        mode="std",
        wait_for_completion=True,
        deferrable=False,
        first_poll_delay=0.0,
        poll_interval=float(os.environ.get("KIRIN_RELIABILITY_POLL_INTERVAL", "0.3")),
        timeout=60.0,
        retries=1,
        retry_delay=timedelta(seconds=0),
    )
