"""Best-effort callback delivery: POST the envelope to ``callback_url`` on each status change.

One asyncio task per task with a callback URL sleeps until the task's next status change (or
until :meth:`EmulatorState.complete_task` wakes it), then POSTs the envelope for every status
reached since the last delivery, in order (``pending``, ``processing``, final). Failures are
counted and logged in ``state.callbacks_log``; they never affect the API.

Callbacks go only to this machine (``localhost``, ``*.localhost``, a loopback address) unless the
URL's host is listed in ``config.callback_hosts`` (``"*"``: any host): the emulator never POSTs to
a link-local metadata address, a LAN service or the internet because a create body said so. A
refused delivery is logged (``ok: false``, ``refused``) and counted (``callbacks_refused``); it is
never sent. Redirects are not followed.

Example::

    sender = CallbackSender(state)
    sender.schedule(task)   # from a request handler, on the server's loop
    await sender.aclose()   # at shutdown
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_kirin.emulator.config import is_loopback_host
from airflow_provider_kirin.emulator.state import TERMINAL, EmulatorState, Task, dumps, iso

if TYPE_CHECKING:
    import aiohttp

_ORDER = ("pending", "processing")


class CallbackSender:
    """Delivers callbacks for the tasks of one :class:`EmulatorState`."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self._session: aiohttp.ClientSession | None = None
        self._running: set[asyncio.Task[None]] = set()

    def schedule(self, task: Task) -> None:
        """Start delivering callbacks for ``task`` (must run on the server's event loop)."""
        runner = asyncio.get_running_loop().create_task(self._run(task))
        self._running.add(runner)
        runner.add_done_callback(self._running.discard)

    async def aclose(self) -> None:
        """Cancel pending deliveries and close the HTTP session."""
        for runner in list(self._running):
            runner.cancel()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self, task: Task) -> None:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                loop.call_soon_threadsafe(event.set)

        task.wake = wake
        delivered = 0  # statuses delivered so far, in progression order
        while not task.abandoned:
            event.clear()
            now = time.monotonic()
            status = task.status_at(now)
            reached = 3 if status in TERMINAL else _ORDER.index(status) + 1
            while delivered < reached and not task.abandoned:
                to_send = _ORDER[delivered] if delivered < 2 else task.final_status
                await self._post(task, to_send)
                delivered += 1
            if delivered >= 3:
                return
            next_change = task.next_change(time.monotonic())
            if next_change is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(event.wait(), max(0.0, next_change - time.monotonic()))

    def _refusal(self, url: str) -> str | None:
        """Why a callback to ``url`` is not sent, or ``None`` when it may be."""
        try:
            host = (urlsplit(url).hostname or "").lower()
        except ValueError:
            return "not a URL"
        allowed = self.state.config.callback_hosts
        if is_loopback_host(host) or "*" in allowed or host in allowed:
            return None
        return f"host {host!r} is not loopback and not in callback_hosts"

    async def _post(self, task: Task, status: str) -> None:
        import aiohttp

        url = task.callback_url
        assert url is not None
        entry: dict[str, Any] = {
            "task_id": task.task_id,
            "status": status,
            "url": url,
            "at": iso(time.time()),
        }
        refused = self._refusal(url)
        if refused is not None:
            entry.update(ok=False, refused=refused)
            self.state.counters["callbacks_refused"] += 1
            self.state.callbacks_log.append(entry)
            return
        try:
            if self._session is None:
                self._session = aiohttp.ClientSession(headers={"User-Agent": "kirin-emulator"})
            timeout = aiohttp.ClientTimeout(total=self.state.config.callback_timeout)
            body = dumps(task.envelope(status))
            headers = {"Content-Type": "application/json"}
            async with self._session.post(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                await resp.read()
                entry["http_status"] = resp.status
                entry["ok"] = resp.status < 300
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            entry["ok"] = False
            entry["error"] = f"{type(exc).__name__}: {exc}"
        self.state.counters["callbacks_sent" if entry["ok"] else "callbacks_failed"] += 1
        self.state.callbacks_log.append(entry)
