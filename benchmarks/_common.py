"""Shared helpers of the benchmarks: result rows and tables, machine facts, process measurements,
and the emulator run in its own process.

The emulator process (``python benchmarks/_common.py emulator ...``) is the bundled
:class:`~airflow_provider_kirin.emulator.EmulatorServer` with one addition: its uvicorn protocol
class is subclassed to count TCP connections as the server accepts them (``connection_made``) and
closes them (``connection_lost``). That is the connection count the benchmarks report: exact, on
the server side, and independent of how the client builds its sessions. The benchmark drives the
process through its stdin/stdout with one JSON object per line (``stats``, ``reset``,
``configure``, ``fault``, ``quit``), so control traffic opens no connection and is never counted.

Example::

    with EmulatorProcess(pending_seconds=0, processing_seconds=20) as emu:
        before = emu.stats()
        ...  # poll emu.url with emu.api_key
        after = emu.stats()
        opened = after["connections_opened"] - before["connections_opened"]
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
#: Prefix of the machine-readable lines a benchmark worker prints (everything else is its log).
MARKER = "@@BENCH "


# -- results ---------------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the results table: a metric, our figure, the peer's, and the verdict."""

    bench: str
    metric: str
    ours: str
    peer: str = ""
    ratio: str = ""
    target: str = ""
    result: str = ""

    def as_list(self) -> list[str]:
        return [self.bench, self.metric, self.ours, self.peer, self.ratio, self.target, self.result]


@dataclass
class BenchResult:
    """What one benchmark returns: its table rows, notes printed under the table, raw figures."""

    rows: list[Row]
    raw: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"rows": rows_to_json(self.rows), "notes": self.notes, "raw": self.raw}

    def print(self) -> None:
        print(markdown_table(self.rows))
        for note in self.notes:
            print(f"- {note}")

    def report(self, json_path: Path | None) -> int:
        """Print the table and, if asked, write the JSON form (what every script's main ends with)."""
        self.print()
        if json_path:
            json_path.write_text(json.dumps(self.to_json(), indent=2))
        return 0


HEADERS = ["Benchmark", "Metric", "Ours", "Peer / reference", "Ours/peer", "Target", "Result"]


def verdict(ok: bool | None) -> str:
    """``PASS``/``MISS`` for a target, blank when there is none to judge (``None``)."""
    return "" if ok is None else ("PASS" if ok else "MISS")


def fmt(value: float | None, digits: int = 2, unit: str = "") -> str:
    """A number with ``digits`` decimals and an optional unit; ``-`` for a missing value."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{(' ' + unit) if unit else ''}"


def ratio(ours: float | None, peer: float | None) -> float | None:
    return None if ours is None or not peer else ours / peer


def markdown_table(rows: Iterable[Row]) -> str:
    """The rows as a GitHub-flavoured Markdown table (also readable as plain text)."""
    lines = [HEADERS, *(r.as_list() for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADERS))]

    def render(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [render(lines[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(render(line) for line in lines[1:])
    return "\n".join(out)


def rows_to_json(rows: Iterable[Row]) -> list[dict[str, str]]:
    return [asdict(r) for r in rows]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100, nearest rank) of ``values``; ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def interpolate(samples: Sequence[tuple[float, float]], t: float) -> float | None:
    """The value at time ``t`` of a ``[(time, value)]`` series sorted by time (linear between
    samples); ``None`` outside the sampled span."""
    for (t0, v0), (t1, v1) in itertools.pairwise(samples):
        if t0 <= t <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return None


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


# -- machine and process facts ---------------------------------------------------------------------
def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def peer_installed() -> bool:
    """Whether the peer, Airflow's HTTP provider, is installed (``make bench`` installs it)."""
    return _version("apache-airflow-providers-http") != "not installed"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def total_ram_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return None


def machine_info() -> dict[str, str]:
    """The facts RESULTS.md records about the machine and the software measured."""
    ram = total_ram_gib()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "ram": f"{ram:.1f} GiB" if ram is not None else "unknown",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "airflow": _version("apache-airflow"),
        "aiohttp": _version("aiohttp"),
        "apache-airflow-providers-http": _version("apache-airflow-providers-http"),
        "airflow-provider-kirin": _version("airflow-provider-kirin"),
        "uvicorn": _version("uvicorn"),
        "load average (1/5/15 min)": " / ".join(f"{x:.2f}" for x in load),
    }


