"""The "Kirin video" extra link: a button on the task that opens the generated video.

It is attached to :class:`~airflow_provider_kirin.operators.kirin.KirinTextToVideoOperator` and
:class:`~airflow_provider_kirin.sensors.kirin.KirinTaskSensor`. Airflow 3 computes links on the
worker when the task finishes and stores them in XCom for the UI, so the link reads the first
video URL that the operator or sensor recorded on itself (``kirin_video_url``) when the generation
completed; a task that deferred, failed or did not wait has no link. Generated URLs expire, so
keep the video (``KirinDownloadVideoOperator``) if you need it later. Only an http(s) URL ever
becomes a link.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


class KirinVideoLink(BaseOperatorLink):
    """Link to the generated video of a completed Kirin task."""

    name = "Kirin video"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow_provider_kirin.models import is_http_url

        url = getattr(operator, "kirin_video_url", None)
        return str(url) if is_http_url(url) else ""  # never a javascript: or file: href
