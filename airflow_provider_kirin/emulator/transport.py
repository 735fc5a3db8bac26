"""Connection-level tricks: hand the asyncio transport to the app, reset or cut connections.

ASGI scopes do not carry the transport, so the emulator runs uvicorn with its own protocol
classes (``uvicorn.Config(http=...)`` accepts a class). On ``connection_made`` they wrap the
app so every request scope gets ``scope["extensions"]["kirin.transport"]``. uvicorn reads
``self.app`` for each request it dispatches, so the per-connection wrapper is picked up.

Example::

    uvicorn.Config(app, http=protocol_class("h11"))
    # in a handler:
    await reset_connection(request.scope, request.receive)   # client sees ECONNRESET
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

TRANSPORT_KEY = "kirin.transport"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
App = Callable[[Scope, Receive, Callable[..., Awaitable[None]]], Awaitable[None]]


def _wrap(app: App, transport: asyncio.BaseTransport) -> App:
    async def with_transport(scope: Scope, receive: Receive, send: Callable[..., Awaitable[None]]) -> None:
        extensions = scope.get("extensions")
        if extensions is None:
            scope["extensions"] = {TRANSPORT_KEY: transport}
        else:
            extensions[TRANSPORT_KEY] = transport
        await app(scope, receive, send)

    return with_transport


def protocol_class(http: str = "h11") -> type[asyncio.Protocol]:
    """A uvicorn HTTP protocol class (``"h11"`` or ``"httptools"``) that exposes the transport."""
    if http == "h11":
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
    elif http == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base  # type: ignore[assignment]
    else:
        raise ValueError(f"http: must be 'h11' or 'httptools', not {http!r}")

    class TransportExposingProtocol(base):
        """uvicorn protocol whose app sees the connection's transport in the scope."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.app = _wrap(self.config.loaded_app, transport)

    TransportExposingProtocol.__name__ = f"Kirin{base.__name__}"
    return TransportExposingProtocol


def get_transport(scope: Scope) -> asyncio.Transport | None:
    """The transport of the request's connection, when served by the emulator's protocols."""
    extensions = scope.get("extensions") or {}
    transport = extensions.get(TRANSPORT_KEY)
    return transport if hasattr(transport, "abort") else None


async def _drain(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def wait_disconnected(receive: Receive, timeout: float = 2.0) -> None:
    """Drain ``receive`` until uvicorn reports the disconnect, so it does not answer for us."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(_drain(receive), timeout)


def abort_with_rst(transport: asyncio.Transport) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0, then abort); pending data is discarded."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def reset_connection(scope: Scope, receive: Receive) -> bool:
    """Reset the request's connection. Returns ``False`` if the transport is not reachable."""
    transport = get_transport(scope)
    if transport is None:
        return False
    abort_with_rst(transport)
    await wait_disconnected(receive)
    return True


async def close_connection(scope: Scope, receive: Receive) -> bool:
    """Flush what was written so far, then close with FIN (used to cut a body short)."""
    transport = get_transport(scope)
    if transport is None:
        return False
    transport.close()
    await wait_disconnected(receive)
    return True
