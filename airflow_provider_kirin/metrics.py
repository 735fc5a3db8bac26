"""The provider's metrics, sent through Airflow's own metrics facility: StatsD, Datadog or
OpenTelemetry, as the deployment's ``[metrics]`` section configures it (nothing to set up here).

They are taken in one place, the ``PlanRunner`` (``core/steps.py``) that both transports'
run loops (``KirinHook.run`` and ``KirinAsyncHook.run``) step every plan with: it reports each
request (``Send``, by ``call.operation``), each wait before a retry (``Sleep(retry=True)``) and each
plan's result to the hook's :class:`KirinMetrics` (a ``PlanObserver``). So the operators, the
sensor, the triggers, the batch and a user's own hook calls are all counted, and the I/O-free core
knows only the observer's five methods.

The names (after ``[metrics] statsd_prefix``, ``airflow.`` by default; each tagged ``conn_id``):
``kirin.creates``, ``kirin.reuses``, ``kirin.generations_completed``, ``kirin.generations_failed``
(tag ``code``: a seed code or ``other``), ``kirin.status_checks``, ``kirin.http_retries`` (tag
``operation``), ``kirin.cost_micro_usd`` (counters) and ``kirin.generation_duration`` (a timer);
what each counts is in docs/operators.md ("Metrics").

A generation is "seen to end" by the hook that watched it unfinished (it created it, reused it
while it was running, or waits for it), so a completed generation that is only read again (a
download, a reuse after it finished) is never counted twice.

Tags carry no secret: the connection id, a seed error code (or ``other``) and an operation name;
never a key, URL or prompt. With plain StatsD, tags reach the server only with ``[metrics]
statsd_influxdb_enabled = True`` (as for Airflow's own metrics); Datadog and OpenTelemetry take
them as they are.

``kirin.status_checks`` is summed in the process and sent at most once a second per connection
(and whenever a plan ends), not once per check: a triggerer holding thousands of waits makes
thousands of checks a second, and a metric each was a measurable share of a check's CPU
(``benchmarks/bench_triggerer.py``). The totals are the same; a process that dies loses at most
its last second of checks.

Sending never blocks the triggerer's event loop: a StatsD metric is one UDP datagram (no answer is
awaited), Datadog's likewise, and OpenTelemetry records in memory and exports from its own thread;
the client itself (which resolves the StatsD host) is built in a worker thread before the first
trigger's first request (``_compat.warm_stats``). A metric that cannot be sent is dropped, never
an error of the task.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_kirin._compat import stats
from airflow_provider_kirin.core.batch import ItemResult
from airflow_provider_kirin.core.budget import parse_cost
from airflow_provider_kirin.core.waiting import outcome_of
from airflow_provider_kirin.exceptions import SEED_ERROR_CODES
from airflow_provider_kirin.models import KirinTask

if TYPE_CHECKING:
    from airflow_provider_kirin.core.steps import Sleep
    from airflow_provider_kirin.protocol import ApiCall

log = logging.getLogger(__name__)

CREATES = "kirin.creates"
REUSES = "kirin.reuses"
COMPLETED = "kirin.generations_completed"
FAILED = "kirin.generations_failed"
STATUS_CHECKS = "kirin.status_checks"
HTTP_RETRIES = "kirin.http_retries"
COST = "kirin.cost_micro_usd"
DURATION = "kirin.generation_duration"

#: Every metric name the provider emits (documented in docs/operators.md).
NAMES = (CREATES, REUSES, COMPLETED, FAILED, STATUS_CHECKS, HTTP_RETRIES, COST, DURATION)

MICRO = 1_000_000
#: ``kirin.status_checks`` is sent at most this often per process (and when a plan ends).
STATUS_CHECKS_EVERY_SECONDS = 1.0


class _Tally:
    """Counts summed per connection in this process, sent together at most every ``every``
    seconds, and on :meth:`flush`. Thread-safe: sync hooks may count from several threads."""

    def __init__(self, name: str, every: float) -> None:
        self.name, self.every = name, every
        self._counts: dict[str, int] = {}
        self._sent_at = time.monotonic()
        self._lock = threading.Lock()

    def add(self, conn_id: str) -> None:
        with self._lock:
            self._counts[conn_id] = self._counts.get(conn_id, 0) + 1
            due = time.monotonic() - self._sent_at >= self.every
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, {}
            self._sent_at = time.monotonic()
        for conn_id, count in counts.items():
            _emit("incr", self.name, count, {"conn_id": conn_id})


_STATUS_CHECKS = _Tally(STATUS_CHECKS, STATUS_CHECKS_EVERY_SECONDS)


class KirinMetrics:
    """What one hook's plans did, as their ``PlanRunner`` reports it (see the module docstring).
    Never raises."""

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id
        #: Task ids seen unfinished, with when (monotonic) they were first seen so.
        self._unfinished: dict[str, float] = {}
        #: The operation of the last request that failed, for ``kirin.http_retries``.
        self._last_failed: str | None = None

    # -- what the PlanRunner calls ----------------------------------------------------------------
    def watch(self, task_id: str) -> None:
        """``task_id`` is unfinished (a wait starts on it): its end will be counted here."""
        self._unfinished.setdefault(task_id, time.monotonic())

    def sent(self, call: ApiCall) -> None:
        """A request is about to go out."""
        if call.operation in ("check", "get"):  # a wait's status check, or a read of the task
            _STATUS_CHECKS.add(self.conn_id)

    def answered(self, call: ApiCall, task: KirinTask | None) -> None:
        """A request was answered with ``task`` (``None``: a lookup that found nothing)."""
        self._last_failed = None
        if task is None:
            return
        if call.operation == "create":
            self._incr(CREATES)
        if not task.is_terminal:
            self.watch(task.task_id)
        elif task.task_id in self._unfinished:
            self._ended(task, self._unfinished.pop(task.task_id))

    def failed(self, call: ApiCall) -> None:
        """A request failed (it may be retried)."""
        self._last_failed = call.operation

    def slept(self, step: Sleep) -> None:
        """A wait is over; a wait before a retry counts the retry."""
        if step.retry:
            self._incr(HTTP_RETRIES, operation=self._last_failed or "unknown")

    def finished(self, result: Any) -> None:
        """A plan returned ``result``: an idempotent submit's ``(task, reused)`` or a batch item.
        The status checks counted so far are sent."""
        _STATUS_CHECKS.flush()
        if isinstance(result, ItemResult):
            reused = result.reused
        elif isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], KirinTask):
            reused = result[1] is True
        else:
            return
        if reused:
            self._incr(REUSES)

    # -- what they report -------------------------------------------------------------------------
    def _ended(self, task: KirinTask, first_seen: float) -> None:
        outcome = outcome_of(task)
        if outcome is None:  # pragma: no cover - a terminal task always has an outcome
            return
        if outcome.error is not None:
            self._incr(FAILED, code=_code_tag(outcome.error.code))
            return
        self._incr(COMPLETED)
        micro = int(parse_cost(task.cost) * MICRO)
        if micro:
            self._incr(COST, micro)
        seconds = _server_seconds(task)
        if seconds is None:
            seconds = time.monotonic() - first_seen
        _emit("timing", DURATION, timedelta(seconds=seconds), {"conn_id": self.conn_id})

    def _incr(self, name: str, count: int = 1, **tags: str) -> None:
        _emit("incr", name, count, {"conn_id": self.conn_id, **tags})


def _emit(kind: str, name: str, value: Any, tags: dict[str, str]) -> None:
    try:
        getattr(stats(), kind)(name, value, tags=tags)
    except Exception:  # a metric is never worth failing a task for
        log.debug("Could not send the metric %s", name, exc_info=True)


def _code_tag(code: str | None) -> str:
    """A failed generation's code as a tag: one of the five seed codes, or ``other`` (a server
    cannot grow the metric's cardinality)."""
    return code if code in SEED_ERROR_CODES else "other"


def _server_seconds(task: KirinTask) -> float | None:
    """Seconds from the envelope's ``created_at`` to its ``updated_at`` (Kirin's own clock), when
    both are readable and in order."""
    try:
        start = datetime.fromisoformat(str(task.created_at).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(task.updated_at).replace("Z", "+00:00"))
        seconds = (end - start).total_seconds()
    except (TypeError, ValueError):
        return None
    return seconds if 0 <= seconds < 86400 else None
