"""Tests of the Kirin emulator itself, over real HTTP on loopback.

The emulator is the oracle the provider's tests run against, so each behaviour here is checked
from the outside: status codes and bodies, counters, what a real HTTP client observes when a
fault cuts the connection, and that the served file really is a video.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import pytest
import requests

from airflow_provider_kirin.emulator import DEFAULT_API_KEY, EmulatorConfig, EmulatorServer, Fault

REPO = Path(__file__).resolve().parents[2]
MODEL = "kirin_v2_5_turbo_t2v"
BODY: dict[str, Any] = {"model": MODEL, "prompt": "a red fox running through snow"}
ENVELOPE_KEYS = {"task_id", "external_task_id", "model", "status", "created_at", "updated_at", "metadata"}
CREATE = "/v1/videos/generations"


# -- helpers ---------------------------------------------------------------------------------------
def create(emu: EmulatorServer, timeout: float = 5, **fields: Any) -> requests.Response:
    return requests.post(
        f"{emu.api_url}{CREATE}", json={**BODY, **fields}, headers=emu.headers, timeout=timeout
    )


def get(emu: EmulatorServer, task_id: str, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("timeout", 5)
    return requests.get(f"{emu.api_url}/v1/tasks/{task_id}", headers=emu.headers, **kwargs)


def lookup(emu: EmulatorServer, external_task_id: str) -> requests.Response:
    params = {"external_task_id": external_task_id}
    return requests.get(f"{emu.api_url}/v1/tasks", params=params, headers=emu.headers, timeout=5)


def completed_task(emu: EmulatorServer, **fields: Any) -> dict[str, Any]:
    task_id = create(emu, **fields).json()["task_id"]
    return emu.complete_task(task_id)


def video_url(envelope: dict[str, Any]) -> str:
    return str(envelope["output"][0]["content"][0]["url"])


def assert_error(response: requests.Response, status: int, code: str, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["error_message"], str)
    assert error["error_message"]
    if field is not None:
        assert error["error_message"].startswith(f"{field}: "), error["error_message"]


class CallbackReceiver:
    """A tiny HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver._cond:
                    receiver.bodies.append(body)
                    receiver._cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.bodies) >= count, timeout)
            return list(self.bodies)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    rec = CallbackReceiver()
    yield rec
    rec.close()


