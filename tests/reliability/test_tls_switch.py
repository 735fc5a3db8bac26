"""The connection form's TLS switch says what it does (issue 18, row "the Verify TLS certificates switch
is drawn off although the default is on").

The form draws ``skip_tls_verification`` (off = certificates checked, the safe default) and no
longer ``verify_ssl``. Airflow 3.3.2's form saves a switch as a JSON boolean (``false`` after
on-and-off, ``true`` when left on; ``scripts/check_tls_switch.py`` checks that in a real browser),
other lines and hand-written connections may save strings. Each value must mean what the form
showed, and the hooks must act on it: checked here against a real TLS server on loopback with a
self-signed certificate.
"""

from __future__ import annotations

import datetime
import json
import logging
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Connection

from airflow_provider_kirin.core.config import KirinConnectionConfig, connection_form_fields
from airflow_provider_kirin.exceptions import KirinUnreachableError
from airflow_provider_kirin.hooks.kirin import KirinAsyncHook, KirinHook

ENVELOPE = {"task_id": "kt_1", "status": "processing", "model": "kirin_v2_5_turbo_t2v"}


def config_of(extra: dict[str, Any]) -> KirinConnectionConfig:
    conn = Connection(conn_id="k", conn_type="kirin", host="https://api.example.com", password="k-test")
    return KirinConnectionConfig.from_connection(conn, extra)


def test_the_form_draws_a_skip_switch_whose_empty_position_is_safe() -> None:
    fields = connection_form_fields()
    assert "verify_ssl" not in fields  # the switch that was drawn off while meaning on
    switch = fields["skip_tls_verification"]
    assert switch["schema"]["type"] == ["boolean", "null"]
    assert "default" not in switch["schema"]
    assert switch["description"].endswith("Empty: the default, off.")
    assert config_of({}).verify_ssl is True  # nothing saved: verified


@pytest.mark.parametrize(
    ("extra", "verified"),
    [
        ({"skip_tls_verification": False}, True),  # 3.3.2: switched on and off again
        ({"skip_tls_verification": "False"}, True),
        ({"skip_tls_verification": "false"}, True),
        ({"skip_tls_verification": None}, True),
        ({"skip_tls_verification": ""}, True),
        ({"skip_tls_verification": True}, False),  # 3.3.2: left on
        ({"skip_tls_verification": "True"}, False),
        ({"skip_tls_verification": "true"}, False),
        # The legacy extra keeps meaning what its own switch showed ("Verify TLS certificates": off)...
        ({"verify_ssl": False}, False),
        ({"verify_ssl": "False"}, False),
        ({"verify_ssl": "false"}, False),
        ({"verify_ssl": True}, True),
        # ...unless the new switch, which the form now shows, was saved: it decides.
        ({"verify_ssl": "False", "skip_tls_verification": False}, True),
        ({"verify_ssl": "True", "skip_tls_verification": True}, False),
    ],
)
def test_what_the_form_saves_means_what_it_showed(extra: dict[str, Any], verified: bool) -> None:
    assert config_of(extra).verify_ssl is verified


# -- against a real TLS server ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An HTTPS API on 127.0.0.1 with a self-signed certificate no trust store knows."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    folder: Path = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(ENVELOPE).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def use(monkeypatch: pytest.MonkeyPatch, url: str, extra: dict[str, Any]) -> None:
    conn = {"conn_type": "kirin", "host": url, "password": "k-test",
            "extra": {"max_retries": 0, "timeout": 5, "connect_timeout": 5, **extra}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_KIRIN_DEFAULT", json.dumps(conn))


@pytest.mark.parametrize("saved", [False, "False", None])
async def test_a_switch_saved_off_keeps_certificates_checked(
    tls_server: str, monkeypatch: pytest.MonkeyPatch, saved: object
) -> None:
    use(monkeypatch, tls_server, {"skip_tls_verification": saved})
    with pytest.raises(KirinUnreachableError, match=r"(?i)certificate|SSL"):
        KirinHook().get_task("kt_1")
    async with KirinAsyncHook() as hook:
        with pytest.raises(KirinUnreachableError, match=r"(?i)certificate|SSL"):
            await hook.get_task("kt_1")


@pytest.mark.parametrize("saved", [True, "true"])
async def test_a_switch_saved_on_skips_the_check_and_says_so(
    tls_server: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    saved: object,
) -> None:
    """Also with ``REQUESTS_CA_BUNDLE`` set (it is on this machine): a session's ``verify=False``
    alone loses to it, so the hook passes ``verify`` with every request."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ssl.get_default_verify_paths().openssl_cafile)
    use(monkeypatch, tls_server, {"skip_tls_verification": saved})
    caplog.set_level(logging.WARNING)
    assert KirinHook().get_task("kt_1").status == "processing"
    async with KirinAsyncHook() as hook:
        assert (await hook.get_task("kt_1")).status == "processing"
    out, err = capfd.readouterr()
    warning = (
        "TLS verification is OFF for Kirin connection 'kirin_default' (extra skip_tls_verification is on)"
    )
    assert (out + err + caplog.text).count(warning) == 2
