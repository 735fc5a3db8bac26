"""In-memory state of one emulator: tasks, their progression over time, counters and logs.

A task's status is derived from the clock when it is read (``pending`` until
``pending_seconds`` have passed, then ``processing`` for ``processing_seconds``, then its final
status), so no background work is needed to move tasks along. Envelopes are cached per status:
a poll costs a dict lookup and, at most once per status change, one JSON encoding.

Example::

    state = EmulatorState(EmulatorConfig(pending_seconds=0, processing_seconds=0.5))
    task = state.create_task(params, origin="http://127.0.0.1:8765")
    state.complete_task(task.task_id)
    state.get(task.task_id).envelope()["status"]  # -> "completed"
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from airflow_provider_kirin.emulator.config import (
    COSTS,
    DEFAULT_FAIL_CODE,
    ERROR_CODES,
    VIDEO_SIZES,
    EmulatorConfig,
)
from airflow_provider_kirin.emulator.faults import FaultBook

TERMINAL = ("completed", "failed")
COUNTER_NAMES = (
    "create_requests",
    "creates",
    "gets",
    "lookups",
    "downloads",
    "download_auth_headers",
    "blob_downloads",
    "blob_auth_headers",
    "unauthorized",
    "invalid_requests",
    "conflicts",
    "not_found",
    "connection_resets",
    "callbacks_sent",
    "callbacks_failed",
    "callbacks_refused",
    "refused_hosts",
    "refused_control",
)


def iso(ts: float) -> str:
    """UTC ISO 8601 with milliseconds and an explicit ``+00:00`` offset (parseable on py3.10)."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