# -- the package ---------------------------------------------------------------------------------
def test_import_is_light_and_starts_nothing() -> None:
    code = (
        "import sys, threading, airflow_provider_kirin.emulator as e; "
        "assert 'fastapi' not in sys.modules and 'uvicorn' not in sys.modules, 'heavy import'; "
        "assert threading.active_count() == 1; print(e.EmulatorConfig().api_key)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == DEFAULT_API_KEY


def test_default_key_does_not_look_like_a_secret() -> None:
    assert not re.search(r"(sk|key)-[A-Za-z0-9]{20,}", DEFAULT_API_KEY)


# -- create / query / progression ------------------------------------------------------------------
def test_task_progresses_pending_processing_completed(kirin_emulator: EmulatorServer) -> None:
    start = time.monotonic()
    created = create(kirin_emulator, external_task_id="run-1")
    assert created.status_code == 200
    env = created.json()
    assert set(env) == ENVELOPE_KEYS
    assert env["status"] == "pending"
    assert env["task_id"].startswith("kt_")
    assert env["external_task_id"] == "run-1"
    assert env["model"] == MODEL
    assert env["metadata"] == {"emulator": True, "mode": "std", "duration": "5", "aspect_ratio": "16:9"}

    seen: list[tuple[str, float]] = []
    polls = 0
    while time.monotonic() - start < 3:
        status = get(kirin_emulator, env["task_id"]).json()["status"]
        polls += 1
        if not seen or seen[-1][0] != status:
            seen.append((status, time.monotonic() - start))
        if status == "completed":
            break
        time.sleep(0.02)
    assert [s for s, _ in seen] == ["pending", "processing", "completed"]
    assert seen[1][1] >= 0.2 - 0.01  # pending_seconds
    assert seen[2][1] >= 0.7 - 0.01  # + processing_seconds

    final = get(kirin_emulator, env["task_id"]).json()
    polls += 1
    assert set(final) == ENVELOPE_KEYS | {"output", "usage"}
    assert final["output"] == [{"content": [{"type": "video", "url": video_url(final), "size": "320x180"}]}]
    assert video_url(final) == f"{kirin_emulator.url}/v1/files/{env['task_id']}/video.mp4"
    assert final["usage"] == {"cost": "0.35", "discount": 0}
    created_at = datetime.fromisoformat(final["created_at"])
    updated_at = datetime.fromisoformat(final["updated_at"])
    assert created_at.tzinfo is not None
    assert 0.65 <= (updated_at - created_at).total_seconds() <= 0.75
    stats = kirin_emulator.stats()
    assert stats["creates"] == stats["create_requests"] == 1
    assert stats["gets"] == polls
    assert stats["tasks"] == 1


@pytest.mark.parametrize(
    ("mode", "duration", "aspect_ratio", "cost", "size"),
    [
        ("std", "5", "16:9", "0.35", "320x180"),
        ("std", "10", "9:16", "0.70", "180x320"),
        ("pro", "5", "1:1", "0.60", "240x240"),
        ("pro", 10, "16:9", "1.20", "320x180"),  # an int duration is accepted too
    ],
)
def test_cost_and_size(
    kirin_emulator: EmulatorServer, mode: str, duration: Any, aspect_ratio: str, cost: str, size: str
) -> None:
    kirin_emulator.set_timings(0, 0)
    env = create(kirin_emulator, mode=mode, duration=duration, aspect_ratio=aspect_ratio).json()
    done = get(kirin_emulator, env["task_id"]).json()
    assert done["status"] == "completed"
    assert done["usage"]["cost"] == cost
    assert done["output"][0]["content"][0]["size"] == size
    assert done["metadata"]["duration"] == str(duration)


def test_lookup_by_external_id_and_404s(kirin_emulator: EmulatorServer) -> None:
    env = create(kirin_emulator, external_task_id="mine-42").json()
    found = lookup(kirin_emulator, "mine-42")
    assert found.status_code == 200
    assert found.json()["task_id"] == env["task_id"]
    assert_error(lookup(kirin_emulator, "nobody"), 404, "not_found")
    assert_error(get(kirin_emulator, "kt_missing"), 404, "not_found")
    missing_param = requests.get(f"{kirin_emulator.url}/v1/tasks", headers=kirin_emulator.headers, timeout=5)
    assert_error(missing_param, 422, "invalid_request", "external_task_id")
    assert_error(requests.get(f"{kirin_emulator.url}/v2/nothing", timeout=5), 404, "not_found")
    stats = kirin_emulator.stats()
    assert (stats["lookups"], stats["gets"], stats["not_found"]) == (3, 1, 2)


def test_duplicate_external_task_id_is_409(kirin_emulator: EmulatorServer) -> None:
    first = create(kirin_emulator, external_task_id="dup")
    assert first.status_code == 200
    second = create(kirin_emulator, external_task_id="dup", prompt="another prompt")
    assert_error(second, 409, "duplicate_external_task_id", "external_task_id")
    assert first.json()["task_id"] in second.json()["error"]["error_message"]
    stats = kirin_emulator.stats()
    assert (stats["create_requests"], stats["creates"], stats["tasks"], stats["conflicts"]) == (2, 1, 1, 1)


# -- auth and validation -------------------------------------------------------------------------
@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "Basic a2lyaW4=", DEFAULT_API_KEY, "Bearer"])
def test_bad_or_missing_key_is_401(kirin_emulator: EmulatorServer, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    env = create(kirin_emulator).json()
    for response in (
        requests.post(f"{kirin_emulator.url}{CREATE}", json=BODY, headers=headers, timeout=5),
        requests.get(f"{kirin_emulator.url}/v1/tasks/{env['task_id']}", headers=headers, timeout=5),
        requests.get(f"{kirin_emulator.url}/v1/tasks?external_task_id=x", headers=headers, timeout=5),
    ):
        assert_error(response, 401, "unauthorized")
    stats = kirin_emulator.stats()
    assert (stats["creates"], stats["unauthorized"]) == (1, 3)


def test_bearer_scheme_is_case_insensitive(kirin_emulator: EmulatorServer) -> None:
    headers = {"Authorization": f"bearer {kirin_emulator.api_key}"}
    response = requests.post(f"{kirin_emulator.url}{CREATE}", json=BODY, headers=headers, timeout=5)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"model": "kirin_v1"}, "model"),
        ({"model": None}, "model"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 2501}, "prompt"),
        ({"prompt": 42}, "prompt"),
        ({"negative_prompt": "x" * 2501}, "negative_prompt"),
        ({"negative_prompt": None}, "negative_prompt"),
        ({"duration": "7"}, "duration"),
        ({"duration": 5.0}, "duration"),
        ({"duration": True}, "duration"),
        ({"aspect_ratio": "4:3"}, "aspect_ratio"),
        ({"mode": "turbo"}, "mode"),
        ({"watermark_info": {"enabled": "yes"}}, "watermark_info"),
        ({"watermark_info": {"enabled": True, "text": "(c)"}}, "watermark_info"),
        ({"watermark_info": [True]}, "watermark_info"),
        ({"callback_url": "ftp://example.invalid/x"}, "callback_url"),
        ({"callback_url": "not a url"}, "callback_url"),
        ({"external_task_id": ""}, "external_task_id"),
        ({"external_task_id": 7}, "external_task_id"),
        ({"aspectRatio": "16:9"}, "aspectRatio"),
    ],
)
def test_invalid_create_bodies_are_422(
    kirin_emulator: EmulatorServer, changes: dict[str, Any], field: str
) -> None:
    assert_error(create(kirin_emulator, **changes), 422, "invalid_request", field)
    assert kirin_emulator.stats()["creates"] == 0


def test_missing_fields_and_non_json(kirin_emulator: EmulatorServer) -> None:
    url = f"{kirin_emulator.url}{CREATE}"
    assert_error(
        requests.post(url, json={"model": MODEL}, headers=kirin_emulator.headers, timeout=5),
        422,
        "invalid_request",
        "prompt",
    )
    assert_error(
        requests.post(url, json=["x"], headers=kirin_emulator.headers, timeout=5),
        422,
        "invalid_request",
        "body",
    )
    not_json = requests.post(url, data=b"{oops", headers=kirin_emulator.headers, timeout=5)
    assert_error(not_json, 400, "invalid_request", "body")


