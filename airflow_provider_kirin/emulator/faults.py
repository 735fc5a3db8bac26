"""Fault rules: scripted misbehaviour of the emulator.

A rule names the ``endpoint`` it applies to, a ``kind`` and how many matching requests it
affects (``times``; ``-1`` = forever), optionally only for ``for_seconds`` after it was added
(a time-boxed outage: ``times=-1, for_seconds=30`` is a 30-second storm). Rules are consumed
in the order they were added, and one request consumes at most one rule: the first active rule
whose endpoint and kind fit it. The exception is ``fail_task``, which marks the next *created*
task: it is only consumed by a create that passed auth and validation, and it can combine with a
request rule on that same create. With ``prompt_pattern`` (a regular expression, searched in the
prompt) a ``fail_task`` rule only takes creates whose prompt matches, whatever order the creates
come in: ``Fault(kind="fail_task", prompt_pattern="fox", code="002011096")`` fails the fox
video of a batch, and only it.

Which endpoint each kind applies to is :data:`KINDS`: ``create`` is ``POST
/v1/videos/generations``, ``get`` ``GET /v1/tasks/{id}`` (a status check), ``lookup`` ``GET
/v1/tasks?external_task_id=``, ``download`` the video file, ``blob`` the benchmark stream.

Example::

    from airflow_provider_kirin.emulator import Fault

    Fault(endpoint="create", kind="http_error", status=429, retry_after="1")
    Fault.from_dict({"endpoint": "get", "kind": "reset_before", "times": 2})
    Fault(endpoint="get", kind="http_error", status=503, times=-1, for_seconds=30)  # a storm
    Fault(kind="fail_task", endpoint="create", prompt_pattern=r"^A red fox", code="002011096")

JSON form (``POST /_emulator/faults`` or the CLI's ``--fault``) uses the same field names.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

ENDPOINTS = ("create", "get", "lookup", "download", "blob", "any")
"""``download`` is the video file; ``blob`` the synthetic benchmark stream; ``any`` all of them."""

_ENVELOPE = frozenset({"create", "get", "lookup"})
_ALL = frozenset({"create", "get", "lookup", "download", "blob"})
_DOWNLOADS = frozenset({"download", "blob"})

KINDS: dict[str, frozenset[str]] = {
    "http_error": _ALL,
    "reset_before": _ALL,
    "reset_after": _ALL,
    "delay": _ALL,
    "non_json": _ALL,
    "unknown_status": _ENVELOPE,
    "id_alias": _ENVELOPE,
    "completed_no_video": _ENVELOPE,
    "huge_body": _ENVELOPE,
    "fail_task": frozenset({"create"}),
    "truncated_download": _DOWNLOADS,
}
"""Each fault kind and the endpoints whose requests it can affect."""

TASK_KINDS = frozenset({"fail_task"})
"""Kinds consumed when a task is created rather than when a request arrives."""

DEFAULT_HUGE_BYTES = 20 * 1024 * 1024


@dataclass
class Fault:
    """One fault rule. Only the parameters of its ``kind`` matter; the rest are ignored.

    Attributes:
        kind: one of :data:`KINDS`.
        endpoint: one of :data:`ENDPOINTS` (default ``"any"``).
        times: matching requests affected; ``-1`` means every one, forever.
        for_seconds: if set, the rule expires this many seconds after it was added, whatever
            ``times`` has left (a time-boxed outage).
        skip: matching requests to let through untouched before the rule starts (e.g. ``skip=2``
            spares the first two polls).
        status: ``http_error`` response status (default 503); ``non_json`` status (default 200).
        retry_after: ``http_error`` ``Retry-After`` header value (seconds or an HTTP-date).
        code: ``http_error`` error code in the JSON body; ``fail_task`` task error code
            (default ``002011095``).
        body: ``http_error`` raw body sent instead of JSON (e.g. HTML); ``non_json`` body.
        content_type: Content-Type for a raw ``body`` (default ``text/html; charset=utf-8``).
        error_message: ``http_error``/``fail_task`` message (default derived from the code).
        seconds: ``delay`` length (default 1.0).
        after_processing: ``delay`` only: process the request first, then wait, then answer.
        status_value: ``unknown_status`` replacement status (default ``"queued_for_gpu"``).
        bytes: ``huge_body`` total body size (default 20 MiB); ``truncated_download`` body bytes
            actually sent (default: half of Content-Length).
        prompt_pattern: ``fail_task`` only: a regular expression (``re.search``); the rule takes
            only creates whose prompt matches it.

    Example::

        server.add_fault(Fault(endpoint="download", kind="truncated_download", bytes=1000))
    """

    kind: str
    endpoint: str = "any"
    times: int = 1
    for_seconds: float | None = None
    skip: int = 0
    status: int | None = None
    retry_after: str | None = None
    code: str | None = None
    body: str | None = None
    content_type: str | None = None
    error_message: str | None = None
    seconds: float = 1.0
    after_processing: bool = False
    status_value: str = "queued_for_gpu"
    bytes: int | None = None
    prompt_pattern: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind: must be one of {', '.join(KINDS)}")
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint: must be one of {', '.join(ENDPOINTS)}")
        if self.endpoint != "any" and self.endpoint not in KINDS[self.kind]:
            raise ValueError(f"endpoint: kind {self.kind} cannot apply to {self.endpoint}")
        if not _is_int(self.times) or self.times == 0 or self.times < -1:
            raise ValueError("times: must be a positive integer or -1")
        if self.for_seconds is not None and (
            isinstance(self.for_seconds, bool)
            or not isinstance(self.for_seconds, (int, float))
            or self.for_seconds <= 0
        ):
            raise ValueError("for_seconds: must be a number > 0 or null")
        if not _is_int(self.skip) or self.skip < 0:
            raise ValueError("skip: must be an integer >= 0")
        if self.status is not None and (not _is_int(self.status) or not 200 <= self.status <= 599):
            raise ValueError("status: must be an integer in 200..599")
        if isinstance(self.retry_after, (int, float)) and not isinstance(self.retry_after, bool):
            self.retry_after = str(self.retry_after)
        for name in ("retry_after", "code", "body", "content_type", "error_message", "status_value"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name}: must be a string")
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, (int, float)) or self.seconds < 0:
            raise ValueError("seconds: must be a number >= 0")
        if not isinstance(self.after_processing, bool):
            raise ValueError("after_processing: must be a boolean")
        if self.bytes is not None and (not _is_int(self.bytes) or self.bytes < 0):
            raise ValueError("bytes: must be an integer >= 0")
        if self.prompt_pattern is not None:
            if self.kind not in TASK_KINDS:
                raise ValueError(f"prompt_pattern: only for kind {', '.join(sorted(TASK_KINDS))}")
            if not isinstance(self.prompt_pattern, str):
                raise ValueError("prompt_pattern: must be a string")
            try:
                re.compile(self.prompt_pattern)
            except re.error as exc:
                raise ValueError(f"prompt_pattern: not a regular expression ({exc})") from None

    @classmethod
    def from_dict(cls, data: Any) -> Fault:
        """Build a rule from its JSON form; raises ``ValueError`` naming the bad field."""
        if isinstance(data, Fault):
            return dataclasses.replace(data)
        if not isinstance(data, dict):
            raise ValueError("fault: must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown fault field")
        if "kind" not in data:
            raise ValueError("kind: field required")
        try:
            return cls(**data)
        except TypeError as exc:  # pragma: no cover - defensive
            raise ValueError(f"fault: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """JSON form, omitting parameters left at their defaults."""
        defaults = Fault(kind=self.kind)
        out: dict[str, Any] = {"kind": self.kind, "endpoint": self.endpoint, "times": self.times}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name not in out and value != getattr(defaults, f.name):
                out[f.name] = value
        return out

    def applies_to(self, endpoint: str) -> bool:
        """Whether a request to ``endpoint`` can be affected by this rule."""
        return (self.endpoint == "any" or self.endpoint == endpoint) and endpoint in KINDS[self.kind]

    def matches_prompt(self, prompt: str | None) -> bool:
        """Whether a create with ``prompt`` can take this rule (always, without ``prompt_pattern``)."""
        if self.prompt_pattern is None:
            return True
        return prompt is not None and re.search(self.prompt_pattern, prompt) is not None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class _ActiveRule:
    fault: Fault
    skip_left: int
    remaining: int  # -1 = forever
    expires: float | None = None  # time.monotonic() after which the rule is gone
    applied: int = 0

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires


class FaultBook:
    """Thread-safe, ordered list of active rules with per-request matching.

    Example::

        book = FaultBook()
        book.add(Fault(kind="delay", seconds=0.5))
        rule = book.take("get")  # -> that Fault, then None
    """

    def __init__(self) -> None:
        self._rules: list[_ActiveRule] = []
        self._lock = threading.Lock()
        self.applied: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self._rules)

    def add(self, fault: Fault | dict[str, Any]) -> Fault:
        """Append a rule (copied, so the caller's object can be reused); return the copy."""
        rule = Fault.from_dict(fault)
        expires = None if rule.for_seconds is None else time.monotonic() + rule.for_seconds
        with self._lock:
            self._rules.append(_ActiveRule(rule, rule.skip, rule.times, expires))
        return rule

    def clear(self) -> None:
        """Remove every rule and forget the applied counts."""
        with self._lock:
            self._rules.clear()
            self.applied.clear()

    def take(self, endpoint: str, *, task_rules: bool = False, prompt: str | None = None) -> Fault | None:
        """Consume and return the rule that affects this request to ``endpoint``, if any.

        ``task_rules=True`` looks only at rules that act on a created task (``fail_task``), and
        only at those whose ``prompt_pattern`` (if any) matches ``prompt``; otherwise only at the
        other rules.
        """
        if not self._rules:  # fast path: no lock when there is nothing to match
            return None
        with self._lock:
            now = time.monotonic()
            self._rules = [r for r in self._rules if not r.expired(now)]
            for active in self._rules:
                if (active.fault.kind in TASK_KINDS) != task_rules or not active.fault.applies_to(endpoint):
                    continue
                if task_rules and not active.fault.matches_prompt(prompt):
                    continue
                if active.skip_left > 0:
                    active.skip_left -= 1
                    return None
                if active.remaining > 0:
                    active.remaining -= 1
                    if active.remaining == 0:
                        self._rules.remove(active)
                active.applied += 1
                kind = active.fault.kind
                self.applied[kind] = self.applied.get(kind, 0) + 1
                return active.fault
        return None

    def snapshot(self) -> list[dict[str, Any]]:
        """Active rules with their remaining counts, for ``GET /_emulator/faults``."""
        now = time.monotonic()
        with self._lock:
            return [
                {
                    **r.fault.to_dict(),
                    "remaining": r.remaining,
                    "skip_left": r.skip_left,
                    "applied": r.applied,
                    "seconds_left": None if r.expires is None else round(r.expires - now, 3),
                }
                for r in self._rules
                if not r.expired(now)
            ]
