"""Generate a video and keep it: the ``make demo`` DAG.

``generate`` submits and waits in the triggerer; ``keep_video`` streams the video to an
``ObjectStoragePath`` destination with a JSON sidecar and emits an event on the ``kirin_videos``
asset, which ``example_kirin_asset_consumer`` is scheduled on.

The Airflow Variable ``kirin_video_destination`` sets where videos are kept (any object-storage
URL: ``file://``, ``s3://``, ``gs://``...; default ``file:///tmp/kirin-videos``).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Asset, XComArg

from airflow_provider_kirin.operators.download import KirinDownloadVideoOperator
from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator

#: Where videos are kept: the Variable ``kirin_video_destination`` (any object-storage URL:
#: ``s3://bucket/videos``, ``gs://...``, ``file:///...``), rendered when the task runs.
DESTINATION = "{{ var.value.get('kirin_video_destination', 'file:///tmp/kirin-videos') }}"

KIRIN_VIDEOS = Asset(name="kirin_videos", uri="file:///kirin/videos")

with DAG(
    dag_id="example_kirin_keep_video",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["example", "kirin"],
    params={"prompt": "A red fox trotting through fresh snow at sunrise, cinematic"},
) as dag:
    generate = KirinTextToVideoOperator(
        task_id="generate",
        prompt="{{ params.prompt }}",
        duration=5,
        mode="std",
        wait_for_completion=True,
        deferrable=True,
    )
    keep = KirinDownloadVideoOperator(
        task_id="keep_video",
        kirin_task_id=generate.output,
        # run_after: every run has one (a run triggered from the UI or API may have no logical date)
        destination=DESTINATION + "/{{ dag_run.run_after | ds }}/",
        request=XComArg(generate, key="kirin_request"),
        outlets=[KIRIN_VIDEOS],
    )
