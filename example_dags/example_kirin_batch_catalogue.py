"""Every night, one clip per product of the catalogue, in ONE task: a batch, not a mapped task.

The prompts come from ``prompts/catalogue.txt`` next to this file (``<key> | <prompt>`` a line).
``KirinBatchTextToVideoOperator`` submits and waits for all of them with one trigger, keeping at
most ``max_in_flight`` generations running (the account's limit), and writes ``manifest.jsonl``
plus each video (``<index>-<key>.mp4`` with a JSON sidecar) under the destination: the Airflow
Variable ``kirin_catalogue_destination`` (any object-storage URL: ``file://``, ``s3://``,
``gs://``...; default ``file:///tmp/kirin-catalogue``), one folder per night. ``cost_summary``
logs what the night cost; the ``kirin_catalogue`` asset event names the manifest.

A task retry pays only for the items that failed; the rest are found again by their ids.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, Asset, task

from airflow_provider_kirin.operators.batch import KirinBatchTextToVideoOperator

PROMPTS_FILE = Path(__file__).parent / "prompts" / "catalogue.txt"
KIRIN_CATALOGUE = Asset(name="kirin_catalogue", uri="file:///kirin/catalogue")


@task
def catalogue_prompts() -> list[dict[str, str]]:
    """The catalogue as batch items: a stable ``key`` and a ``prompt`` per product."""
    items = []
    for line in PROMPTS_FILE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, prompt = line.partition("|")
            items.append({"key": key.strip(), "prompt": prompt.strip()})
    return items


@task
def cost_summary(summary: dict) -> str:
    """One line for the night: how many clips, how many failed, what they cost, where the manifest is."""
    line = (
        f"{summary['counts'].get('completed', 0)} of {summary['items']} clips generated, "
        f"{summary['failed']} failed, total cost {summary['total_cost']} USD; manifest {summary['manifest']}"
    )
    print(line)
    return line


with DAG(
    dag_id="example_kirin_batch_catalogue",
    start_date=datetime(2026, 1, 1),
    schedule="0 2 * * *",
    catchup=False,
    max_active_runs=1,
    tags=["example", "kirin"],
) as dag:
    catalogue = KirinBatchTextToVideoOperator(
        task_id="catalogue",
        prompts=catalogue_prompts(),
        duration=5,
        aspect_ratio="1:1",
        max_in_flight=4,
        max_failed=0.1,  # a few failed clips do not fail the night; more do (after the manifest)
        destination=(
            "{{ var.value.get('kirin_catalogue_destination', 'file:///tmp/kirin-catalogue') }}"
            "/{{ (data_interval_start or dag_run.run_after) | ds }}/"
        ),
        keep_videos=True,
        outlets=[KIRIN_CATALOGUE],
    )
    cost_summary(catalogue.output)
