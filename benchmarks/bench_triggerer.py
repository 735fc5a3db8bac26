"""Triggerer load: N concurrent waits for Kirin tasks in one asyncio event loop.

For each N, four pollers in turn wait for N fresh tasks, each in a fresh worker process (one event
loop), against one emulator running in its own process (its CPU is not counted). The tasks
complete ``--processing`` seconds after creation plus an offset spread evenly over one poll
interval, so completions fall at every phase of the poll cycle.

``kirin``             our ``KirinTaskTrigger`` (first_poll_at = now, ``--interval`` seconds).
``http_provider``     the peer: Airflow's HTTP provider, ``HttpSensorTrigger`` (``HttpAsyncHook``,
                      one ``aiohttp.ClientSession`` per poll), same interval, Bearer key in its
                      headers. Its only stock "wait until" rule is "fire on the first non-404", so
                      it waits on the task's video URL, which the emulator answers 404 until the task
                      completes (the status URL answers 200 at once).
``session_per_poll``  reference: bare aiohttp, a new session per poll (the HTTP provider's pattern).
``shared_session``    reference floor: bare aiohttp, one shared session, GET + ``json.loads``.
                      Both references poll the status URL on our trigger's schedule, in a
                      worker with Airflow imported (as in any triggerer: its heap is what every
                      full garbage collection walks).

Measured per run: wall time; CPU seconds of the worker (``getrusage``) per 1,000 polls (polls as
counted by the emulator), over the whole run (from creating the waits to the last event) and in
the steady state (while every wait polls and none has finished: worker CPU and emulator counters
are both sampled every 0.25 s); peak RSS above the baseline taken after imports and before the
waits exist (sampled every 50 ms, cross-checked with ``ru_maxrss``); TCP connections the
emulator's server accepted, and the most open at once; errors (events that are not a success,
exceptions, missing events); and the delay from a task's completion on the emulator's clock to
the moment its event is yielded.

With ``--repeat R`` every N runs each poller R times, in rounds (one of each poller per round, so
a noisy moment of the shared machine hits every poller alike), and each figure is the median of
its R runs.

Run: ``python benchmarks/bench_triggerer.py [--quick] [--n 1000 --n 5000] [--interval 2] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import importlib
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BenchResult,
    EmulatorProcess,
    Row,
    Worker,
    cpu_seconds,
    emit,
    fmt,
    interpolate,
    maxrss_bytes,
    median,
    peer_installed,
    percentile,
    raise_open_file_limit,
    ratio,
    rss_bytes,
    venv_env,
    verdict,
)

POLLERS = ("kirin", "http_provider", "session_per_poll", "shared_session")
LABELS = {
    "kirin": "KirinTaskTrigger",
    "http_provider": "HttpSensorTrigger",
    "session_per_poll": "aiohttp session per poll",
    "shared_session": "aiohttp shared session (floor)",
}
FULL_N = (1000, 5000)
QUICK_N = (100, 1000)
JITTER = 0.1  # the provider's polling.POLL_JITTER: the first poll's random phase, x interval
#: Targets of the issues (21: the per-check cost back under its bound).
RSS_TARGET_KB = 15.0
VS_SESSION_PER_POLL = 0.45
VS_FLOOR = 1.3
LATENCY_AT_N = 1000
ERRORS_AT_N = 5000
#: Per-wait targets (RSS, CPU per poll) are judged from this N up: below it, fixed costs (the shared
#: session and its connection pool; per-second timers and cold caches at 50 polls/s) dominate.
JUDGE_AT_N = 1000


# -- worker side (one process per poller and N) ----------------------------------------------------
async def _wait_kirin(task: dict[str, Any], ctx: dict[str, Any]) -> str:
    trigger = ctx["triggers"][task["task_id"]]
    async for event in trigger.run():
        return str(event.payload.get("status"))
    return "no event"


async def _wait_http_provider(task: dict[str, Any], ctx: dict[str, Any]) -> str:
    trigger = ctx["triggers"][task["task_id"]]
    async for event in trigger.run():
        return "success" if event.payload is True else f"event {event.payload!r}"
    return "no event"


def _status_of(status: int, body: bytes) -> str | None:
    if status != 200:
        raise RuntimeError(f"HTTP {status}")
    value = json.loads(body)["status"]
    return str(value) if value in ("completed", "failed") else None


async def _poll_loop(
    get: Callable[[], Awaitable[tuple[int, bytes]]], interval: float, deadline: float
) -> str:
    """Our trigger's schedule: a random first-poll phase of up to 10 % of ``interval``, then one poll
    every ``interval`` until a final status (a poll that raises counts as an error)."""
    errors = 0
    await asyncio.sleep(random.uniform(0.0, JITTER * interval))
    while True:
        try:
            final = _status_of(*await get())
        except Exception as err:
            errors += 1
            if errors >= 5:
                return f"error {type(err).__name__}"
        else:
            if final is not None:
                return "success" if final == "completed" else final
        if time.time() >= deadline:
            return "timeout"
        await asyncio.sleep(interval)


async def _wait_session_per_poll(task: dict[str, Any], ctx: dict[str, Any]) -> str:
    import aiohttp

    url, headers = ctx["url"] + f"/v1/tasks/{task['task_id']}", ctx["headers"]

    async def get() -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
            return response.status, await response.read()

    return await _poll_loop(get, ctx["interval"], ctx["deadline"])


async def _wait_shared_session(task: dict[str, Any], ctx: dict[str, Any]) -> str:
    url, headers, session = ctx["url"] + f"/v1/tasks/{task['task_id']}", ctx["headers"], ctx["session"]

    async def get() -> tuple[int, bytes]:
        async with session.get(url, headers=headers) as response:
            return response.status, await response.read()

    return await _poll_loop(get, ctx["interval"], ctx["deadline"])


WAITERS: dict[str, Callable[[dict[str, Any], dict[str, Any]], Awaitable[str]]] = {
    "kirin": _wait_kirin,
    "http_provider": _wait_http_provider,
    "session_per_poll": _wait_session_per_poll,
    "shared_session": _wait_shared_session,
}


#: Modules each worker imports before its baseline, so the baseline holds the code but no wait.
#: The references import Airflow's trigger base too: every trigger lives in a triggerer process
#: with Airflow loaded, and that heap is what each full garbage collection has to walk.
MODULES = {
    "kirin": ("aiohttp", "airflow_provider_kirin.triggers.kirin", "airflow_provider_kirin.hooks.kirin"),
    "http_provider": ("aiohttp", "airflow.providers.http.triggers.http"),
    "session_per_poll": ("aiohttp", "airflow.triggers.base"),
    "shared_session": ("aiohttp", "airflow.triggers.base"),
}


def available_pollers() -> list[str]:
    """Every poller, less the peer when ``apache-airflow-providers-http`` is not installed."""
    return [p for p in POLLERS if p != "http_provider" or peer_installed()]


def _import_poller(poller: str) -> None:
    for name in MODULES[poller]:
        importlib.import_module(name)


def _make_context(poller: str, tasks: list[dict[str, Any]], spec: dict[str, Any]) -> dict[str, Any]:
    now = time.time()
    ctx: dict[str, Any] = {
        "url": spec["url"],
        "headers": {"Authorization": f"Bearer {spec['api_key']}", "Accept": "application/json"},
        "interval": spec["interval"],
        "deadline": spec["deadline"],
    }
    if poller == "kirin":
        from airflow_provider_kirin.triggers.kirin import KirinTaskTrigger

        ctx["triggers"] = {
            t["task_id"]: KirinTaskTrigger(
                t["task_id"], poll_interval=spec["interval"], deadline=spec["deadline"], first_poll_at=now
            )
            for t in tasks
        }
    elif poller == "http_provider":
        from airflow.providers.http.triggers.http import HttpSensorTrigger

        ctx["triggers"] = {
            t["task_id"]: HttpSensorTrigger(
                endpoint=f"v1/files/{t['task_id']}/video.mp4",
                http_conn_id="http_default",
                method="GET",
                headers={"Authorization": f"Bearer {spec['api_key']}"},
                poke_interval=spec["interval"],
            )
            for t in tasks
        }
    elif poller == "shared_session":
        import aiohttp

        ctx["session"] = aiohttp.ClientSession()
    return ctx


async def _sample(stop: asyncio.Event, peak: list[int], cpu: list[tuple[float, float]]) -> None:
    """RSS every 50 ms (for the peak), CPU time every 250 ms (for steady-state windows)."""
    tick = 0
    while not stop.is_set():
        peak[0] = max(peak[0], rss_bytes())
        if tick % 5 == 0:
            cpu.append((time.time(), cpu_seconds()))
        tick += 1
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


async def _drive(poller: str, tasks: list[dict[str, Any]], spec: dict[str, Any]) -> dict[str, Any]:
    """Create the N waits, run them to their events, and measure the worker while they run."""
    gc.collect()
    baseline_rss, baseline_maxrss = rss_bytes(), maxrss_bytes()
    peak = [baseline_rss]
    cpu_timeline: list[tuple[float, float]] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample(stop, peak, cpu_timeline))
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    ctx = _make_context(poller, tasks, spec)
    waiter = WAITERS[poller]
    event_at: dict[str, float] = {}
    outcomes: Counter[str] = Counter()

    async def one(task: dict[str, Any]) -> None:
        try:
            outcome = await waiter(task, ctx)
        except Exception as err:
            outcome = f"exception {type(err).__name__}: {err}"[:200]
        event_at[task["task_id"]] = time.time()
        outcomes[outcome] += 1

    runs = [asyncio.ensure_future(one(t)) for t in tasks]
    _, pending = await asyncio.wait(runs, timeout=spec["deadline"] - time.time() + 15)
    for run in pending:
        run.cancel()
    if "session" in ctx:
        await ctx["session"].close()
    cpu1, wall1 = cpu_seconds(), time.perf_counter()
    stop.set()
    await sampler
    peak_maxrss = maxrss_bytes()
    latencies = [event_at[t["task_id"]] - t["done_at"] for t in tasks if t["task_id"] in event_at]
    errors = len(tasks) - outcomes.get("success", 0)
    return {
        "n": len(tasks),
        "ok": outcomes.get("success", 0),
        "errors": errors,
        "outcomes": dict(outcomes.most_common(5)),
        "missing": len(pending),
        "cpu_s": cpu1 - cpu0,
        "wall_s": wall1 - wall0,
        "baseline_rss": baseline_rss,
        "peak_rss": peak[0],
        # ru_maxrss only counts when it grew during the run (else it is the imports' peak).
        "peak_maxrss": peak_maxrss if peak_maxrss > baseline_maxrss else None,
        "latencies": latencies,
        "cpu_timeline": cpu_timeline,
    }


def worker_main(poller: str) -> int:
    """Worker process: import, report ready, read the tasks from stdin, drive, report the result."""
    raise_open_file_limit()
    _import_poller(poller)
    emit("ready", {"rss": rss_bytes()})
    spec = json.loads(sys.stdin.readline())
    tasks = spec.pop("tasks")
    result = asyncio.run(_drive(poller, tasks, spec))
    emit("done", result)
    return 0


# -- orchestrator side ---------------------------------------------------------------------------
@dataclass
class PhaseResult:
    """One poller at one N: the worker's measurements and the emulator's counters."""

    poller: str
    n: int
    interval: float
    worker: dict[str, Any]
    polls: int
    creates: int
    connections: int
    connections_peak: int
    emulator_cpu_s: float
    latencies: list[float] = field(default_factory=list, repr=False)
    #: CPU seconds per 1,000 polls while every wait is polling and none has finished.
    steady_cpu_per_1000: float | None = None

    @property
    def errors(self) -> int:
        return int(self.worker["errors"])

    @property
    def cpu_per_1000(self) -> float | None:
        """Whole run: from creating the triggers to the last event, per 1,000 polls."""
        return 1000 * self.worker["cpu_s"] / self.polls if self.polls else None

    @property
    def rss_per_trigger_kb(self) -> float:
        peak = max(self.worker["peak_rss"], self.worker["peak_maxrss"] or 0)
        return (peak - self.worker["baseline_rss"]) / self.n / 1024

    def latency(self, q: float) -> float | None:
        return percentile(self.latencies, q)


def steady_cpu_per_1000(
    cpu: Sequence[tuple[float, float]],
    polls: Sequence[tuple[float, float]],
    n: int,
    first_done: float,
    min_window: float = 2.0,
) -> float | None:
    """CPU per 1,000 polls in the steady state: from 0.5 s after the emulator has counted ``n``
    polls (each wait has started and polled once, on average) to 0.25 s before the first task
    completes. ``None`` when that window is shorter than ``min_window`` seconds or holds fewer
    than ``n / 2`` polls."""
    start = next((t for t, count in polls if count >= n), None)
    if start is None:
        return None
    start, end = start + 0.5, first_done - 0.25
    if end - start < min_window:
        return None
    c0, c1 = interpolate(cpu, start), interpolate(cpu, end)
    p0, p1 = interpolate(polls, start), interpolate(polls, end)
    if c0 is None or c1 is None or p0 is None or p1 is None or p1 - p0 < max(50, n / 2):
        return None  # too few polls in the window (a poller far behind its schedule)
    return 1000 * (c1 - c0) / (p1 - p0)


async def _create_tasks(url: str, api_key: str, n: int, tag: str) -> list[dict[str, Any]]:
    """Create ``n`` tasks through the API (32 at a time); return their envelopes."""
    import aiohttp

    from airflow_provider_kirin.emulator.config import MODEL_ID  # light: no Airflow import here

    headers = {"Authorization": f"Bearer {api_key}"}
    body = {"model": MODEL_ID, "prompt": "benchmark", "duration": "5"}
    semaphore = asyncio.Semaphore(32)
    created: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:

        async def create(i: int) -> None:
            async with (
                semaphore,
                session.post(
                    url + "/v1/videos/generations",
                    json={**body, "external_task_id": f"{tag}-{i}"},
                    headers=headers,
                ) as response,
            ):
                envelope = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"create failed: HTTP {response.status} {envelope}")
                created.append(envelope)

        await asyncio.gather(*(create(i) for i in range(n)))
    return created


def create_staggered(
    emu: EmulatorProcess, n: int, interval: float, processing: float, tag: str, groups: int = 20
) -> list[dict[str, Any]]:
    """Create ``n`` tasks whose generation times are spread evenly over one poll interval (in
    ``groups`` steps from ``processing`` seconds), so completions fall at every phase of the poll
    cycle. Returns ``[{"task_id", "done_at"}]`` with the completion time on the emulator's clock."""
    groups = max(1, min(n, groups))
    tasks: list[dict[str, Any]] = []
    for k in range(groups):
        count = n // groups + (1 if k < n % groups else 0)
        seconds = processing + k * interval / groups
        emu.configure(processing_seconds=seconds)
        for e in asyncio.run(_create_tasks(emu.url, emu.api_key, count, f"{tag}-{k}")):
            created = dt.datetime.fromisoformat(e["created_at"]).timestamp()
            tasks.append({"task_id": e["task_id"], "done_at": created + seconds})
    return tasks


