"""The bundled emulator is safe to leave running (issue 18, row "the emulator's control plane and
defaults").

Every request goes to loopback: the emulator in this process (``EmulatorServer``) or its command
line in a subprocess bound to ``0.0.0.0`` and reached through ``127.0.0.1``. Each test asserts the
refusal and that the state it would have changed is unchanged.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import pytest
import requests

from airflow_provider_kirin.emulator import DEFAULT_API_KEY, EmulatorConfig, EmulatorServer

REPO = Path(__file__).resolve().parents[2]
CREATE = "/v1/videos/generations"
BODY = {"model": "kirin_v2_5_turbo_t2v", "prompt": "a fox"}


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(pending_seconds=0, processing_seconds=0.05)) as server:
        yield server


def cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_kirin.emulator", "--port", "0", "--http", "h11", *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.terminate()
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
    return out, err


def test_beyond_loopback_a_key_is_generated_the_bound_address_printed_with_a_warning() -> None:
    proc = cli("--host", "0.0.0.0")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded: the process prints it once bound, or exits
        match = re.fullmatch(
            r"Kirin emulator listening on http://0\.0\.0\.0:(\d+) \(api key: (\S+)\)\n", line
        )
        assert match, line
        port, key = match.groups()
        assert key != DEFAULT_API_KEY
        assert len(key) >= 30
        local = f"http://127.0.0.1:{port}"
        well_known = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
        assert requests.post(f"{local}{CREATE}", json=BODY, headers=well_known, timeout=5).status_code == 401
        printed = {"Authorization": f"Bearer {key}"}
        assert requests.post(f"{local}{CREATE}", json=BODY, headers=printed, timeout=5).status_code == 200
    finally:
        _, err = stop(proc)
    assert "warning: bound to 0.0.0.0, beyond loopback" in err
    assert f"http://127.0.0.1:{port}" in err  # where this machine reaches it


def test_beyond_loopback_the_well_known_key_is_refused_outright() -> None:
    proc = cli("--host", "0.0.0.0", "--api-key", DEFAULT_API_KEY)
    try:
        assert proc.wait(timeout=30) == 2
    finally:
        out, err = stop(proc)
    assert "is well known" in err
    assert "listening" not in out


def test_on_loopback_the_printed_address_is_the_bound_one_without_a_warning() -> None:
    proc = cli()
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert re.fullmatch(
            rf"Kirin emulator listening on http://127\.0\.0\.1:\d+ \(api key: {DEFAULT_API_KEY}\)\n", line
        )
    finally:
        _, err = stop(proc)
    assert "warning" not in err


def test_the_control_plane_needs_the_key_and_never_shows_it(emu: EmulatorServer) -> None:
    ctl = f"{emu.url}/_emulator"
    for method, path in [("GET", "config"), ("GET", "stats"), ("GET", "tasks"), ("POST", "reset"),
                         ("DELETE", "faults"), ("GET", "callbacks")]:  # fmt: skip
        answer = requests.request(method, f"{ctl}/{path}", timeout=5)
        assert answer.status_code == 401, (method, path)
        assert answer.json()["error"]["code"] == "unauthorized"
        wrong = requests.request(method, f"{ctl}/{path}", headers={"Authorization": "Bearer nope"}, timeout=5)
        assert wrong.status_code == 401
    patched = requests.patch(f"{ctl}/config", json={"api_key": "attacker"}, timeout=5)
    assert patched.status_code == 401
    assert emu.api_key == DEFAULT_API_KEY  # unchanged
    shown = requests.get(f"{ctl}/config", headers=emu.headers, timeout=5)
    assert shown.status_code == 200
    assert shown.json()["api_key"] == "***"
    assert DEFAULT_API_KEY not in shown.text
    assert requests.get(f"{ctl}/health", timeout=5).json() == {"ok": True}  # tells nothing, changes nothing


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Content-Type": "text/plain", "Origin": "http://evil.example"}, 403),
        ({"Content-Type": "application/json", "Origin": "http://evil.example"}, 403),
        ({"Content-Type": "text/plain", "Sec-Fetch-Site": "cross-site"}, 403),
        ({"Content-Type": "text/plain"}, 415),  # even with the key: a body must be JSON
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ],
)
def test_cross_site_requests_to_the_control_plane_are_refused(
    emu: EmulatorServer, headers: dict[str, str], status: int
) -> None:
    task = requests.post(f"{emu.url}{CREATE}", json=BODY, headers=emu.headers, timeout=5).json()
    rule = '{"endpoint": "any", "kind": "http_error", "status": 500, "times": -1}'
    answer = requests.post(
        f"{emu.url}/_emulator/faults", data=rule, headers={**emu.headers, **headers}, timeout=5
    )
    assert answer.status_code == status
    assert emu.faults() == []  # nothing was added
    reset = requests.post(
        f"{emu.url}/_emulator/reset", data="x", headers={**emu.headers, **headers}, timeout=5
    )
    assert reset.status_code == status
    assert emu.task(task["task_id"]) is not None  # nothing was reset


def test_the_servers_own_origin_may_use_the_control_plane(emu: EmulatorServer) -> None:
    same = {**emu.headers, "Origin": emu.url, "Sec-Fetch-Site": "same-origin"}
    assert requests.post(f"{emu.url}/_emulator/reset", headers=same, timeout=5).status_code == 200


@pytest.mark.parametrize("path", ["/_emulator/stats", "/_emulator/health", "/v1/tasks/kt_1", CREATE])
def test_a_foreign_host_header_is_refused(emu: EmulatorServer, path: str) -> None:
    method = "POST" if path == CREATE else "GET"
    foreign = {**emu.headers, "Host": f"evil.example:{emu.port}"}
    answer = requests.request(method, f"{emu.url}{path}", json=BODY, headers=foreign, timeout=5)
    assert answer.status_code == 421
    assert answer.json()["error"]["code"] == "misdirected_request"
    assert emu.stats()["creates"] == 0
    for host in (f"localhost:{emu.port}", f"127.0.0.1:{emu.port}", f"app.localhost:{emu.port}"):
        ok = requests.request(
            method, f"{emu.url}{path}", json=BODY, headers={**emu.headers, "Host": host}, timeout=5
        )
        assert ok.status_code != 421, host


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        receiver = self

        class Handle(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handle)
        Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


def wait_for_callbacks(emu: EmulatorServer, count: int, seconds: float = 5) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    while len(emu.callbacks()) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return emu.callbacks()


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[fe80::1]/admin",
        "http://10.0.0.1/admin",
        "http://metadata.google.internal/computeMetadata/v1/",
    ],
)
def test_callbacks_go_only_to_loopback_by_default(emu: EmulatorServer, url: str) -> None:
    receiver = Receiver()
    try:
        for callback in (url, f"http://127.0.0.1:{receiver.server_address[1]}/hook"):
            body = {**BODY, "callback_url": callback}
            assert (
                requests.post(f"{emu.url}{CREATE}", json=body, headers=emu.headers, timeout=5).status_code
                == 200
            )
        log = wait_for_callbacks(emu, 6)
    finally:
        receiver.shutdown()
        receiver.server_close()
    refused = [entry for entry in log if entry["url"] == url]
    assert len(refused) == 3
    assert all(entry["ok"] is False and "not loopback" in entry["refused"] for entry in refused)
    assert not [entry for entry in refused if {"http_status", "error"} & set(entry)]  # never attempted
    assert len(receiver.bodies) == 3  # the loopback receiver got every status
    assert emu.stats()["callbacks_refused"] == 3


def test_a_callback_cannot_drive_the_control_plane(emu: EmulatorServer) -> None:
    """A loopback callback to the emulator's own control plane is sent, and refused there."""
    kept = requests.post(f"{emu.url}{CREATE}", json=BODY, headers=emu.headers, timeout=5).json()
    body = {**BODY, "callback_url": f"{emu.url}/_emulator/reset"}
    requests.post(f"{emu.url}{CREATE}", json=body, headers=emu.headers, timeout=5)
    log = wait_for_callbacks(emu, 3)
    assert [entry.get("http_status") for entry in log] == [401, 401, 401]
    assert emu.task(kept["task_id"]) is not None


def test_callback_hosts_widen_the_allow_list() -> None:
    from airflow_provider_kirin.emulator.callbacks import CallbackSender
    from airflow_provider_kirin.emulator.state import EmulatorState

    def refusal(config: EmulatorConfig, url: str) -> str | None:
        return CallbackSender(EmulatorState(config))._refusal(url)

    assert refusal(EmulatorConfig(), "http://hooks.example.com/x") is not None
    assert (
        refusal(EmulatorConfig(callback_hosts=("hooks.example.com",)), "http://HOOKS.example.com/x") is None
    )
    assert refusal(EmulatorConfig(callback_hosts=("*",)), "http://anything.example/x") is None
    assert refusal(EmulatorConfig(), "http://localhost:9/x") is None
