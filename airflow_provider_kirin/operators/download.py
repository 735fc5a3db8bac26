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

For each video it stores ``<task id>.mp4`` (``<task id>~2.mp4``, ``~3``... for more than one: ``~``
is in no task id, so these never collide with another task's files) and a sidecar
``<task id>.mp4.json``, both named by :func:`~airflow_provider_kirin.io.storage.safe_name` after the
task id it **asked** for (a server answering with another id is refused), so nothing a server sends
can choose or place a file. Files are written by :func:`~airflow_provider_kirin.io.storage.write_file`:
no symlink is followed, and an existing file is replaced only when its sidecar names the same
generation (a retry), else the task fails with ``KirinStorageError`` naming it, unless
``overwrite=True``. The sidecar holds every request
field, the Kirin task id, external id, cost, timestamps, byte size and SHA-256. It returns the
stored paths. Each outlet asset gets an event whose extras carry ``paths``, ``kirin_task_id`` and ``cost``.

The task is read again when this runs, so the URLs are freshly signed even if the generation
finished a while ago.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_kirin.core import defaults
from airflow_provider_kirin.operators.common import KirinLineageMixin, default_retry_policy, kirin_errors

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_kirin.hooks.kirin import KirinHook


class KirinDownloadVideoOperator(KirinLineageMixin, BaseOperator):
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
    :param overwrite: Replace existing files of the same names even when they are not this
        generation's (a user's own file, another generation's video). Default ``False``: such a file
        fails the task with ``KirinStorageError`` naming it, before anything is downloaded.

    OpenLineage (with the OpenLineage provider installed): each stored video and its sidecar as
    output datasets, and a ``kirin`` run facet (Kirin task id, external id, cost, files stored).
    From Airflow 3.3 its default ``retry_policy`` is ``KirinRetryPolicy``.
    """

    lineage_operation = "download"

    template_fields: Sequence[str] = ("kirin_task_id", "destination", "request")
    ui_color = "#f3e8ff"

    def __init__(
        self,
        *,
        kirin_task_id: str,
        destination: Any,
        request: dict[str, Any] | None = None,
        kirin_conn_id: str = defaults.DEFAULT_CONN_ID,
        max_bytes: int = defaults.DEFAULT_MAX_BYTES,
        require_video_type: bool = True,
        overwrite: bool = False,
        **kwargs: Any,
    ) -> None:
        default_retry_policy(kwargs, retry_failed_generations=True)
        super().__init__(**kwargs)
        self.kirin_task_id = kirin_task_id
        self.destination = destination
        self.request = request
        self.kirin_conn_id = kirin_conn_id
        self.max_bytes = max_bytes
        self.require_video_type = require_video_type
        self.overwrite = overwrite

    @cached_property
    def hook(self) -> KirinHook:
        from airflow_provider_kirin.hooks.kirin import KirinHook

        return KirinHook(kirin_conn_id=self.kirin_conn_id)

    @kirin_errors
    def execute(self, context: Context) -> list[str]:
        from airflow_provider_kirin.core.waiting import completed
        from airflow_provider_kirin.io.storage import destination_dir, keep_task_videos

        asked = str(self.kirin_task_id)
        self.record_lineage({"kirin_task_id": asked})
        # get_task refuses an answer naming another task (protocol.interpret): the files are named
        # after the id asked for, never after one the server chose.
        task = completed(self.hook.get_task(asked))
        self.record_lineage(
            {"kirin_task_id": task.task_id, "external_task_id": task.external_task_id, "cost": task.cost}
        )
        directory = destination_dir(self.destination)
        stored_paths: list[Any] = keep_task_videos(
            self.hook,
            task,
            directory,
            asked,
            self.request,
            max_bytes=self.max_bytes,
            log=self.log,
            require_video_type=self.require_video_type,
            overwrite=self.overwrite,
        )
        self.record_lineage(
            {"stored": len(stored_paths)},
            outputs=[name for path in stored_paths for name in (path, f"{path}.json")],
        )
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = {
                "paths": stored_paths,
                "kirin_task_id": task.task_id,
                "cost": task.cost,
            }
        return stored_paths
