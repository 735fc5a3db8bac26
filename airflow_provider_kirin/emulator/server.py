"""Run the emulator in a background thread of the current process.

Example::

    from airflow_provider_kirin.emulator import EmulatorConfig, EmulatorServer, Fault

    with EmulatorServer(EmulatorConfig(pending_seconds=0.2, processing_seconds=0.5)) as emu:
        emu.add_fault(Fault(endpoint="create", kind="http_error", status=503))
        requests.post(f"{emu.url}/v1/videos/generations", headers=emu.headers, json={...})
        assert emu.stats()["create_requests"] == 1

Each server owns its state, event loop and thread, so several can run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import threading
import time
from types import TracebackType
from typing import Any

from airflow_provider_kirin.emulator.config import DEFAULT_API_KEY, EmulatorConfig, is_loopback_host
from airflow_provider_kirin.emulator.faults import Fault
from airflow_provider_kirin.emulator.state import EmulatorState

_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


class EmulatorServer:
    """The emulator served by uvicorn on ``host:port`` (``port=0`` picks a free port).

    Args:
        config: settings; default :class:`EmulatorConfig()`.
        host: interface to bind (``"127.0.0.1"``; ``"0.0.0.0"`` for all IPv4 ones).
        port: TCP port; 0 for any free one (read ``.port`` after :meth:`start`).
        http: uvicorn HTTP implementation: ``"h11"`` (default; strictest parser, best oracle),
            ``"httptools"`` or ``"auto"`` (httptools when installed).
        loop: ``"asyncio"`` (default), ``"uvloop"`` or ``"auto"`` (uvloop when installed).
            For thousands of concurrent clients use ``http="auto", loop="auto"``: about 3x the
            requests per second of h11 on asyncio. Every fault kind works with every combination.
        backlog: listen backlog (the kernel may cap it at ``net.core.somaxconn``).
        timeout_keep_alive: seconds an idle keep-alive connection is kept open.
        graceful_timeout: seconds :meth:`stop` waits for in-flight requests (e.g. delays).

    Attributes (after :meth:`start`): ``port``, ``url`` (``http://127.0.0.1:PORT``, where this
    machine reaches it), ``bound_url`` (the address it is bound to, e.g. ``http://0.0.0.0:PORT``),
    ``alt_url`` (``http://localhost:PORT``, another origin for the same server), ``api_key``,
    ``headers`` (the ``Authorization`` header: the API and the ``/_emulator`` control plane both
    need it), ``state`` (the live :class:`EmulatorState`).

    Bound beyond loopback (``host="0.0.0.0"``, a LAN address), the well-known
    :data:`~airflow_provider_kirin.emulator.config.DEFAULT_API_KEY` is replaced by a generated key
    (read ``api_key``), and a specific bound address is added to the ``Host`` names it serves.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        http: str = "h11",
        loop: str = "asyncio",
        backlog: int = 4096,
        timeout_keep_alive: float = 30.0,
        graceful_timeout: float = 3.0,
    ) -> None:
        if http not in ("h11", "httptools", "auto"):
            raise ValueError("http: must be 'h11', 'httptools' or 'auto'")
        if loop not in ("asyncio", "uvloop", "auto"):
            raise ValueError("loop: must be 'asyncio', 'uvloop' or 'auto'")
        self.state = EmulatorState(config)
        self.host = host
        self.port = port
        self._http = _available("httptools", "h11") if http == "auto" else http
        self._loop_kind = _available("uvloop", "asyncio") if loop == "auto" else loop
        self._backlog = backlog
        self._keep_alive = timeout_keep_alive
        self._graceful = graceful_timeout
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> EmulatorServer:
        """Bind, start serving in a daemon thread and wait until connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        import uvicorn

        from airflow_provider_kirin.emulator.app import create_app

        self._secure_defaults()

        # Looked up now, not at import: a harness may wrap transport.protocol_class (benchmarks do).
        from airflow_provider_kirin.emulator.transport import protocol_class

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(state=self.state),
            http=protocol_class(self._http),
            lifespan="on",
            log_level="warning",
            log_config=None,
            access_log=False,
            backlog=self._backlog,
            timeout_keep_alive=int(self._keep_alive),
            timeout_graceful_shutdown=int(self._graceful) or None,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, args=(sock,), name=f"kirin-emulator-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"kirin emulator failed to start: {self._error!r}")
            time.sleep(0.005)
        return self

    def _secure_defaults(self) -> None:
        """Beyond loopback: never the well-known key; serve the bound address as a ``Host`` name."""
        if self.is_loopback:
            return
        config = self.state.config
        changes: dict[str, Any] = {}
        if config.api_key == DEFAULT_API_KEY:
            changes["api_key"] = f"kirin-emu-{secrets.token_urlsafe(24)}"
        bound = self.host.strip("[]").lower()
        if bound not in _WILDCARDS and bound not in config.allowed_hosts:
            changes["allowed_hosts"] = (*config.allowed_hosts, bound)
        if changes:
            self.state.config = config.replace(**changes)

    @property
    def is_loopback(self) -> bool:
        """Whether it is bound to this machine only (a loopback address or ``localhost``)."""
        return is_loopback_host(self.host)

    def _run(self, sock: socket.socket) -> None:
        if self._loop_kind == "uvloop":
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._server.serve(sockets=[sock]))
        except BaseException as exc:  # includes uvicorn's SystemExit on startup failure
            self._error = exc
        finally:
            with contextlib.suppress(Exception):
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            sock.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down (waiting up to ``graceful_timeout`` for in-flight requests) and join the thread."""
        thread, server = self._thread, self._server
        if thread is None or server is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        self._thread = None

    def __enter__(self) -> EmulatorServer:
        return self.start() if self._thread is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- addresses -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL of the server (a wildcard bind is addressed through loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def bound_url(self) -> str:
        """``http://HOST:PORT`` with the address it is bound to (``0.0.0.0`` for all IPv4 ones)."""
        host = self.host or "0.0.0.0"
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"http://{host}:{self.port}"

    @property
    def alt_url(self) -> str:
        """``http://localhost:PORT``: the same server under another origin (cross-origin tests)."""
        return f"http://localhost:{self.port}"

    @property
    def api_url(self) -> str:
        """``url`` plus the configured ``path_prefix``: where ``/v1/...`` paths start."""
        return f"{self.url}{self.state.config.path_prefix}"

    @property
    def api_key(self) -> str:
        return self.state.config.api_key

    @property
    def headers(self) -> dict[str, str]:
        """``{"Authorization": "Bearer <api_key>"}``: for the API and for the control plane."""
        return {"Authorization": f"Bearer {self.api_key}"}

    def airflow_conn_json(self, extra: dict[str, Any] | None = None) -> str:
        """A JSON Airflow connection for this server, for ``AIRFLOW_CONN_KIRIN_DEFAULT``.

        With a ``path_prefix``, the ``create_path``/``task_path``/``lookup_path`` extras carry it.
        """
        extras: dict[str, Any] = {}
        prefix = self.state.config.path_prefix
        if prefix:
            extras = {
                "create_path": f"{prefix}/v1/videos/generations",
                "task_path": f"{prefix}/v1/tasks/{{task_id}}",
                "lookup_path": f"{prefix}/v1/tasks",
            }
        extras.update(extra or {})
        conn: dict[str, Any] = {"conn_type": "kirin", "host": self.url, "password": self.api_key}
        if extras:
            conn["extra"] = extras
        return json.dumps(conn)

    # -- control (in-process, no HTTP) ---------------------------------------------------------
    def add_fault(self, fault: Fault | dict[str, Any] | None = None, **params: Any) -> Fault:
        """Add a rule: ``add_fault(Fault(...))``, ``add_fault({...})`` or ``add_fault(kind=..., ...)``."""
        return self.state.faults.add(fault if fault is not None else params)

    def add_faults(self, faults: list[Fault | dict[str, Any]]) -> list[Fault]:
        return [self.state.faults.add(f) for f in faults]

    def clear_faults(self) -> None:
        self.state.faults.clear()

    def faults(self) -> list[dict[str, Any]]:
        """Active rules with their remaining counts."""
        return self.state.faults.snapshot()

    def reset(self) -> None:
        """Forget tasks, counters, logs and fault rules (settings are kept)."""
        self.state.reset()

    def stats(self) -> dict[str, Any]:
        return self.state.stats()

    def configure(self, **changes: Any) -> EmulatorConfig:
        """Change settings at run time (same names as :class:`EmulatorConfig`)."""
        self.state.config = self.state.config.replace(**changes)
        return self.state.config

    def set_timings(
        self, pending_seconds: float | None = None, processing_seconds: float | None = None
    ) -> None:
        """Change the progression of tasks created from now on."""
        changes = {"pending_seconds": pending_seconds, "processing_seconds": processing_seconds}
        self.configure(**{k: v for k, v in changes.items() if v is not None})

    def complete_task(self, task_id: str) -> dict[str, Any]:
        """Finish a task as ``completed`` now; returns its envelope. Raises ``KeyError``."""
        return self.state.complete_task(task_id).envelope()

    def fail_task(self, task_id: str, code: str = "002011095", message: str | None = None) -> dict[str, Any]:
        """Finish a task as ``failed`` now with ``code``; returns its envelope. Raises ``KeyError``."""
        return self.state.fail_task(task_id, code, message).envelope()

    def task(self, task_id: str) -> dict[str, Any] | None:
        """A task's current envelope, or ``None``."""
        task = self.state.get(task_id)
        return None if task is None else task.envelope()

    def task_request(self, task_id: str) -> dict[str, Any] | None:
        """The create body a task was made from (prompt, duration, ...), or ``None``: lets a test
        check that a task id it was handed is the generation of the prompt it asked for."""
        task = self.state.get(task_id)
        return None if task is None else dict(task.params)

    def task_by_external_id(self, external_task_id: str) -> dict[str, Any] | None:
        task = self.state.lookup(external_task_id)
        return None if task is None else task.envelope()

    def downloads(self) -> list[dict[str, Any]]:
        """Recent video downloads: ``task_id``, ``authorization`` (header present?), ``host``."""
        return list(self.state.downloads_log)

    def callbacks(self) -> list[dict[str, Any]]:
        """Callback deliveries: ``task_id``, ``status``, ``url``, ``ok``, ``http_status``/``error``."""
        return list(self.state.callbacks_log)

    @property
    def implementation(self) -> tuple[str, str]:
        """``(http, loop)`` actually used, after resolving ``"auto"``."""
        return self._http, self._loop_kind

    def __repr__(self) -> str:
        return f"EmulatorServer(url={self.url!r}, running={self.running})"


def _available(preferred: str, fallback: str) -> str:
    """``preferred`` if that module can be imported, else ``fallback``."""
    import importlib.util

    return preferred if importlib.util.find_spec(preferred) is not None else fallback