def run_phase(
    emu: EmulatorProcess, poller: str, n: int, interval: float, processing: float, workdir: Path
) -> PhaseResult:
    """Run one poller over ``n`` fresh tasks in a fresh worker process."""
    env = venv_env(
        AIRFLOW_CONN_KIRIN_DEFAULT=emu.conn_json,
        AIRFLOW_CONN_HTTP_DEFAULT=json.dumps({"conn_type": "http", "host": emu.url}),
    )
    log = workdir / f"worker-{poller}-{n}.log"
    worker = Worker([str(Path(__file__).resolve()), "--worker", poller], log, env)
    try:
        worker.expect("ready", timeout=120)
        emu.reset()
        tasks = create_staggered(emu, n, interval, processing, f"{poller}-{n}")
        before = emu.stats()
        deadline = time.time() + processing + max(60.0, 6 * interval)
        spec = {"url": emu.url, "api_key": emu.api_key, "interval": interval, "deadline": deadline}
        worker.send({"tasks": tasks, **spec})
        result = worker.expect("done", timeout=deadline - time.time() + 60)
        worker.wait(30)
        after = emu.stats()
        timeline = emu.timeline()
    finally:
        worker.close()
    polls_key = "downloads" if poller == "http_provider" else "gets"
    column = 2 if poller == "http_provider" else 1
    polls_over_time = [(x[0], float(x[column] - before[polls_key])) for x in timeline]
    steady = steady_cpu_per_1000(
        [tuple(x) for x in result["cpu_timeline"]], polls_over_time, n, min(t["done_at"] for t in tasks)
    )
    return PhaseResult(
        poller=poller,
        n=n,
        interval=interval,
        worker={k: v for k, v in result.items() if k not in ("latencies", "cpu_timeline")},
        polls=after[polls_key] - before[polls_key],
        creates=after["creates"],
        connections=after["connections_opened"] - before["connections_opened"],
        connections_peak=after["connections_peak"],
        emulator_cpu_s=after["cpu_seconds"] - before["cpu_seconds"],
        latencies=list(result["latencies"]),
        steady_cpu_per_1000=steady,
    )


