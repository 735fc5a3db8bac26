"""Where videos may come from (issue 18, row "an http:// video URL under an https:// API; a video host
on loopback or a private address fetched when the API host is public").

The file host is a real HTTP server on loopback (``test_hostile_server.py``'s ``hostile``) that
would serve the "internal" answer; the connection names a public API host that is never contacted
(the refusal comes before any request), so each test shows the worker did not fetch, let alone
store, what the loopback host had.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_provider_kirin.exceptions import KirinError, KirinStorageError, KirinValidationError
from airflow_provider_kirin.hooks.kirin import KirinHook
from airflow_provider_kirin.operators.download import KirinDownloadVideoOperator
from tests.reliability.test_hostile_server import (
    KEY,
    VIDEO,
    Exchange,
    HostileServer,
    all_files,
    api_and_files,
    with_video,
)


def files_only(hostile: Callable[..., HostileServer], monkeypatch: pytest.MonkeyPatch, api: str,
               **extra: object) -> HostileServer:  # fmt: skip
    """A loopback host serving ``/internal`` and ``/files/...`` as a video, while the ``kirin_default``
    connection names ``api`` as the API (with ``extra``)."""

    def handle(exchange: Exchange) -> None:
        exchange.send(200, VIDEO, {"Content-Type": "video/mp4"})

    server = hostile(handle)
    conn = {"conn_type": "kirin", "host": api, "password": KEY, "extra": {"max_retries": 0, **extra}}
    monkeypatch.setenv("AIRFLOW_CONN_KIRIN_DEFAULT", json.dumps(conn))
    return server


def test_an_http_video_under_an_https_api_is_refused_before_any_request(
    hostile: Callable[..., HostileServer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = files_only(hostile, monkeypatch, "https://api.example.com", allowed_video_hosts="")
    with pytest.raises(KirinValidationError, match=r"downgrade from the API's https:// to http://") as caught:
        KirinHook().download_video(
            f"http://localhost:{server.server_address[1]}/files/v.mp4", tmp_path / "v.mp4"
        )
    assert "allowed:" in str(caught.value)
    assert server.seen == []
    assert all_files(tmp_path) == []


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "2130706433", "0x7f.1", "127.1"]
)
def test_a_loopback_video_host_under_a_public_api_is_refused(
    hostile: Callable[..., HostileServer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, host: str
) -> None:
    server = files_only(hostile, monkeypatch, "http://api.example.com")
    url = f"http://{host}:{server.server_address[1]}/internal"
    with pytest.raises(
        KirinValidationError, match=r"loopback (address|name), while the API \(api\.example\.com\)"
    ):
        KirinHook().download_video(url, tmp_path / "v.mp4")
    assert server.seen == []  # the worker never asked the internal host
    assert all_files(tmp_path) == []


def test_a_host_listed_in_allowed_video_hosts_is_fetched(
    hostile: Callable[..., HostileServer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = files_only(
        hostile, monkeypatch, "https://api.example.com", allowed_video_hosts=" cdn.example.com, 127.0.0.1 "
    )
    stored = KirinHook().download_video(
        f"http://127.0.0.1:{server.server_address[1]}/files/v.mp4", tmp_path / "v.mp4"
    )
    assert stored.path.read_bytes() == VIDEO
    assert [path for _, path, _ in server.seen] == ["/files/v.mp4"]


def test_a_redirect_to_an_internal_host_is_refused_before_it_is_followed(
    hostile: Callable[..., HostileServer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def handle(exchange: Exchange) -> None:
        if exchange.path == "/files/v.mp4":
            port = exchange.server.server_address[1]
            exchange.send(302, b"", {"Location": f"http://127.0.0.1:{port}/internal"})
        else:
            exchange.send(200, VIDEO, {"Content-Type": "video/mp4"})

    server = hostile(handle)
    conn = {"conn_type": "kirin", "host": "http://api.example.com", "password": KEY,
            "extra": {"max_retries": 0, "allowed_video_hosts": "localhost"}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_KIRIN_DEFAULT", json.dumps(conn))
    with pytest.raises(KirinStorageError, match=r"redirected to 'http://127\.0\.0\.1:\d+/internal'"):
        KirinHook().download_video(
            f"http://localhost:{server.server_address[1]}/files/v.mp4", tmp_path / "v.mp4"
        )
    assert [path for _, path, _ in server.seen] == ["/files/v.mp4"]  # /internal never asked for
    assert all_files(tmp_path) == []


def test_the_api_key_never_follows_a_redirect_to_another_origin(
    hostile: Callable[..., HostileServer], tmp_path: Path
) -> None:
    """The API on loopback (the emulator's case): a redirect from the API's origin to another origin
    is followed, without the key."""

    def handle(exchange: Exchange) -> None:
        port = exchange.server.server_address[1]
        if exchange.path.startswith("/v1/"):
            exchange.json(with_video(f"http://127.0.0.1:{port}/files/v.mp4"))
        elif exchange.path == "/files/v.mp4":
            exchange.send(307, b"", {"Location": f"http://localhost:{port}/files/elsewhere.mp4"})
        else:
            exchange.send(200, VIDEO, {"Content-Type": "video/mp4"})

    server = hostile(handle)
    KirinHook().download_video(f"{server.url}/files/v.mp4", tmp_path / "v.mp4")
    auth = {path: headers.get("Authorization") for _, path, headers in server.seen}
    assert auth == {"/files/v.mp4": f"Bearer {KEY}", "/files/elsewhere.mp4": None}
    assert (tmp_path / "v.mp4").read_bytes() == VIDEO


def test_the_download_operator_refuses_an_internal_video_of_a_public_api(
    hostile: Callable[..., HostileServer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The operator's path: the task read from an API with a public name (served from loopback by
    rewriting the name in a transport adapter: no DNS, no network) names a loopback video URL."""
    files = files_only(hostile, monkeypatch, "http://api.example.com")
    api = hostile(api_and_files(lambda e: with_video(f"http://127.0.0.1:{files.server_address[1]}/internal")))
    conn = {
        "conn_type": "kirin",
        "host": "http://api.example.com",
        "password": KEY,
        "extra": {"max_retries": 0},
    }
    monkeypatch.setenv("AIRFLOW_CONN_KIRIN_DEFAULT", json.dumps(conn))
    operator = KirinDownloadVideoOperator(task_id="keep", kirin_task_id="kt_1", destination=str(tmp_path))
    _route(operator.hook, "http://api.example.com", api.url)
    with pytest.raises(KirinError, match="loopback address"):
        operator.execute(context={})  # type: ignore[arg-type]
    assert files.seen == []
    assert all_files(tmp_path) == []


def _route(hook: KirinHook, public: str, loopback: str) -> None:
    """Send the hook's API requests for ``public`` to ``loopback`` (no DNS, no network)."""
    from requests.adapters import HTTPAdapter

    session = hook.session

    class Rewrite(HTTPAdapter):
        def send(self, request, **kwargs):  # type: ignore[no-untyped-def, override]
            request.url = request.url.replace(public, loopback, 1)
            return super().send(request, **kwargs)

    session.mount(public, Rewrite())


@pytest.mark.parametrize(
    ("api", "url", "refused"),
    [
        ("https://api.example.com", "https://cdn.example.com/v.mp4", None),
        ("https://api.example.com", "http://cdn.example.com/v.mp4", "downgrade"),
        ("http://api.example.com", "http://cdn.example.com/v.mp4", None),
        ("https://api.example.com", "https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://api.example.com", "https://[fe80::1]/v.mp4", "link-local"),
        ("https://api.example.com", "https://10.1.2.3/v.mp4", "private"),
        ("https://api.example.com", "https://192.168.0.10/v.mp4", "private"),
        ("https://api.example.com", "https://100.64.0.1/v.mp4", "private"),
        ("https://api.example.com", "https://[fd00::1]/v.mp4", "private"),
        ("https://api.example.com", "https://[::1]/v.mp4", "loopback"),
        ("https://api.example.com", "https://0.0.0.0/v.mp4", "unspecified"),
        ("https://api.example.com", "https://files.localhost/v.mp4", "loopback name"),
        ("https://api.example.com", "https://LOCALHOST./v.mp4", "loopback name"),
        ("https://api.example.com", "https://8.8.8.8/v.mp4", None),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765/v1/files/kt_1/video.mp4", None),  # the emulator
        ("https://10.0.0.5", "https://10.0.0.6/v.mp4", None),  # a private API may name private hosts
        ("https://api.example.com", "javascript:alert(1)", "not an http(s) URL"),
    ],
)
def test_where_a_video_may_come_from(api: str, url: str, refused: str | None) -> None:
    from airflow_provider_kirin.io.storage import VideoSources

    reason = VideoSources.of(api).refusal(url)
    assert (reason is None) == (refused is None), reason
    if refused is not None:
        assert refused in str(reason)
