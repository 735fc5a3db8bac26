"""One video per prompt, each kept with its sidecar, and the run's total cost in a final task.

The generations are mapped (one task instance per prompt), so each is retried on its own and
never pays twice; ``total_cost`` reads every ``kirin_result`` and sums the USD cost exactly.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from airflow.sdk import DAG, XComArg, task

from airflow_provider_kirin.operators.download import KirinDownloadVideoOperator
from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator

#: Where videos are kept: the Variable ``kirin_video_destination`` (any object-storage URL:
#: ``s3://bucket/videos``, ``gs://...``, ``file:///...``), rendered when the task runs.
DESTINATION = "{{ var.value.get('kirin_video_destination', 'file:///tmp/kirin-videos') }}"

PROMPTS = [
    "A paper lantern rising into a starry sky",
    "Rain on a tin roof, close-up, slow motion",
]


@task
def total_cost(results: list[dict]) -> str:
    """Sum the cost of every generation of this run (decimal strings, so no float rounding)."""
    total = sum((Decimal(r["cost"] or "0") for r in results), Decimal("0"))
    print(f"{len(results)} videos generated for {total} USD in total")
    return str(total)


with DAG(
    dag_id="example_kirin_cost_report",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["example", "kirin"],
) as dag:
    generate = KirinTextToVideoOperator.partial(
        task_id="generate",
        duration=5,
        wait_for_completion=True,
        deferrable=True,
    ).expand(prompt=PROMPTS)
    keep = KirinDownloadVideoOperator.partial(
        task_id="keep_video",
        destination=DESTINATION + "/{{ run_id | replace(':', '-') }}/",
    ).expand(kirin_task_id=generate.output)
    results = XComArg(generate, key="kirin_result")
    keep >> total_cost(results)