@dataclass
class MedianPhase:
    """The median of several runs of one poller at one N, read like a :class:`PhaseResult`."""

    runs: list[PhaseResult]

    def _median(self, value: Callable[[PhaseResult], float | None]) -> float | None:
        return median([v for run in self.runs if (v := value(run)) is not None])

    @property
    def n(self) -> int:
        return self.runs[0].n

    @property
    def interval(self) -> float:
        return self.runs[0].interval

    @property
    def worker(self) -> dict[str, Any]:
        return {"wall_s": self._median(lambda r: r.worker["wall_s"]), "errors": self.errors}

    @property
    def polls(self) -> float:
        return self._median(lambda r: r.polls) or 0.0

    @property
    def errors(self) -> int:
        return max(run.errors for run in self.runs)

    @property
    def cpu_per_1000(self) -> float | None:
        return self._median(lambda r: r.cpu_per_1000)

    @property
    def steady_cpu_per_1000(self) -> float | None:
        return self._median(lambda r: r.steady_cpu_per_1000)

    @property
    def rss_per_trigger_kb(self) -> float:
        return self._median(lambda r: r.rss_per_trigger_kb) or 0.0

    @property
    def connections(self) -> float | None:
        return self._median(lambda r: r.connections)

    @property
    def connections_peak(self) -> float | None:
        return self._median(lambda r: r.connections_peak)

    def latency(self, q: float) -> float | None:
        return percentile([x for run in self.runs for x in run.latencies], q)


