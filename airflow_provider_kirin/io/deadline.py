"""Total deadlines for HTTP requests: connect + headers + body, not just a timeout per read.

A read timeout bounds each ``recv``; a server that drips one byte a second never trips it and
holds a request (and every wait built on it) for as long as it likes. So every request the
provider sends also runs under a deadline:

- async (``aiohttp``, triggers): a per-request ``aiohttp.ClientTimeout(total=...)``, which covers
  the body read as well;
- sync (``requests``, workers): :func:`request_deadline` arms a watchdog timer; at the deadline
  it shuts the request's socket down, which ends any blocked read at once, and the request
  raises :class:`DeadlineExceeded` (a ``requests.Timeout``, so callers treat it like one).
  :func:`deadline_session` makes the ``requests.Session`` whose connections the watchdog can see.

The budget of one request is the connection's ``request_timeout`` (API calls) or
``download_timeout`` (video downloads), clipped by the caller to what is left of a wait (see
``PollState.request_budget``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_local = threading.local()


class DeadlineExceeded(requests.exceptions.Timeout):
    """A request did not finish (connect, headers and body) within its total deadline."""


class _Watch:
    """The socket one request runs on, and whether its deadline has fired.

    The socket itself is kept, not the connection: a response that closes its connection
    (HTTP/1.0, ``Connection: close``) detaches the socket from the connection while the body is
    still being read from it.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.fired = False

    def attach(self, sock: socket.socket) -> None:
        with self.lock:
            self.sock = sock
            if self.fired:
                _shutdown(sock)

    def fire(self) -> None:
        with self.lock:
            self.fired = True
            if self.sock is not None:
                _shutdown(self.sock)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        # socket.socket.shutdown, not SSLSocket's: end a blocked read on the file descriptor.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _attach(connection: HTTPConnection) -> None:
    watch: _Watch | None = getattr(_local, "watch", None)
    sock = getattr(connection, "sock", None)
    if watch is not None and sock is not None:
        watch.attach(sock)


class _WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _attach(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self)  # a reused keep-alive connection does not connect again
        try:
            super().request(*args, **kwargs)
        finally:
            _attach(self)  # connected while sending, if it was not before


class _WatchedHTTPSConnection(_WatchedHTTPConnection, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


def deadline_session() -> requests.Session:
    """A ``requests.Session`` whose requests :func:`request_deadline` can cut off."""
    session = requests.Session()
    session.mount("http://", _WatchedAdapter())
    session.mount("https://", _WatchedAdapter())
    return session


@contextlib.contextmanager
def request_deadline(seconds: float, what: str = "request") -> Iterator[None]:
    """Run the ``requests`` calls of the block (on a :func:`deadline_session`) under a total deadline.

    At the deadline the socket is shut down; the block then raises :class:`DeadlineExceeded`
    whatever the read reported (a shut-down socket can look like the end of a body).
    """
    watch = _Watch()
    previous = getattr(_local, "watch", None)
    _local.watch = watch
    timer = threading.Timer(max(0.0, seconds), watch.fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    except Exception as err:  # whatever a cut-off read looked like (an error, a short body...)
        if watch.fired:
            raise DeadlineExceeded(f"the {what} passed its total deadline of {seconds:.1f} s") from err
        raise
    finally:
        timer.cancel()
        _local.watch = previous
    if watch.fired:
        raise DeadlineExceeded(f"the {what} passed its total deadline of {seconds:.1f} s")