def test_limits_and_optional_fields_accepted(kirin_emulator: EmulatorServer) -> None:
    response = create(
        kirin_emulator,
        prompt="p" * 2500,
        negative_prompt="n" * 2500,
        duration="10",
        aspect_ratio="9:16",
        mode="pro",
        watermark_info={"enabled": True},
        callback_url="https://hooks.example.invalid/kirin?x=1",
        external_task_id="e" * 300,
    )
    assert response.status_code == 200, response.text
    assert response.json()["metadata"]["mode"] == "pro"


# -- downloads -------------------------------------------------------------------------------------
def test_download_is_a_real_mp4(kirin_emulator: EmulatorServer) -> None:
    env = completed_task(kirin_emulator)
    response = requests.get(video_url(env), timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"] == "video/mp4"
    assert int(response.headers["content-length"]) == len(response.content) < 100_000
    with av.open(io.BytesIO(response.content)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (320, 180)
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 48
    head = requests.head(video_url(env), timeout=5)
    assert head.headers["content-length"] == str(len(response.content))
    part = requests.get(video_url(env), headers={"Range": "bytes=10-19"}, timeout=5)
    assert part.status_code == 206
    assert part.content == response.content[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(response.content)}"
    bad = requests.get(video_url(env), headers={"Range": "bytes=999999-"}, timeout=5)
    assert bad.status_code == 416


def test_download_of_unfinished_or_unknown_task_is_404(kirin_emulator: EmulatorServer) -> None:
    env = create(kirin_emulator).json()
    assert_error(
        requests.get(f"{kirin_emulator.url}/v1/files/{env['task_id']}/video.mp4", timeout=5), 404, "not_found"
    )
    assert_error(
        requests.get(f"{kirin_emulator.url}/v1/files/kt_nope/video.mp4", timeout=5), 404, "not_found"
    )


def test_downloads_record_authorization_header(kirin_emulator: EmulatorServer) -> None:
    url = video_url(completed_task(kirin_emulator))
    assert requests.get(url, timeout=5).status_code == 200
    assert requests.get(url, headers=kirin_emulator.headers, timeout=5).status_code == 200
    assert requests.get(url, timeout=5).status_code == 200
    stats = kirin_emulator.stats()
    assert (stats["downloads"], stats["download_auth_headers"]) == (3, 1)
    assert [d["authorization"] for d in kirin_emulator.downloads()] == [False, True, False]


def test_download_base_url_points_at_another_origin(kirin_emulator: EmulatorServer) -> None:
    kirin_emulator.configure(download_base_url="http://localhost:{port}")
    url = video_url(completed_task(kirin_emulator))
    assert url.startswith(f"{kirin_emulator.alt_url}/v1/files/")
    assert not url.startswith(kirin_emulator.url)
    assert requests.get(url, timeout=5).status_code == 200
    assert kirin_emulator.downloads()[-1]["host"] == f"localhost:{kirin_emulator.port}"


def test_blob_streams_exact_bytes(kirin_emulator: EmulatorServer) -> None:
    size = 3 * 1024 * 1024 + 123
    response = requests.get(
        f"{kirin_emulator.url}/v1/files/blob", params={"bytes": size}, stream=True, timeout=10
    )
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["content-length"] == str(size)
    data = b"".join(response.iter_content(256 * 1024))
    assert len(data) == size
    assert data[:4] == b"\x00\x01\x02\x03"
    assert data[-1] == (size - 1) % 256
    assert data[1024 * 1024 + 5] == (1024 * 1024 + 5) % 256
    tail = requests.get(
        f"{kirin_emulator.url}/v1/files/blob?bytes={size}",
        headers={"Range": "bytes=1048570-1048580"},
        timeout=5,
    )
    assert tail.status_code == 206
    assert tail.content == bytes(i % 256 for i in range(1048570, 1048581))
    assert_error(
        requests.get(f"{kirin_emulator.url}/v1/files/blob?bytes=-1", timeout=5), 422, "invalid_request"
    )
    assert requests.get(f"{kirin_emulator.url}/v1/files/blob?bytes=0", timeout=5).content == b""
    assert kirin_emulator.stats()["blob_downloads"] == 4


# -- faults ----------------------------------------------------------------------------------------
def test_http_error_429_with_retry_after_creates_nothing(kirin_emulator: EmulatorServer) -> None:
    kirin_emulator.add_fault(Fault(endpoint="create", kind="http_error", status=429, retry_after="2"))
    refused = create(kirin_emulator, external_task_id="r1")
    assert_error(refused, 429, "rate_limited")
    assert refused.headers["retry-after"] == "2"
    assert kirin_emulator.stats()["creates"] == 0
    assert lookup(kirin_emulator, "r1").status_code == 404
    assert create(kirin_emulator, external_task_id="r1").status_code == 200  # rule used up
    stats = kirin_emulator.stats()
    assert (stats["create_requests"], stats["creates"], stats["faults_applied"]) == (2, 1, {"http_error": 1})


def test_http_error_variants(kirin_emulator: EmulatorServer) -> None:
    env = create(kirin_emulator).json()
    kirin_emulator.add_faults(
        [
            {"endpoint": "get", "kind": "http_error", "status": 502, "body": "<html>Bad Gateway</html>"},
            {
                "endpoint": "get",
                "kind": "http_error",
                "status": 503,
                "retry_after": "Wed, 21 Oct 2015 07:28:00 GMT",
            },
            {"endpoint": "get", "kind": "http_error", "status": 500, "code": "002011098"},
            {"endpoint": "create", "kind": "http_error", "status": 500},
        ]
    )
    html = get(kirin_emulator, env["task_id"])
    assert (html.status_code, html.text) == (502, "<html>Bad Gateway</html>")
    assert html.headers["content-type"].startswith("text/html")
    unavailable = get(kirin_emulator, env["task_id"])
    assert_error(unavailable, 503, "002011098")
    assert unavailable.headers["retry-after"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert_error(get(kirin_emulator, env["task_id"]), 500, "002011098")
    assert_error(create(kirin_emulator), 500, "002011099")  # a create failing inside the service
    assert get(kirin_emulator, env["task_id"]).status_code == 200


def test_times_skip_forever_and_order(kirin_emulator: EmulatorServer) -> None:
    env = create(kirin_emulator).json()
    kirin_emulator.add_fault(endpoint="get", kind="http_error", status=500, times=2, skip=1)
    kirin_emulator.add_fault(endpoint="get", kind="http_error", status=504)
    codes = [get(kirin_emulator, env["task_id"]).status_code for _ in range(5)]
    assert codes == [200, 500, 500, 504, 200]
    kirin_emulator.add_fault(endpoint="any", kind="http_error", status=503, times=-1)
    assert [get(kirin_emulator, env["task_id"]).status_code for _ in range(3)] == [503] * 3
    assert create(kirin_emulator).status_code == 503
    assert kirin_emulator.faults()[0]["remaining"] == -1
    kirin_emulator.clear_faults()
    assert get(kirin_emulator, env["task_id"]).status_code == 200


def test_time_boxed_fault_expires_and_status_checks_are_counted(kirin_emulator: EmulatorServer) -> None:
    env = create(kirin_emulator).json()
    kirin_emulator.add_fault(endpoint="get", kind="http_error", status=503, times=-1, for_seconds=0.6)
    assert [get(kirin_emulator, env["task_id"]).status_code for _ in range(3)] == [503] * 3
    (rule,) = kirin_emulator.faults()
    assert rule["for_seconds"] == 0.6
    assert 0 < rule["seconds_left"] <= 0.6
    time.sleep(0.7)
    assert get(kirin_emulator, env["task_id"]).status_code == 200
    assert kirin_emulator.faults() == []
    # Every status check of the task is counted, refused or answered; an unknown id too.
    assert get(kirin_emulator, "kt_unknown").status_code == 404
    assert kirin_emulator.state.status_checks == {env["task_id"]: 4, "kt_unknown": 1}
    listed = requests.get(
        f"{kirin_emulator.url}/_emulator/tasks", headers=kirin_emulator.headers, timeout=5
    ).json()
    assert listed[0]["status_checks"] == 4
    for bad in (0, -1, True, "30"):
        with pytest.raises(ValueError, match="for_seconds"):
            Fault(kind="http_error", for_seconds=bad)


def test_fault_kinds_only_hit_endpoints_they_fit(kirin_emulator: EmulatorServer) -> None:
    url = video_url(completed_task(kirin_emulator))
    kirin_emulator.add_fault(endpoint="any", kind="unknown_status")
    assert requests.get(url, timeout=5).status_code == 200  # a download cannot carry an envelope
    assert kirin_emulator.faults()[0]["remaining"] == 1
    assert create(kirin_emulator).json()["status"] == "queued_for_gpu"
    assert kirin_emulator.faults() == []
    with pytest.raises(ValueError, match="endpoint"):
        Fault(endpoint="get", kind="fail_task")
    with pytest.raises(ValueError, match="kind"):
        Fault(kind="explode")
    with pytest.raises(ValueError, match="times"):
        Fault(kind="delay", times=0)


def test_reset_before_drops_the_connection_without_creating(kirin_emulator: EmulatorServer) -> None:
    kirin_emulator.add_fault(endpoint="create", kind="reset_before")
    with pytest.raises(requests.ConnectionError) as info:
        create(kirin_emulator, external_task_id="lost-1")
    assert "reset" in str(info.value).lower()
    stats = kirin_emulator.stats()
    assert (stats["create_requests"], stats["creates"], stats["connection_resets"]) == (1, 0, 1)
    assert lookup(kirin_emulator, "lost-1").status_code == 404


def test_reset_after_creates_but_loses_the_response(kirin_emulator: EmulatorServer) -> None:
    kirin_emulator.add_fault(endpoint="create", kind="reset_after")
    with pytest.raises(requests.ConnectionError, match=r"(?i)reset"):
        create(kirin_emulator, external_task_id="lost-2")
    found = lookup(kirin_emulator, "lost-2")
    assert found.status_code == 200
    assert found.json()["external_task_id"] == "lost-2"
    assert_error(create(kirin_emulator, external_task_id="lost-2"), 409, "duplicate_external_task_id")
    stats = kirin_emulator.stats()
    assert (stats["create_requests"], stats["creates"]) == (2, 1)
    assert stats["status_codes"] == {"200": 1, "409": 1}  # the lost 200 was never sent


def test_reset_on_polls_and_downloads(kirin_emulator: EmulatorServer) -> None:
    env = completed_task(kirin_emulator)
    kirin_emulator.add_fault(endpoint="get", kind="reset_before")
    kirin_emulator.add_fault(endpoint="download", kind="reset_after")
    with pytest.raises(requests.ConnectionError):
        get(kirin_emulator, env["task_id"])
    with pytest.raises(requests.ConnectionError):
        requests.get(video_url(env), timeout=5)
    assert get(kirin_emulator, env["task_id"]).status_code == 200
    assert requests.get(video_url(env), timeout=5).status_code == 200


def test_delay_causes_read_timeouts(kirin_emulator: EmulatorServer) -> None:
    env = create(kirin_emulator).json()
    kirin_emulator.add_fault(endpoint="get", kind="delay", seconds=0.6)
    with pytest.raises(requests.ReadTimeout):
        get(kirin_emulator, env["task_id"], timeout=0.15)
    kirin_emulator.add_fault(endpoint="get", kind="delay", seconds=0.25)
    start = time.monotonic()
    assert get(kirin_emulator, env["task_id"]).status_code == 200
    assert time.monotonic() - start >= 0.25


def test_delay_after_processing_creates_first(kirin_emulator: EmulatorServer) -> None:
    kirin_emulator.add_fault(endpoint="create", kind="delay", seconds=0.5, after_processing=True)
    with pytest.raises(requests.ReadTimeout):
        create(kirin_emulator, timeout=0.2, external_task_id="slow-1")
    assert lookup(kirin_emulator, "slow-1").status_code == 200  # already recorded


def test_non_json_body(kirin_emulator: EmulatorServer) -> None:
    kirin_emulator.add_fault(endpoint="create", kind="non_json")
    response = create(kirin_emulator)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    with pytest.raises(ValueError, match="Expecting value"):
        response.json()
    assert kirin_emulator.stats()["creates"] == 0


def test_unknown_status_and_id_alias(kirin_emulator: EmulatorServer) -> None:
    env = create(kirin_emulator).json()
    kirin_emulator.add_fault(endpoint="get", kind="unknown_status", status_value="warming_up")
    kirin_emulator.add_fault(endpoint="lookup", kind="id_alias")
    assert get(kirin_emulator, env["task_id"]).json()["status"] == "warming_up"
    create(kirin_emulator, external_task_id="alias-1")
    aliased = lookup(kirin_emulator, "alias-1").json()
    assert "task_id" not in aliased
    assert aliased["id"].startswith("kt_")
    assert isinstance(aliased["x_new_field"], dict)
    assert aliased["status"] == "pending"


def test_completed_without_video(kirin_emulator: EmulatorServer) -> None:
    env = create(kirin_emulator).json()
    kirin_emulator.add_fault(endpoint="get", kind="completed_no_video")
    odd = get(kirin_emulator, env["task_id"]).json()
    assert (odd["status"], odd["output"], odd["usage"]["cost"]) == ("completed", [], "0.35")
    assert get(kirin_emulator, env["task_id"]).json()["status"] == "pending"


def test_huge_body(kirin_emulator: EmulatorServer) -> None:
    env = create(kirin_emulator).json()
    kirin_emulator.add_fault(endpoint="get", kind="huge_body")
    kirin_emulator.add_fault(endpoint="get", kind="huge_body", bytes=100_000)
    response = get(kirin_emulator, env["task_id"])
    assert response.status_code == 200
    assert len(response.content) == int(response.headers["content-length"]) == 20 * 1024 * 1024
    assert response.json()["task_id"] == env["task_id"]
    assert len(get(kirin_emulator, env["task_id"]).content) == 100_000


def test_fail_task_rule(kirin_emulator: EmulatorServer) -> None:
    kirin_emulator.set_timings(0, 0.2)
    kirin_emulator.add_fault(endpoint="create", kind="fail_task", code="002011097")
    doomed = create(kirin_emulator).json()
    healthy = create(kirin_emulator).json()
    assert doomed["status"] == "processing"
    time.sleep(0.25)
    failed = get(kirin_emulator, doomed["task_id"]).json()
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "002011097", "error_message": "HTTP error response"}
    assert "output" not in failed
    assert "usage" not in failed
    assert get(kirin_emulator, healthy["task_id"]).json()["status"] == "completed"


def test_fail_task_marks_the_next_created_task_only(kirin_emulator: EmulatorServer) -> None:
    kirin_emulator.set_timings(0, 0)  # tasks are finished as soon as they exist
    create(kirin_emulator, external_task_id="taken")
    kirin_emulator.add_fault(endpoint="create", kind="fail_task", code="002011099", skip=1)
    kirin_emulator.add_fault(endpoint="create", kind="http_error", status=503)
    assert create(kirin_emulator).status_code == 503  # a request rule; fail_task waits for a task
    assert create(kirin_emulator, mode="bad").status_code == 422  # no task: rule not used
    assert create(kirin_emulator, external_task_id="taken").status_code == 409  # no task either
    assert create(kirin_emulator).json()["status"] == "completed"  # skip=1 spares this one
    doomed = create(kirin_emulator).json()
    assert doomed["error"] == {"code": "002011099", "error_message": "Task creation error"}
    assert kirin_emulator.faults() == []
    assert create(kirin_emulator).json()["status"] == "completed"
    kirin_emulator.add_fault(endpoint="any", kind="fail_task")
    failed = create(kirin_emulator).json()
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "002011095", "error_message": "Internal generation error"}


@pytest.mark.parametrize("order", [("cat", "fox", "owl"), ("fox", "owl", "cat"), ("owl", "cat", "fox")])
def test_fail_task_can_target_a_prompt_whatever_the_order_of_creates(
    kirin_emulator: EmulatorServer, order: tuple[str, ...]
) -> None:
    kirin_emulator.set_timings(0, 0)
    kirin_emulator.add_fault(kind="fail_task", endpoint="create", prompt_pattern=r"\bfox\b", code="002011096")
    results = {word: create(kirin_emulator, prompt=f"a {word} in the snow").json() for word in order}
    assert results["fox"]["error"] == {"code": "002011096", "error_message": "Result parsing error"}
    assert results["cat"]["status"] == results["owl"]["status"] == "completed"
    assert kirin_emulator.faults() == []  # times=1: the fox's create used it up


def test_prompt_pattern_is_checked_and_only_for_fail_task(kirin_emulator: EmulatorServer) -> None:
    with pytest.raises(ValueError, match="prompt_pattern: only for kind fail_task"):
        Fault(kind="http_error", endpoint="create", prompt_pattern="fox")
    with pytest.raises(ValueError, match="prompt_pattern: not a regular expression"):
        Fault(kind="fail_task", prompt_pattern="(")
    ctl = f"{kirin_emulator.url}/_emulator/faults"
    added = requests.post(
        ctl, json={"kind": "fail_task", "prompt_pattern": "^dawn"}, headers=kirin_emulator.headers, timeout=5
    )
    assert added.json()["added"][0]["prompt_pattern"] == "^dawn"
    kirin_emulator.set_timings(0, 0)
    assert create(kirin_emulator, prompt="no match").json()["status"] == "completed"
    assert create(kirin_emulator, prompt="dawn over a lake").json()["status"] == "failed"


def test_truncated_download(kirin_emulator: EmulatorServer) -> None:
    url = video_url(completed_task(kirin_emulator))
    full = len(requests.get(url, timeout=5).content)
    kirin_emulator.add_fault(endpoint="download", kind="truncated_download", bytes=1000)
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        requests.get(url, timeout=5)
    kirin_emulator.add_fault(endpoint="download", kind="truncated_download")
    response = requests.get(url, stream=True, timeout=5)
    assert response.headers["content-length"] == str(full)
    got = bytearray()

    def drain() -> None:
        for chunk in response.iter_content(1):
            got.extend(chunk)

    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        drain()
    assert len(got) == full // 2
    assert requests.get(url, timeout=5).status_code == 200


@pytest.mark.parametrize(("http", "loop"), [("httptools", "asyncio"), ("h11", "uvloop"), ("auto", "auto")])
def test_connection_faults_on_other_server_stacks(
    kirin_emulator_factory: Callable[..., EmulatorServer], http: str, loop: str
) -> None:
    pytest.importorskip(loop if loop != "auto" else "asyncio")
    emu = kirin_emulator_factory(
        EmulatorConfig(pending_seconds=0, processing_seconds=0), http=http, loop=loop
    )
    emu.add_fault(endpoint="create", kind="reset_after")
    with pytest.raises(requests.ConnectionError):
        create(emu, external_task_id="x")
    env = lookup(emu, "x").json()
    emu.add_fault(endpoint="download", kind="truncated_download", bytes=10)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(video_url(env), timeout=5)
    assert len(requests.get(video_url(env), timeout=5).content) > 10


# -- callbacks -------------------------------------------------------------------------------------
def test_callbacks_follow_each_status_change(
    kirin_emulator: EmulatorServer, receiver: CallbackReceiver
) -> None:
    env = create(kirin_emulator, callback_url=receiver.url).json()
    bodies = receiver.wait_for(3)
    assert [b["status"] for b in bodies] == ["pending", "processing", "completed"]
    assert {b["task_id"] for b in bodies} == {env["task_id"]}
    assert bodies[-1]["output"][0]["content"][0]["type"] == "video"
    time.sleep(0.05)
    assert kirin_emulator.stats()["callbacks_sent"] == 3
    assert [c["ok"] for c in kirin_emulator.callbacks()] == [True, True, True]


def test_callbacks_for_forced_and_failed_tasks(
    kirin_emulator: EmulatorServer, receiver: CallbackReceiver
) -> None:
    kirin_emulator.set_timings(10, 10)
    env = create(kirin_emulator, callback_url=receiver.url).json()
    assert [b["status"] for b in receiver.wait_for(1)] == ["pending"]
    kirin_emulator.fail_task(env["task_id"], code="002011096")
    bodies = receiver.wait_for(3)
    assert [b["status"] for b in bodies] == ["pending", "processing", "failed"]
    assert bodies[-1]["error"]["code"] == "002011096"


def test_unreachable_callback_never_hurts_the_api(kirin_emulator: EmulatorServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    kirin_emulator.set_timings(0, 0)
    env = create(kirin_emulator, callback_url=f"http://127.0.0.1:{dead_port}/hook").json()
    deadline = time.monotonic() + 3
    while kirin_emulator.stats()["callbacks_failed"] < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = kirin_emulator.stats()
    assert (stats["callbacks_failed"], stats["callbacks_sent"]) == (3, 0)
    assert get(kirin_emulator, env["task_id"]).json()["status"] == "completed"


# -- control plane ---------------------------------------------------------------------------------
def test_control_plane_over_http(kirin_emulator: EmulatorServer) -> None:
    ctl = f"{kirin_emulator.url}/_emulator"
    http = requests.Session()  # the control plane needs the key, like the API
    http.headers.update(kirin_emulator.headers)
    assert http.get(f"{ctl}/health", timeout=5).json() == {"ok": True}
    rules: list[dict[str, Any]] = [
        {"endpoint": "get", "kind": "http_error", "status": 500},
        {"kind": "delay", "seconds": 0.01},
    ]
    added = http.post(f"{ctl}/faults", json=rules, timeout=5)
    assert added.status_code == 200
    assert [r["kind"] for r in http.get(f"{ctl}/faults", timeout=5).json()] == ["http_error", "delay"]
    single = http.post(f"{ctl}/faults", json={"endpoint": "create", "kind": "fail_task"}, timeout=5)
    assert single.json()["added"][0]["kind"] == "fail_task"
    assert_error(http.post(f"{ctl}/faults", json={"kind": "nope"}, timeout=5), 422, "invalid_request", "kind")
    assert_error(
        http.post(f"{ctl}/faults", json={"kind": "delay", "when": 1}, timeout=5),
        422,
        "invalid_request",
        "when",
    )
    assert http.delete(f"{ctl}/faults", timeout=5).json() == {"active": []}

    patched = http.patch(f"{ctl}/config", json={"pending_seconds": 5, "processing_seconds": 5}, timeout=5)
    assert patched.json()["pending_seconds"] == 5.0
    assert_error(http.patch(f"{ctl}/config", json={"pending_seconds": -1}, timeout=5), 422, "invalid_request")
    assert_error(http.patch(f"{ctl}/config", json={"colour": "red"}, timeout=5), 422, "invalid_request")
    env = create(kirin_emulator).json()
    assert get(kirin_emulator, env["task_id"]).json()["status"] == "pending"
    done = http.post(f"{ctl}/tasks/{env['task_id']}/complete", timeout=5).json()
    assert done["status"] == "completed"
    assert get(kirin_emulator, env["task_id"]).json()["status"] == "completed"
    other = create(kirin_emulator).json()
    failed = http.post(f"{ctl}/tasks/{other['task_id']}/fail?code=002011098", timeout=5).json()
    assert failed["error"] == {"code": "002011098", "error_message": "Status check error"}
    assert_error(http.post(f"{ctl}/tasks/kt_nope/complete", timeout=5), 404, "not_found")
    listing = http.get(f"{ctl}/tasks", timeout=5).json()
    assert sorted(t["status"] for t in listing) == ["completed", "failed"]
    stats = http.get(f"{ctl}/stats", timeout=5).json()
    assert stats["tasks"] == 2
    assert stats["tasks_by_status"] == {"completed": 1, "failed": 1}
    assert http.post(f"{ctl}/reset", timeout=5).json() == {"reset": True}
    after = http.get(f"{ctl}/stats", timeout=5).json()
    assert (after["tasks"], after["create_requests"], after["gets"]) == (0, 0, 0)
    assert get(kirin_emulator, env["task_id"]).status_code == 404


def test_fixture_isolation_part_1(kirin_emulator: EmulatorServer) -> None:
    kirin_emulator.add_fault(endpoint="any", kind="http_error", times=-1)
    kirin_emulator.configure(api_key="changed-key", pending_seconds=9)
    create(kirin_emulator)


def test_fixture_isolation_part_2(kirin_emulator: EmulatorServer) -> None:
    assert kirin_emulator.faults() == []
    assert kirin_emulator.api_key == DEFAULT_API_KEY
    assert kirin_emulator.state.config.pending_seconds == 0.2
    assert kirin_emulator.stats()["create_requests"] == 0
    assert create(kirin_emulator).status_code == 200


# -- configuration, servers, CLI -------------------------------------------------------------------
def test_path_prefix(kirin_emulator_factory: Callable[..., EmulatorServer]) -> None:
    emu = kirin_emulator_factory(
        EmulatorConfig(path_prefix="/gateway/", pending_seconds=0, processing_seconds=0)
    )
    assert emu.api_url == f"{emu.url}/gateway"
    env = create(emu).json()
    assert env["status"] == "completed"
    assert video_url(env) == f"{emu.url}/gateway/v1/files/{env['task_id']}/video.mp4"
    assert requests.get(video_url(env), timeout=5).status_code == 200
    bare = requests.post(f"{emu.url}{CREATE}", json=BODY, headers=emu.headers, timeout=5)
    assert_error(bare, 404, "not_found")
    assert requests.get(f"{emu.url}/_emulator/stats", headers=emu.headers, timeout=5).json()["creates"] == 1
    extra = json.loads(emu.airflow_conn_json())["extra"]
    assert extra == {
        "create_path": "/gateway/v1/videos/generations",
        "task_path": "/gateway/v1/tasks/{task_id}",
        "lookup_path": "/gateway/v1/tasks",
    }


def test_create_status_code_and_custom_key(kirin_emulator_factory: Callable[..., EmulatorServer]) -> None:
    emu = kirin_emulator_factory(EmulatorConfig(api_key="team-key", create_status_code=202))
    assert emu.headers == {"Authorization": "Bearer team-key"}
    assert create(emu).status_code == 202


def test_servers_are_independent_and_stop_cleanly() -> None:
    with EmulatorServer() as one, EmulatorServer() as two:
        assert one.port != two.port
        create(one)
        assert (one.stats()["creates"], two.stats()["creates"]) == (1, 0)
        port = one.port
    assert not one.running
    assert not two.running
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/_emulator/health", timeout=2)


def test_many_concurrent_requests(kirin_emulator: EmulatorServer) -> None:
    env = create(kirin_emulator).json()

    def poll(_: int) -> int:
        return sum(get(kirin_emulator, env["task_id"]).status_code == 200 for _ in range(10))

    with ThreadPoolExecutor(32) as pool:
        assert sum(pool.map(poll, range(32))) == 320
    assert kirin_emulator.stats()["gets"] == 320


def test_airflow_conn_json_and_env(kirin_conn_env: EmulatorServer) -> None:
    conn = json.loads(os.environ["AIRFLOW_CONN_KIRIN_DEFAULT"])
    assert conn == {"conn_type": "kirin", "host": kirin_conn_env.url, "password": DEFAULT_API_KEY}
    sdk = pytest.importorskip("airflow.sdk")
    parsed = sdk.Connection.from_json(os.environ["AIRFLOW_CONN_KIRIN_DEFAULT"], conn_id="kirin_default")
    assert (parsed.host, parsed.password, parsed.conn_type) == (kirin_conn_env.url, DEFAULT_API_KEY, "kirin")


def test_cli_runs_applies_faults_and_stops_on_sigterm() -> None:
    rule = json.dumps({"endpoint": "create", "kind": "http_error", "status": 418})
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_kirin.emulator", "--port", "0", "--http", "h11",
         "--processing-seconds", "0.1", "--fault", rule, "--print-conn"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        assert match, line
        url = match.group(1)
        conn_line = proc.stdout.readline()
        assert conn_line.startswith("AIRFLOW_CONN_KIRIN_DEFAULT=")
        headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
        assert requests.post(f"{url}{CREATE}", json=BODY, headers=headers, timeout=5).status_code == 418
        assert requests.post(f"{url}{CREATE}", json=BODY, headers=headers, timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_rejects_a_bad_fault() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "airflow_provider_kirin.emulator", "--fault", '{"kind": "explode"}'],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 2
    assert "kind" in out.stderr


def test_plugin_fixtures_and_marker_in_a_fresh_session(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import os, json, pytest, requests

            @pytest.mark.kirin_emulator(pending_seconds=0, processing_seconds=0, api_key="marker-key")
            def test_marker(kirin_emulator):
                assert kirin_emulator.api_key == "marker-key"
                body = {"model": "kirin_v2_5_turbo_t2v", "prompt": "x"}
                r = requests.post(kirin_emulator.url + "/v1/videos/generations", json=body,
                                  headers=kirin_emulator.headers, timeout=5)
                assert r.json()["status"] == "completed"

            def test_defaults_restored(kirin_conn_env):
                assert kirin_conn_env.api_key == "kirin-emulator-key"
                assert kirin_conn_env.stats()["create_requests"] == 0
                assert json.loads(os.environ["AIRFLOW_CONN_KIRIN_DEFAULT"])["host"] == kirin_conn_env.url
            """
        )
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        # Installed plugins off: the fixtures must come from the opt-in below and nothing else.
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    }
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-W", "error::pytest.PytestUnknownMarkWarning",
         "-p", "airflow_provider_kirin.emulator.pytest_plugin", str(tmp_path / "test_user.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed" in out.stdout


def test_sample_video_script_is_deterministic(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_sample_video", REPO / "scripts" / "make_sample_video.py"
    )
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    first, second = tmp_path / "a.mp4", tmp_path / "b.mp4"
    module.render(first, seconds=0.5)
    module.render(second, seconds=0.5)
    assert first.read_bytes() == second.read_bytes()
    with av.open(str(first)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 12
    committed = REPO / "airflow_provider_kirin" / "emulator" / "media" / "sample.mp4"
    assert 0 < committed.stat().st_size < 100_000


@pytest.mark.parametrize("ratio", ["16:9", "9:16", "1:1"])
def test_each_sample_clip_has_the_frame_size_the_envelope_reports(tmp_path: Path, ratio: str) -> None:
    """``size``/``frame_size`` say what the served file really is: one clip per aspect ratio."""
    from airflow_provider_kirin.emulator.app import load_sample_video
    from airflow_provider_kirin.emulator.config import VIDEO_SIZES

    data = load_sample_video(ratio)
    assert 0 < len(data) < 100_000
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert f"{stream.width}x{stream.height}" == VIDEO_SIZES[ratio]
