"""Runs whenever ``example_kirin_keep_video`` keeps a new video, and reads the asset event's extras
(``paths``, ``kirin_task_id``, ``cost``)."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Asset, dag, task

KIRIN_VIDEOS = Asset(name="kirin_videos", uri="file:///kirin/videos")


@dag(
    dag_id="example_kirin_asset_consumer",
    start_date=datetime(2026, 1, 1),
    schedule=[KIRIN_VIDEOS],
    catchup=False,
    tags=["example", "kirin"],
)
def example_kirin_asset_consumer():
    @task(inlets=[KIRIN_VIDEOS])
    def announce(triggering_asset_events=None) -> list[str]:
        paths: list[str] = []
        for event in (triggering_asset_events or {}).get(KIRIN_VIDEOS, []):
            extra = event.extra or {}
            task_id, cost = extra.get("kirin_task_id"), extra.get("cost")
            print(f"New Kirin video(s) {extra.get('paths')} from task {task_id}, cost {cost} USD")
            paths.extend(extra.get("paths") or [])
        return paths

    announce()


example_kirin_asset_consumer()