def _cpu_rows(
    b: str, label: str, ours: float | None, spp: float | None, floor: float | None, judged: bool
) -> list[Row]:
    """Ours against the two references (targets: <= 0.6x session-per-poll, <= 2x the floor)."""
    r_spp, r_floor = ratio(ours, spp), ratio(ours, floor)
    if not judged:
        r_spp_ok = r_floor_ok = None
    else:
        r_spp_ok = None if r_spp is None else r_spp <= VS_SESSION_PER_POLL
        r_floor_ok = None if r_floor is None else r_floor <= VS_FLOOR
    return [
        Row(
            b,
            f"CPU/poll {label} vs session-per-poll",
            fmt(ours, 3, "ms"),
            fmt(spp, 3, "ms"),
            fmt(r_spp, 2, "x"),
            f"<= {VS_SESSION_PER_POLL}x" if judged else "",
            verdict(r_spp_ok),
        ),
        Row(
            b,
            f"CPU/poll {label} vs shared-session floor",
            fmt(ours, 3, "ms"),
            fmt(floor, 3, "ms"),
            fmt(r_floor, 2, "x"),
            f"<= {VS_FLOOR}x" if judged else "",
            verdict(r_floor_ok),
        ),
    ]


def rows_for(n: int, phases: dict[str, PhaseResult] | dict[str, MedianPhase]) -> list[Row]:
    """The table rows of one N: ours beside the peer (if installed), plus the two references."""
    ours, peer = phases["kirin"], phases.get("http_provider")
    spp, floor = phases["session_per_poll"], phases["shared_session"]
    b = f"triggerer N={n:,}"
    rows: list[Row] = []

    def of(phase: Any, value: Callable[[Any], Any]) -> Any:
        return None if phase is None else value(phase)

    def add(metric: str, value: Callable[[Any], Any], digits: int, unit: str = "", **kw: str) -> None:
        a, p = value(ours), of(peer, value)
        shown = fmt(p, digits, unit) if peer is not None else "peer not installed"
        rows.append(Row(b, metric, fmt(a, digits, unit), shown, fmt(ratio(a, p), 2, "x"), **kw))

    add("wall time", lambda x: x.worker["wall_s"], 1, "s")
    add("polls (emulator count)", lambda x: x.polls, 0)
    add("polls per wait", lambda x: x.polls / n, 1)
    add("CPU per 1,000 polls (whole run)", lambda x: x.cpu_per_1000, 3, "s")
    add("CPU per 1,000 polls (steady state)", lambda x: x.steady_cpu_per_1000, 3, "s")
    judged = n >= JUDGE_AT_N
    rows += _cpu_rows(b, "(whole run)", ours.cpu_per_1000, spp.cpu_per_1000, floor.cpu_per_1000, judged)
    rows += _cpu_rows(
        b, "(steady)", ours.steady_cpu_per_1000, spp.steady_cpu_per_1000, floor.steady_cpu_per_1000, judged
    )
    add(
        "peak RSS per wait above baseline",
        lambda x: x.rss_per_trigger_kb,
        1,
        "KB",
        target=f"< {RSS_TARGET_KB:.0f} KB" if judged else "",
        result=verdict(ours.rss_per_trigger_kb < RSS_TARGET_KB) if judged else "",
    )
    add("peak RSS above baseline", lambda x: x.rss_per_trigger_kb * n / 1024, 1, "MB")
    add("TCP connections opened", lambda x: x.connections, 0)
    add("TCP connections open at once, most", lambda x: x.connections_peak, 0)
    judged = n >= ERRORS_AT_N
    add(
        "errors",
        lambda x: x.errors,
        0,
        target="0" if judged else "",
        result=verdict(ours.errors == 0) if judged else "",
    )
    limit = ours.interval * (1 + JITTER)
    add("completion -> event p50", lambda x: x.latency(50), 2, "s")
    add("completion -> event p95", lambda x: x.latency(95), 2, "s")
    mx = ours.latency(100)
    judged = n == LATENCY_AT_N
    add(
        "completion -> event max",
        lambda x: x.latency(100),
        2,
        "s",
        target=f"<= {limit:.1f} s" if judged else "",
        result=verdict(mx is not None and mx <= limit) if judged else "",
    )
    return rows