def rss_bytes() -> int:
    """Current resident set size of this process (``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def maxrss_bytes(who: int = resource.RUSAGE_SELF) -> int:
    """Peak resident set size (``ru_maxrss``, KiB on Linux) in bytes."""
    return resource.getrusage(who).ru_maxrss * 1024


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU time of this process (or of its waited-for children)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of another process, from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_open_file_limit() -> int:
    """Lift the soft ``RLIMIT_NOFILE`` to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def emit(kind: str, payload: dict[str, Any]) -> None:
    """Print one machine-readable line for the parent process (on stderr: stdout carries logs)."""
    sys.stderr.write(MARKER + json.dumps({"kind": kind, **payload}) + "\n")
    sys.stderr.flush()


def venv_env(**extra: str) -> dict[str, str]:
    """The environment for benchmark subprocesses: this one, with Airflow kept quiet and offline."""
    env = dict(os.environ)
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def batch_items(prompts: Sequence[str], dag_id: str, run_id: str) -> list[Any]:
    """A batch's validated items with the ids ``KirinBatchTextToVideoOperator`` derives for them."""
    from types import SimpleNamespace

    from airflow_provider_kirin.core.batch import parse_items, with_derived_ids

    ti = SimpleNamespace(dag_id=dag_id, run_id=run_id, task_id="batch", map_index=-1)
    return with_derived_ids(parse_items(list(prompts), {}), {"ti": ti})


# -- the emulator in its own process -----------------------------------------------------------------
class EmulatorProcess:
    """The Kirin emulator in a child process (its CPU is not the benchmark's), with counters.

    Uses ``httptools`` and ``uvloop`` when installed (the fastest server), else ``h11``/asyncio.
    :meth:`timeline` the request counters sampled every 0.25 s. :meth:`stats` returns the
    emulator's ``stats()`` plus ``connections_opened`` (accepted since
    start), ``connections_open`` (now), ``connections_peak`` (most open at once, since the last
    :meth:`reset`) and ``cpu_seconds`` of the emulator process.
    """

    def __init__(
        self, pending_seconds: float = 0.0, processing_seconds: float = 20.0, start_timeout: float = 30.0
    ) -> None:
        self._args = [
            sys.executable,
            str(Path(__file__).resolve()),
            "emulator",
            f"--pending-seconds={pending_seconds}",
            f"--processing-seconds={processing_seconds}",
        ]
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self.info: dict[str, Any] = {}

    def start(self) -> EmulatorProcess:
        self._proc = subprocess.Popen(
            self._args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=venv_env(),
            cwd=REPO_ROOT,
        )
        self.info = self._read(self._start_timeout)
        return self

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def api_key(self) -> str:
        return str(self.info["api_key"])

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def conn_json(self) -> str:
        """``AIRFLOW_CONN_KIRIN_DEFAULT`` for this emulator."""
        return str(self.info["conn"])

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self._proc is not None
        assert self._proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self._proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            self.stop()
            raise RuntimeError("the emulator process did not answer (see its exit code)")
        return dict(json.loads(result[0]))

    def command(self, name: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        """Send one control command and return the emulator's answer."""
        with self._lock:
            assert self._proc is not None
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps({"cmd": name, **params}) + "\n")
            self._proc.stdin.flush()
            return self._read(timeout)

    def stats(self) -> dict[str, Any]:
        return self.command("stats")

    def reset(self) -> None:
        """Forget tasks and counters (connection totals keep counting; use differences)."""
        self.command("reset")

    def timeline(self) -> list[tuple[float, int, int]]:
        """``(time.time(), gets, downloads)`` every 0.25 s since the last :meth:`reset`."""
        return [
            (float(t), int(gets), int(downloads))
            for t, gets, downloads in self.command("timeline")["timeline"]
        ]

    def configure(self, **changes: Any) -> None:
        self.command("configure", changes=changes)

    def add_fault(self, **fault: Any) -> None:
        """A fault rule, e.g. ``add_fault(endpoint="any", kind="delay", seconds=0.2, times=-1)``."""
        self.command("fault", fault=fault)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            proc.stdin.close()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _ConnectionCounter:
    """Connections the emulator's server accepted and closed (updated on the server's thread)."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0
        self.peak = 0

    @property
    def open(self) -> int:
        return self.opened - self.closed

    def made(self) -> None:
        self.opened += 1
        self.peak = max(self.peak, self.open)

    def lost(self) -> None:
        self.closed += 1


def _install_connection_counter(counter: _ConnectionCounter) -> None:
    """Make the emulator's uvicorn protocol class count connections (patched in this process only)."""
    from airflow_provider_kirin.emulator import transport

    original = transport.protocol_class

    def counting_protocol_class(http: str = "h11") -> type[Any]:
        base: type[Any] = original(http)

        class CountingProtocol(base):
            def connection_made(self, transport: Any) -> None:
                counter.made()
                super().connection_made(transport)

            def connection_lost(self, exc: Exception | None) -> None:
                counter.lost()
                super().connection_lost(exc)

        return CountingProtocol

    transport.protocol_class = counting_protocol_class


