"""One generation per prompt with dynamic task mapping; each mapped task is retried independently
and, thanks to its derived ``external_task_id``, never pays twice for the same map index."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator

PROMPTS = [
    "A lighthouse at dusk, waves crashing, drone shot",
    "A cat chasing a laser dot across a wooden floor",
    "Time-lapse of a city skyline from day to night",
]

with DAG(
    dag_id="example_kirin_mapped",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["example", "kirin"],
) as dag:
    KirinTextToVideoOperator.partial(
        task_id="generate",
        duration=5,
        aspect_ratio="9:16",
        wait_for_completion=True,
        deferrable=True,
    ).expand(prompt=PROMPTS)
