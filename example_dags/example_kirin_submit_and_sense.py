"""Submit a generation, then wait for it with a deferrable sensor (no worker slot while waiting).

Set up the ``kirin_default`` connection first (``make demo`` does it for the bundled emulator).
The sensor checks first after 20 s, then every 10 s (the provider's defaults, see
``airflow_provider_kirin/core/defaults.py``).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator
from airflow_provider_kirin.sensors.kirin import KirinTaskSensor

with DAG(
    dag_id="example_kirin_submit_and_sense",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["example", "kirin"],
    params={"prompt": "A paper boat drifting down a rainy street, cinematic, 35mm"},
) as dag:
    submit = KirinTextToVideoOperator(
        task_id="submit",
        prompt="{{ params.prompt }}",
        duration=5,
        aspect_ratio="16:9",
        mode="std",
    )
    wait = KirinTaskSensor(
        task_id="wait_for_video",
        kirin_task_id=submit.output,
        deferrable=True,
        timeout=30 * 60,
    )
