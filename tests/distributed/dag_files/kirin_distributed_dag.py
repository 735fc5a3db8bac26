"""The DAG of ``tests/distributed/test_distributed.py``: 40 deferrable generations mapped over distinct
prompts, each allowed one retry (the test kills a Celery worker in the middle of one submit)."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator

DAG_ID = "kirin_distributed"
SUBJECTS = ["a red fox", "a lighthouse", "a paper boat", "a hot air balloon", "a city tram"]
PLACES = ["in fresh snow", "at dusk", "in the rain", "over a valley", "on a quiet street", "at sea",
          "in a desert", "under neon lights"]  # fmt: skip
#: 5 x 8 = 40 distinct prompts; map index i generates PROMPTS[i].
PROMPTS = [f"{subject} {place}, cinematic shot" for subject in SUBJECTS for place in PLACES]

with DAG(
    dag_id=DAG_ID,
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    max_active_tasks=len(PROMPTS),
    tags=["kirin-distributed"],
):
    KirinTextToVideoOperator.partial(
        task_id="generate",
        duration=5,
        wait_for_completion=True,
        deferrable=True,
        first_poll_delay=2.0,
        poll_interval=3.0,
        # The default error span (max_poll_error_seconds, 300 s) outlasts the test's 30-second 503
        # storm at any poll interval: nothing to set here.
        retries=1,
        retry_delay=timedelta(seconds=1),
    ).expand(prompt=PROMPTS)
