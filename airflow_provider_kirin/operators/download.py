"""Keep the videos of a completed Kirin task in storage you own; generated URLs expire.

::

    from airflow.sdk import Asset, XComArg

    from airflow_provider_kirin.operators.download import KirinDownloadVideoOperator

    videos = Asset("kirin-videos")

    keep = KirinDownloadVideoOperator(
        task_id="keep_video",
        kirin_task_id=generate.output,  # a KirinTextToVideoOperator or KirinTaskSensor upstream
        destination="s3://my-bucket/videos/{{ dag_run.run_after | ds }}/",  # or file://, gs://, a dir
        request=XComArg(generate, key="kirin_request"),  # the request fields, for the sidecar
        outlets=[videos],
    )

For each video it stores ``<task id>.mp4`` (``-2``, ``-3``... for more than one) and a sidecar
``<task id>.mp4.json``, both named by :func:`~airflow_provider_kirin.download.safe_name`, so no task
id a server sends can place a file outside ``destination``. The sidecar holds every request
field, the Kirin task id, external id, cost, timestamps, byte size and SHA-256. It returns the
stored paths. Each outlet asset gets an event whose extras carry ``paths``, ``kirin_task_id`` and ``cost``.

The task is read again when this runs, so the URLs are freshly signed even if the generation
finished a while ago.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_kirin import defaults

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_kirin.hooks.kirin import KirinHook
    from airflow_provider_kirin.models import KirinTask


def location(path: Any) -> str:
    """Where a file landed, written the same way on every Airflow line: as a URL (``file:///...``,
    ``s3://...``). Older ``universal-pathlib`` releases (Airflow 3.0) print a local
    ``ObjectStoragePath`` without its ``file://``."""
    from pathlib import Path

    text = str(path)
    return text if "://" in text or not text.startswith("/") else Path(text).as_uri()


def destination_dir(destination: Any) -> ObjectStoragePath:
    """An ``ObjectStoragePath`` for a URL (``s3://...``, ``file:///...``) or a local directory path."""
    from pathlib import Path

    from airflow.sdk import ObjectStoragePath

    if isinstance(destination, ObjectStoragePath):
        return destination
    text = str(destination)
    if "://" not in text:
        text = Path(text).expanduser().resolve().as_uri()
    return ObjectStoragePath(text)


class KirinDownloadVideoOperator(BaseOperator):
    """Stream each video of a completed Kirin task to ``destination`` with a JSON sidecar.

    :param kirin_task_id: The completed Kirin task (templated), e.g. ``generate.output``.
    :param destination: Directory to keep the videos in (templated): an ``ObjectStoragePath``,
        a URL Airflow's object storage understands (``file://``, ``s3://``, ``gs://``, ...), or a
        local path. Object-store credentials come from the path's Airflow connection.
    :param request: The request fields to record in the sidecar (templated), e.g.
        ``XComArg(generate, key="kirin_request")``.
    :param kirin_conn_id: The ``kirin`` connection.
    :param max_bytes: Refuse a video larger than this.
    :param require_video_type: Refuse a download whose response has no ``Content-Type`` (the
        default); ``False`` accepts such a host (a wrong type is refused all the same).
    """

    template_fields: Sequence[str] = ("kirin_task_id", "destination", "request")
    ui_color = "#f3e8ff"

    def __init__(
        self,
        *,
        kirin_task_id: str,
        destination: Any,
        request: dict[str, Any] | None = None,
        kirin_conn_id: str = defaults.DEFAULT_CONN_ID,
        max_bytes: int = 2 * 1024**3,
        require_video_type: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kirin_task_id = kirin_task_id
        self.destination = destination
        self.request = request
        self.kirin_conn_id = kirin_conn_id
        self.max_bytes = max_bytes
        self.require_video_type = require_video_type

    @cached_property
    def hook(self) -> KirinHook:
        from airflow_provider_kirin.hooks.kirin import KirinHook

        return KirinHook(kirin_conn_id=self.kirin_conn_id)

    def execute(self, context: Context) -> list[str]:
        from airflow_provider_kirin.exceptions import KirinError
        from airflow_provider_kirin.polling import raise_for_outcome

        task = self.hook.get_task(str(self.kirin_task_id))
        if raise_for_outcome(task) is None:
            raise KirinError(
                f"Kirin task {task.task_id} is {task.status}, not completed: nothing to keep yet.",
                task_id=task.task_id,
            )
        directory = destination_dir(self.destination)
        stored_paths: list[Any] = keep_task_videos(
            self.hook,
            task,
            directory,
            task.task_id,
            self.request,
            max_bytes=self.max_bytes,
            log=self.log,
            require_video_type=self.require_video_type,
        )
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = {
                "paths": stored_paths,
                "kirin_task_id": task.task_id,
                "cost": task.cost,
            }
        return stored_paths


def keep_task_videos(
    hook: KirinHook,
    task: KirinTask,
    directory: ObjectStoragePath,
    stem: str,
    request: dict[str, Any] | None,
    *,
    max_bytes: int,
    log: Any,
    require_video_type: bool = True,
) -> list[str]:
    """Stream every video of a completed ``task`` to ``directory/<stem>.mp4`` (``<stem>-2.mp4``...
    for more than one), each with its ``.json`` sidecar; return the stored paths. Every name goes
    through :func:`~airflow_provider_kirin.download.safe_name`, so whatever ``stem`` holds (a task
    id the server sent, an item key), no file lands outside ``directory``."""
    from airflow_provider_kirin.download import safe_name

    stored_paths: list[str] = []
    for index, video in enumerate(task.videos, start=1):
        item_stem = stem if index == 1 else f"{stem}-{index}"
        stored = hook.download_video(
            str(video.url),
            directory / safe_name(item_stem, ".mp4"),
            max_bytes=max_bytes,
            checksum=True,
            require_video_type=require_video_type,
        )
        sidecar = _sidecar(task, request, video.size, stored)
        (directory / safe_name(item_stem, ".mp4.json")).write_text(
            json.dumps(sidecar, indent=2, sort_keys=True)
        )
        stored_paths.append(location(stored.path))
        log.info("Kept %s (%d bytes, sha256 %s) with its sidecar", stored.path, stored.size, stored.sha256)
    return stored_paths


def _sidecar(
    task: KirinTask, request: dict[str, Any] | None, frame_size: str | None, stored: Any
) -> dict[str, Any]:
    return {
        "kirin_task_id": task.task_id,
        "external_task_id": task.external_task_id,
        "model": task.model,
        "status": task.status,
        "request": request,
        "prompt": (request or {}).get("prompt"),
        "cost": task.cost,
        "discount": task.discount,
        "created_at": task.created_at,
        "completed_at": task.updated_at,
        "stored_at": datetime.now(timezone.utc).isoformat(),
        "frame_size": frame_size,
        "bytes": stored.size,
        "sha256": stored.sha256,
        "content_type": stored.content_type,
    }