def serve_emulator(argv: Sequence[str]) -> int:
    """Entry point of the emulator process: serve, answer commands on stdin, stop on ``quit``/EOF."""
    import argparse
    import importlib.util

    parser = argparse.ArgumentParser(prog="_common.py emulator")
    parser.add_argument("--pending-seconds", type=float, default=0.0)
    parser.add_argument("--processing-seconds", type=float, default=20.0)
    args = parser.parse_args(argv)

    from airflow_provider_kirin.emulator import EmulatorConfig, EmulatorServer

    raise_open_file_limit()
    counter = _ConnectionCounter()
    _install_connection_counter(counter)
    fast = {
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
    }
    config = EmulatorConfig(pending_seconds=args.pending_seconds, processing_seconds=args.processing_seconds)
    server = EmulatorServer(
        config, backlog=8192, timeout_keep_alive=60, http=fast["http"], loop=fast["loop"]
    ).start()

    def reply(payload: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    timeline: list[tuple[float, int, int]] = []
    stopping = threading.Event()

    def sample() -> None:  # request counters over time, for steady-state windows
        while not stopping.wait(0.25):
            counters = server.state.counters
            timeline.append((time.time(), counters["gets"], counters["downloads"]))

    threading.Thread(target=sample, daemon=True).start()
    reply({"url": server.url, "api_key": server.api_key, "conn": server.airflow_conn_json(), **fast})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            name = command.get("cmd")
            if name == "quit":
                break
            if name == "stats":
                stats = server.stats()
                stats.update(
                    connections_opened=counter.opened,
                    connections_open=counter.open,
                    connections_peak=counter.peak,
                    cpu_seconds=cpu_seconds(),
                )
                reply(stats)
            elif name == "reset":
                server.reset()
                counter.peak = counter.open
                timeline.clear()
                reply({"ok": True})
            elif name == "timeline":
                reply({"timeline": list(timeline)})
            elif name == "configure":
                server.configure(**command.get("changes", {}))
                reply({"ok": True})
            elif name == "fault":  # e.g. {"endpoint": "any", "kind": "delay", "seconds": 0.2, "times": -1}
                server.add_fault(**command.get("fault", {}))
                reply({"ok": True})
            else:
                reply({"error": f"unknown command {name!r}"})
    finally:
        stopping.set()
        server.stop()
    return 0


# -- workers -----------------------------------------------------------------------------------------
class Worker:
    """A benchmark worker subprocess that reports through :func:`emit` lines on its stderr.

    Its stdout (Airflow's log output) goes to ``log_path``; the last unmarked stderr lines are kept
    for error messages.
    """

    def __init__(self, args: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.PIPE,
            text=True,
            env=env or venv_env(),
            cwd=REPO_ROOT,
        )
        self._messages: deque[dict[str, Any]] = deque()
        self._noise: deque[str] = deque(maxlen=40)
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                if line.startswith(MARKER):
                    self._messages.append(json.loads(line[len(MARKER) :]))
                else:
                    self._noise.append(line.rstrip())
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        """Wait for the worker's next message, which must be of ``kind``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._messages:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    self.kill()
                    raise RuntimeError(f"worker gave no {kind!r} message; stderr tail:\n{self.tail()}")
                self._cond.wait(min(left, 0.5))
            message = self._messages.popleft()
        if message.get("kind") != kind:
            raise RuntimeError(f"worker sent {message.get('kind')!r}, expected {kind!r}: {message}")
        return message

    def send(self, payload: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(payload) + "\n")
        self.proc.stdin.flush()

    def tail(self) -> str:
        return "\n".join(self._noise)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def close(self) -> None:
        self.kill()
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        self._log.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["emulator"]:
        sys.exit(serve_emulator(sys.argv[2:]))
    sys.exit("usage: python benchmarks/_common.py emulator [--pending-seconds S] [--processing-seconds S]")