def dumps(obj: Any) -> bytes:
    """Compact JSON encoding used for every response body."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def error_body(code: str, message: str) -> dict[str, Any]:
    """The error envelope: ``{"error": {"code": ..., "error_message": ...}}``."""
    return {"error": {"code": code, "error_message": message}}


class DuplicateExternalIdError(Exception):
    """``external_task_id`` is already used by ``existing``."""

    def __init__(self, existing: Task) -> None:
        super().__init__(existing.external_task_id)
        self.existing = existing


@dataclass(eq=False)
class Task:
    """One generation task. Times ending in ``_at`` are ``time.monotonic()`` values."""

    task_id: str
    external_task_id: str | None
    params: dict[str, Any]
    origin: str
    prefix: str
    created_wall: float
    created_at: float
    processing_at: float
    done_at: float
    final_status: str = "completed"
    error_code: str | None = None
    error_message: str | None = None
    abandoned: bool = False
    wake: Callable[[], None] | None = None
    _cache: dict[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def callback_url(self) -> str | None:
        return self.params.get("callback_url")

    @property
    def video_url(self) -> str:
        return f"{self.origin}{self.prefix}/v1/files/{self.task_id}/video.mp4"

    def status_at(self, now: float | None = None) -> str:
        """Status at monotonic time ``now`` (default: the current time)."""
        now = time.monotonic() if now is None else now
        if now >= self.done_at:
            return self.final_status
        if now >= self.processing_at:
            return "processing"
        return "pending"

    def next_change(self, now: float) -> float | None:
        """Monotonic time of the next status change after ``now``, or ``None`` when terminal."""
        if now < self.processing_at:
            return self.processing_at
        if now < self.done_at:
            return self.done_at
        return None

    def _wall(self, mono: float) -> float:
        return self.created_wall + (mono - self.created_at)

    def envelope(self, status: str | None = None) -> dict[str, Any]:
        """The task envelope as the API returns it (for ``status``, default the current one)."""
        status = status or self.status_at()
        changed = {"pending": self.created_at, "processing": self.processing_at}.get(status, self.done_at)
        p = self.params
        env: dict[str, Any] = {
            "task_id": self.task_id,
            "external_task_id": self.external_task_id,
            "model": p["model"],
            "status": status,
            "created_at": iso(self.created_wall),
            "updated_at": iso(self._wall(max(changed, self.created_at))),
        }
        if status == "completed":
            size = VIDEO_SIZES[p["aspect_ratio"]]
            env["output"] = [{"content": [{"type": "video", "url": self.video_url, "size": size}]}]
            env["usage"] = {"cost": COSTS[(p["mode"], p["duration"])], "discount": 0}
        elif status == "failed":
            env["error"] = {"code": self.error_code, "error_message": self.error_message}
        env["metadata"] = {
            "emulator": True,
            "mode": p["mode"],
            "duration": p["duration"],
            "aspect_ratio": p["aspect_ratio"],
        }
        return env

    def envelope_bytes(self) -> bytes:
        """Encoded current envelope, cached per status."""
        status = self.status_at()
        cached = self._cache.get(status)
        if cached is None:
            cached = self._cache[status] = dumps(self.envelope(status))
        return cached


class EmulatorState:
    """Everything one emulator instance knows. Safe to drive from another thread.

    Request handlers run on the server's event loop; the Python control methods (used by
    :class:`~airflow_provider_kirin.emulator.server.EmulatorServer`) may run on any thread, so
    mutations of the task tables take a lock.
    """

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.faults = FaultBook()
        self.tasks: dict[str, Task] = {}
        self.by_external: dict[str, Task] = {}
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self.status_codes: dict[int, int] = {}
        #: Status checks (``GET /v1/tasks/{id}``) received per task id, answered or not.
        self.status_checks: dict[str, int] = {}
        self.downloads_log: deque[dict[str, Any]] = deque(maxlen=200)
        self.callbacks_log: deque[dict[str, Any]] = deque(maxlen=1000)
        self._lock = threading.Lock()

    # -- tasks -----------------------------------------------------------------------------
    def create_task(
        self,
        params: dict[str, Any],
        origin: str,
        *,
        fail_code: str | None = None,
        fail_message: str | None = None,
    ) -> Task:
        """Record a new task; raise :class:`DuplicateExternalIdError` if its external id is taken."""
        cfg = self.config
        now = time.monotonic()
        processing_at = now + cfg.pending_seconds
        task = Task(
            task_id=f"kt_{uuid.uuid4().hex}",
            external_task_id=params.get("external_task_id"),
            params=params,
            origin=origin,
            prefix=cfg.path_prefix,
            created_wall=time.time(),
            created_at=now,
            processing_at=processing_at,
            done_at=processing_at + cfg.processing_seconds,
        )
        if fail_code is not None:
            task.final_status = "failed"
            task.error_code = fail_code
            task.error_message = fail_message or _fail_message(fail_code)
        with self._lock:
            ext = task.external_task_id
            if ext is not None:
                existing = self.by_external.get(ext)
                if existing is not None:
                    raise DuplicateExternalIdError(existing)
                self.by_external[ext] = task
            self.tasks[task.task_id] = task
        self.counters["creates"] += 1
        return task

    def get(self, task_id: str) -> Task | None:
        return self.tasks.get(task_id)

    def lookup(self, external_task_id: str) -> Task | None:
        return self.by_external.get(external_task_id)

    def complete_task(self, task_id: str) -> Task:
        """Make a task ``completed`` now (no-op if already terminal). Raises ``KeyError``."""
        return self._finish(task_id, "completed", None, None)

    def fail_task(self, task_id: str, code: str = DEFAULT_FAIL_CODE, message: str | None = None) -> Task:
        """Make a task ``failed`` now with ``code`` (no-op if already terminal). Raises ``KeyError``."""
        return self._finish(task_id, "failed", code, message or _fail_message(code))

    def _finish(self, task_id: str, final: str, code: str | None, message: str | None) -> Task:
        with self._lock:
            task = self.tasks[task_id]
            now = time.monotonic()
            if task.status_at(now) in TERMINAL:
                return task
            task.processing_at = min(task.processing_at, now)
            task.done_at = now
            task.final_status = final
            task.error_code, task.error_message = code, message
            task._cache.clear()
            wake = task.wake
        if wake is not None:
            wake()
        return task

    # -- bookkeeping -----------------------------------------------------------------------
    def count_status_check(self, task_id: str) -> None:
        self.status_checks[task_id] = self.status_checks.get(task_id, 0) + 1

    def count_status(self, status: int) -> None:
        self.status_codes[status] = self.status_codes.get(status, 0) + 1

    def reset(self) -> None:
        """Forget tasks, counters, logs and fault rules (the config is kept)."""
        with self._lock:
            old = list(self.tasks.values())
            self.tasks = {}
            self.by_external = {}
            self.counters = dict.fromkeys(COUNTER_NAMES, 0)
            self.status_codes = {}
            self.status_checks = {}
            self.downloads_log.clear()
            self.callbacks_log.clear()
        self.faults.clear()
        for task in old:  # stop pending callback deliveries of forgotten tasks
            task.abandoned = True
            if task.wake is not None:
                task.wake()

    def stats(self) -> dict[str, Any]:
        """Counters plus derived figures, as served by ``GET /_emulator/stats``."""
        now = time.monotonic()
        by_status: dict[str, int] = {}
        billed = Decimal(0)
        for task in list(self.tasks.values()):
            status = task.status_at(now)
            by_status[status] = by_status.get(status, 0) + 1
            if status == "completed":
                billed += Decimal(COSTS[(task.params["mode"], task.params["duration"])])
        return {
            **self.counters,
            "tasks": len(self.tasks),
            "tasks_by_status": by_status,
            # What the account has been billed: every completed generation at its cost (USD).
            "billed_usd": f"{billed:.2f}",
            "status_codes": {str(k): v for k, v in sorted(self.status_codes.items())},
            "faults_applied": dict(self.faults.applied),
            "faults_active": len(self.faults.snapshot()),
        }


def _fail_message(code: str) -> str:
    return ERROR_CODES.get(code, "Generation failed")
