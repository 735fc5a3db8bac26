"""Submit and wait in one task, deferring to the triggerer while the video renders.

The result (``videos``, ``cost``, ...) lands in XCom under ``kirin_result``; the "Kirin video"
button on the task opens the video.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator

with DAG(
    dag_id="example_kirin_deferrable_operator",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["example", "kirin"],
    params={"prompt": "A hummingbird hovering over a red flower, slow motion, macro lens"},
) as dag:
    generate = KirinTextToVideoOperator(
        task_id="generate",
        prompt="{{ params.prompt }}",
        negative_prompt="blurry, low quality",
        duration=5,
        mode="std",
        wait_for_completion=True,
        deferrable=True,
        timeout=30 * 60,
    )