def run(
    n_values: Sequence[int],
    interval: float,
    processing: float,
    workdir: Path | None = None,
    repeat: int = 1,
) -> BenchResult:
    """All pollers at every N against one emulator process, ``repeat`` rounds each; returns table
    rows (medians of the rounds) and raw figures (every round)."""
    rows: list[Row] = []
    raw: dict[str, Any] = {"interval": interval, "processing": processing, "repeat": repeat, "phases": []}
    with (
        tempfile.TemporaryDirectory(prefix="kirin-bench-trig-") as tmp,
        EmulatorProcess(pending_seconds=0.0, processing_seconds=processing) as emu,
    ):
        raw["emulator"] = {k: emu.info[k] for k in ("http", "loop")}
        work = workdir or Path(tmp)
        for n in n_values:
            runs: dict[str, list[PhaseResult]] = {}
            for round_no in range(repeat):
                for poller in available_pollers():
                    phase = run_phase(emu, poller, n, interval, processing, work)
                    runs.setdefault(poller, []).append(phase)
                    raw["phases"].append(
                        {
                            "poller": poller,
                            "n": n,
                            "round": round_no,
                            "polls": phase.polls,
                            "creates": phase.creates,
                            "connections": phase.connections,
                            "connections_peak": phase.connections_peak,
                            "emulator_cpu_s": phase.emulator_cpu_s,
                            "cpu_per_1000_polls_s": phase.cpu_per_1000,
                            "steady_cpu_per_1000_polls_s": phase.steady_cpu_per_1000,
                            "rss_per_trigger_kb": phase.rss_per_trigger_kb,
                            "latency_p50": phase.latency(50),
                            "latency_max": phase.latency(100),
                            **phase.worker,
                        }
                    )
                    print(
                        f"  triggerer N={n} round {round_no + 1}/{repeat} {LABELS[poller]}: "
                        f"{phase.worker['wall_s']:.1f} s, {phase.polls} polls, "
                        f"cpu {phase.worker['cpu_s']:.2f} s "
                        f"(steady {fmt(phase.steady_cpu_per_1000, 3)} ms/poll), "
                        f"errors {phase.errors}, emulator cpu {phase.emulator_cpu_s:.1f} s",
                        flush=True,
                    )
            rows.extend(rows_for(n, {poller: MedianPhase(phases) for poller, phases in runs.items()}))
    return BenchResult(rows, raw, notes(interval, processing, repeat))


