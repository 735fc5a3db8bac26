"""What one task answer may hold is bounded where it enters, and server text arrives as plain text.

Small hostile servers on loopback (the ``hostile`` fixture of ``conftest.py``) answer with what issue 18's
second adversarial pass found: a million ``output`` entries, 250,000 video URLs, 300 videos for one
generation, control characters in every text field, costs in non-ASCII digits. Each test asserts
the bound (videos kept, bytes of a trigger event and of the ``kirin_result`` XCom, downloads made)
or the cleaning (no raw control character in an exception, an event, a log line or a file).
The time the event loop is held and the memory a large answer costs are measured by
``benchmarks/bench_hostile_answers.py`` (timings belong in benchmarks).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from reliability.test_hostile_server import (
    HostileServer,
    api_and_files,
    envelope,
    run_trigger,
)

from airflow_provider_kirin.core.defaults import MAX_VIDEOS
from airflow_provider_kirin.core.redaction import has_controls
from airflow_provider_kirin.exceptions import KirinBadResponseError, KirinError
from airflow_provider_kirin.hooks.kirin import KirinAsyncHook, KirinHook
from airflow_provider_kirin.operators.download import KirinDownloadVideoOperator
from airflow_provider_kirin.triggers.kirin import KirinTaskTrigger, task_from_event

#: The most bytes a trigger event or the ``kirin_result`` XCom may take, whatever the server says.
EVENT_CAP = 16 * 1024
CONTROLS = "\n\r\x1b[31m\x07\x00\u2028\u0085"


def size(value: Any) -> int:
    return len(json.dumps(value).encode())


def many_videos(server: HostileServer, count: int) -> dict[str, Any]:
    url = f"{server.url}/files/v.mp4?sig=" + "s" * 60
    return envelope(
        output=[{"content": [{"type": "video", "url": f"{url}&n={i}"}]} for i in range(count)],
        usage={"cost": "0.35"},
    )


def test_a_million_outputs_are_refused_by_the_size_cap_and_a_megabyte_of_them_is_cut(
    hostile: Callable[..., HostileServer],
) -> None:
    big = envelope(output=[{}] * 1_000_000)  # 3 MB: over max_response_bytes (1 MiB)
    hostile(lambda exchange: exchange.json(big))
    with pytest.raises(KirinBadResponseError, match="max_response_bytes"):
        KirinHook().get_task("kt_1")
    server = hostile(lambda exchange: exchange.json(answer))
    answer = many_videos(server, 6_500)
    assert 900_000 < size(answer) < 1024 * 1024  # just under max_response_bytes: accepted
    task = KirinHook().get_task("kt_1")
    assert len(task.video_urls) == MAX_VIDEOS
    assert size(task.to_result()) < EVENT_CAP
    assert size(task.to_event()) < EVENT_CAP


async def test_250000_video_urls_make_a_small_event_and_xcom(
    hostile: Callable[..., HostileServer], caplog: pytest.LogCaptureFixture
) -> None:
    # 250,000 URLs do not fit in 1 MiB: a server may name as many as fit, in as long URLs as pass
    long = "https://cdn.example.com/v.mp4?sig=" + "s" * 4000
    hostile(
        lambda e: e.json(envelope(output=[{"content": [{"type": "video", "url": long}] * 240}])),
        max_videos=16,
    )
    (event,) = await run_trigger(KirinTaskTrigger("kt_1", poll_interval=0.1))
    assert event["status"] == "success"
    assert size(event) < EVENT_CAP
    task = task_from_event(event)
    assert 1 <= len(task.video_urls) <= 3  # 12 KiB of URLs at most, whatever max_videos says
    assert size(task.to_result()) < EVENT_CAP
    assert "names more videos than kept" in caplog.text


def test_a_task_naming_300_videos_downloads_at_most_max_videos(
    hostile: Callable[..., HostileServer], tmp_path: Path
) -> None:
    server = hostile(api_and_files(lambda exchange: many_videos(server, 300)))
    operator = KirinDownloadVideoOperator(task_id="keep", kirin_task_id="kt_1", destination=str(tmp_path))
    stored = operator.execute(context={})  # type: ignore[arg-type]
    downloads = [path for path in server.paths() if path.startswith("/files/")]
    assert len(stored) == len(downloads) == MAX_VIDEOS
    assert len(list(tmp_path.iterdir())) == 2 * MAX_VIDEOS  # each video and its sidecar


def hostile_text(server: HostileServer) -> dict[str, Any]:
    return envelope(
        status="fail" + CONTROLS + "ed",
        external_task_id="ext" + CONTROLS,
        created_at="2026" + CONTROLS,
        error={"code": "E42" + CONTROLS, "error_message": "Marking task as SUCCESS" + CONTROLS},
        metadata={"note" + CONTROLS: "x" + CONTROLS},
        output=[{"content": [{"type": "video", "url": f"{server.url}/files/v.mp4\n?sig=1"}]}],
    )


def log_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every log line written, as a reader of the log sees it (one record, one line)."""
    return [record.getMessage() for record in caplog.records]


def assert_plain(*values: Any) -> None:
    for value in values:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        assert not has_controls(text), repr(text[:300])


async def test_control_characters_never_reach_exceptions_events_xcom_or_logs(
    hostile: Callable[..., HostileServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = hostile(lambda exchange: exchange.json(hostile_text(server)))
    task = KirinHook().get_task("kt_1")
    assert task.status == "fail\\n\\r\\x1b[31m\\x07\\x00\\u2028\\x85ed"  # escaped, visible, one line
    assert not task.is_failed  # a status with control characters is not "failed": not yet
    assert task.video_urls == []  # a URL with a control character is refused, not escaped
    assert_plain(task.to_result(), task.to_event(), task.model_dump(mode="json"))

    failed = envelope(status="failed", error={"code": "E42" + CONTROLS, "error_message": "boom" + CONTROLS})
    hostile(lambda exchange: exchange.json(failed))
    with pytest.raises(KirinError) as sync_error:
        KirinHook().wait_for_task("kt_1", poll_interval=0.1, timeout=5, first_poll_delay=0)
    (event,) = await run_trigger(KirinTaskTrigger("kt_1", poll_interval=0.1))
    assert event["status"] == "failed"
    with pytest.raises(KirinError) as event_error:
        task_from_event(event)
    for error in (sync_error.value, event_error.value):
        assert_plain(str(error), error.to_dict(), error.message)
        assert "boom\\n" in error.message
    assert_plain(event, *log_messages(caplog))

    hostile(
        lambda exchange: exchange.send(
            503, ("Service down" + CONTROLS).encode(), {"Content-Type": "text/plain"}
        )
    )
    async with KirinAsyncHook() as hook:
        with pytest.raises(KirinError) as http_error:
            await hook.get_task("kt_1")
    assert_plain(str(http_error.value), http_error.value.to_dict(), *log_messages(caplog))


@pytest.mark.parametrize("cost", ["１２３", "٣٥", "0.3５", "1\n"])  # noqa: RUF001 - the digits are the point
def test_a_cost_in_anything_but_ascii_digits_is_refused(
    hostile: Callable[..., HostileServer], cost: str
) -> None:
    answer = envelope(output=[{"content": [{"url": "http://cdn.example.com/v.mp4"}]}], usage={"cost": cost})
    hostile(lambda exchange: exchange.json(answer))
    with pytest.raises(KirinBadResponseError, match="cost"):
        KirinHook().get_task("kt_1")
