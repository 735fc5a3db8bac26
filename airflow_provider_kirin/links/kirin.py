"""The "Kirin video" extra link: a button on the task that opens the generated video.

It is attached to :class:`~airflow_provider_kirin.operators.kirin.KirinTextToVideoOperator` and
:class:`~airflow_provider_kirin.sensors.kirin.KirinTaskSensor`, and reads the first video URL of
the ``kirin_result`` XCom those push when a generation completes. Generated URLs expire, so keep
the video (``KirinHook.download_video``) if you need it later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

from airflow_provider_kirin.defaults import KIRIN_RESULT_XCOM_KEY

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


def video_url_of(result: Any) -> str:
    """The first video URL of a ``kirin_result`` value, or ``""``."""
    if isinstance(result, dict):
        for video in result.get("videos") or []:
            if isinstance(video, dict) and isinstance(video.get("url"), str):
                return video["url"]
    return ""


class KirinVideoLink(BaseOperatorLink):
    """Link to the generated video of a completed Kirin task."""

    name = "Kirin video"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return video_url_of(XCom.get_value(ti_key=ti_key, key=KIRIN_RESULT_XCOM_KEY))
