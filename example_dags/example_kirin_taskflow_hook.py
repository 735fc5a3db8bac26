"""Use the hook directly from TaskFlow: submit, wait in the worker, download the video.

The download goes to the folder named by the Airflow Variable ``kirin_video_dir`` (default: a
``kirin-videos`` folder in the system's temporary directory), named after the run.
"""

from __future__ import annotations

import os
import re
import tempfile
from datetime import datetime

from airflow.sdk import dag, task


@dag(
    dag_id="example_kirin_taskflow_hook",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["example", "kirin"],
)
def example_kirin_taskflow_hook():
    @task
    def generate(prompt: str) -> dict:
        from airflow.sdk import get_current_context

        from airflow_provider_kirin.core.idempotency import with_derived_external_task_id
        from airflow_provider_kirin.hooks.kirin import KirinHook
        from airflow_provider_kirin.models import KirinVideoRequest

        hook = KirinHook(kirin_conn_id="kirin_default")
        request = KirinVideoRequest.build(prompt=prompt, duration=5, aspect_ratio="1:1")
        # An external id derived from this task instance and these inputs makes an Airflow retry
        # reuse the generation it paid for, and a changed prompt make a new one.
        request = with_derived_external_task_id(request, get_current_context())
        created, _reused = hook.submit_idempotent(request)
        done = hook.wait_for_task(created.task_id, timeout=30 * 60)  # checks every 10 s
        return done.to_result()

    @task
    def download(result: dict) -> str:
        from airflow.sdk import Variable, get_current_context

        from airflow_provider_kirin.hooks.kirin import KirinHook

        out_dir = Variable.get("kirin_video_dir", default=os.path.join(tempfile.gettempdir(), "kirin-videos"))
        # Named after this run (our own value): nothing the server sends chooses a file path.
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", get_current_context()["run_id"]) + ".mp4"
        # This run's own file: a retry of this task may replace it (overwrite=True); without it an
        # existing file is never replaced.
        url = result["videos"][0]["url"]
        path = KirinHook().download_video(url, os.path.join(out_dir, name), overwrite=True).path
        print(f"Video of Kirin task {result['task_id']} saved to {path} (cost {result['cost']} USD)")
        return str(path)

    download(generate("A steaming cup of coffee on a windowsill, morning light"))


example_kirin_taskflow_hook()
