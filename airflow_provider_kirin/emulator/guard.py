"""What the emulator answers at all: a guard in front of every route, so it is safe to leave running.

- **Host**: a request whose ``Host`` header names neither this machine (``localhost``,
  ``*.localhost``, a loopback address) nor one of ``config.allowed_hosts`` (the address it is bound
  to is added by ``EmulatorServer``) is answered ``421``: a web page that rebinds its own name to
  127.0.0.1 reaches nothing.
- **The control plane** (``/_emulator/*``, except ``GET /_emulator/health``) needs the API key
  (``Authorization: Bearer <key>``, ``401`` without it), refuses a request that a browser marks
  as coming from another site (an ``Origin`` other than the server's own, or ``Sec-Fetch-Site:
  cross-site``/``same-site``: ``403``), and takes a body only as ``application/json`` (``415``),
  so a cross-site ``text/plain`` form POST never changes its state.

Example::

    app.add_middleware(GuardMiddleware, state=state)
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_kirin.emulator.config import CONTROL_PREFIX, is_loopback_host
from airflow_provider_kirin.emulator.responses import json_error
from airflow_provider_kirin.emulator.state import EmulatorState

OPEN_PATHS = frozenset({f"{CONTROL_PREFIX}/health"})
"""Control paths that need no key (they tell nothing and change nothing)."""


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def host_name(host_header: str) -> str:
    """The host of a ``Host`` header (``[::1]:8765`` -> ``::1``), lower-cased."""
    try:
        return (urlsplit(f"//{host_header}").hostname or "").lower()
    except ValueError:
        return ""


def host_allowed(state: EmulatorState, host_header: str | None) -> bool:
    name = host_name(host_header or "")
    return is_loopback_host(name) or name in state.config.allowed_hosts


def control_refusal(state: EmulatorState, scope: dict[str, Any]) -> tuple[int, str, str] | None:
    """``(status, code, message)`` when a control request is refused, else ``None``."""
    origin = _header(scope, b"origin")
    host = _header(scope, b"host") or ""
    if origin is not None and origin != "null" and urlsplit(origin).netloc.lower() != host.lower():
        return 403, "forbidden", "origin: cross-site requests to the control plane are refused"
    if (_header(scope, b"sec-fetch-site") or "none") not in ("none", "same-origin"):
        return 403, "forbidden", "sec-fetch-site: cross-site requests to the control plane are refused"
    scheme, _, key = (_header(scope, b"authorization") or "").partition(" ")
    expected = state.config.api_key.encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), expected):
        return 401, "unauthorized", "authorization: the control plane needs the API key as a bearer token"
    has_body = (_header(scope, b"content-length") or "0").strip() not in ("", "0") or (
        _header(scope, b"transfer-encoding") is not None
    )
    content_type = (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
    if has_body and content_type != "application/json":
        return 415, "unsupported_media_type", "content-type: the control plane takes application/json only"
    return None


class GuardMiddleware:
    """See the module docstring. Reads the settings per request, so a changed key applies at once."""

    def __init__(self, app: Any, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            refusal: tuple[int, str, str] | None = None
            host = _header(scope, b"host")
            # A browser always sends Host; a raw client without one is not a rebinding page.
            if host is not None and not host_allowed(self.state, host):
                self.state.counters["refused_hosts"] += 1
                refusal = (421, "misdirected_request", "host: this emulator does not serve that host name")
            elif scope["path"].startswith(CONTROL_PREFIX) and scope["path"] not in OPEN_PATHS:
                refusal = control_refusal(self.state, scope)
                if refusal is not None:
                    self.state.counters["refused_control"] += 1
            if refusal is not None:
                status, code, message = refusal
                extra = {"WWW-Authenticate": "Bearer"} if status == 401 else None
                await json_error(self.state, status, code, message, headers=extra)(scope, receive, send)
                return
        await self.app(scope, receive, send)