def notes(interval: float, processing: float, repeat: int = 1) -> list[str]:
    return [
        f"Each figure is the median of {repeat} rounds (one run of every poller per round)."
        if repeat > 1
        else "One round per poller.",
        f"Triggerer: each wait's task completes {processing:.0f}-{processing + interval:.0f} s after "
        f"creation (spread over one poll interval); poll interval {interval:g} s; first poll at once. Peer = "
        "`HttpSensorTrigger` on the task's video URL (404 until completed); references = bare aiohttp "
        "polling the status URL with a new session per poll / one shared session.",
        "CPU/poll (whole run) = worker CPU from creating the waits to the last event / polls the emulator "
        "served; (steady) = the same over the window where every wait is polling and none has finished, "
        "so per-wait setup (connection lookup, logging, hook) is excluded.",
        "Connections are counted by the emulator's server as it accepts them (`connection_made`).",
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"N = {QUICK_N}, shorter generations")
    parser.add_argument("--n", type=int, action="append", help=f"N (repeatable; default {FULL_N})")
    parser.add_argument("--interval", type=float, default=2.0, help="poll interval, s (default 2)")
    parser.add_argument("--processing", type=float, default=None, help="generation time, s (20; quick 10)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds per N; figures are medians (default 1)")
    parser.add_argument("--json", type=Path, help="also write the rows and raw figures here")
    parser.add_argument("--worker", choices=POLLERS, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    n_values = args.n or (QUICK_N if args.quick else FULL_N)
    processing = args.processing if args.processing is not None else (10.0 if args.quick else 20.0)
    result = run(n_values, args.interval, processing, repeat=args.repeat)
    return result.report(args.json)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
