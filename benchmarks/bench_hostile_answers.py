"""What the largest answers the provider accepts cost the triggerer: a ``KirinTaskTrigger`` waiting
on a hostile server that answers every status check with a body just under ``max_response_bytes``
(1 MiB), in a fresh worker process per body.

Bodies: a million-entry ``output`` cut to what fits (about 330,000 empty entries), 1 MiB of video
URLs (about 6,500), a 1 MiB ``metadata`` object, a 1 MiB error message, and JSON nested deeper than
Python's recursion limit. Measured per body: the peak RSS growth of the worker over its baseline,
the longest the event loop was held (a 5 ms heartbeat's worst lateness), and the size of the
trigger's event and of the ``kirin_result`` XCom built from the task. The reference column is the
least any client pays for the same body: ``json.loads`` of it on the loop, in a fresh process,
measured the same way.

Targets (issue 18): no callback over 0.1 s; event and XCom under 16 KB.

Run: ``python benchmarks/bench_hostile_answers.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BenchResult, Row, fmt, rss_bytes, verdict

LIMIT = 1024 * 1024
CALLBACK_TARGET_S = 0.1
SIZE_TARGET = 16 * 1024
KEY = "hostile-bench-key-0123456789"


def bodies() -> dict[str, bytes]:
    """Each hostile answer, just under 1 MiB (over it, the provider refuses to read it)."""

    def envelope(**fields: Any) -> dict[str, Any]:
        return {"task_id": "kt_1", "status": "completed", **fields}

    def fit(make: Any, lo: int = 1, hi: int = 2_000_000) -> bytes:
        while lo < hi:  # the largest count whose body is under the limit
            mid = (lo + hi + 1) // 2
            if len(make(mid)) < LIMIT:
                lo = mid
            else:
                hi = mid - 1
        return bytes(make(lo))

    url = "https://cdn.example.com/v.mp4?sig=" + "s" * 100
    return {
        "outputs": fit(lambda n: json.dumps(envelope(output=[{}] * n), separators=(",", ":")).encode()),
        "video URLs": fit(
            lambda n: json.dumps(
                envelope(output=[{"content": [{"type": "video", "url": f"{url}&n={i}"}]} for i in range(n)])
            ).encode(),
            hi=20_000,
        ),
        "metadata": fit(
            lambda n: json.dumps(envelope(metadata={f"k{i}": i for i in range(n)})).encode(), hi=200_000
        ),
        "error text": fit(
            lambda n: json.dumps(
                {"task_id": "kt_1", "status": "failed", "error": {"code": "E", "error_message": "m" * n}}
            ).encode()
        ),
        "nesting": fit(
            lambda n: b'{"task_id":"kt_1","status":"completed","metadata":' + b"[" * n + b"]" * n + b"}"
        ),
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


async def _heartbeat(stop: asyncio.Event, worst: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.005)
        worst[0] = max(worst[0], time.perf_counter() - started - 0.005)


def _measure(mode: str, url: str, body: bytes, queue: Any) -> None:
    """In a fresh process: wait on the hostile server (``ours``) or only decode the body on the
    loop (``json.loads``); report RSS growth, loop lag, event and XCom sizes."""
    os.environ["AIRFLOW_CONN_KIRIN_DEFAULT"] = json.dumps(
        {"conn_type": "kirin", "host": url, "password": KEY, "extra": {"max_retries": 0}}
    )
    from airflow_provider_kirin.triggers.kirin import KirinTaskTrigger, task_from_event

    async def main() -> dict[str, Any]:
        gc.collect()
        baseline, peak = rss_bytes(), [rss_bytes()]
        stop, worst = asyncio.Event(), [0.0]
        beat = asyncio.create_task(_heartbeat(stop, worst))
        await asyncio.sleep(0.05)

        async def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], rss_bytes())
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample())
        event: dict[str, Any] = {}
        xcom: dict[str, Any] | None = None
        if mode == "ours":
            trigger = KirinTaskTrigger(
                "kt_1", poll_interval=0.5, deadline=time.time() + 3, max_poll_error_seconds=0
            )
            async for fired in trigger.run():
                event = dict(fired.payload)
                break
            if event.get("status") == "success":
                xcom = task_from_event(event).to_result()
        else:
            await asyncio.sleep(0)
            with contextlib.suppress(RecursionError):
                json.loads(body)  # the least any client does with the body, on the loop
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(beat, sampler)
        peak[0] = max(peak[0], rss_bytes())
        return {
            "rss_growth": peak[0] - baseline,
            "worst_lag": worst[0],
            "event_bytes": len(json.dumps(event, default=str).encode()),
            "xcom_bytes": len(json.dumps(xcom).encode()) if xcom is not None else 0,
            "status": event.get("status", "-"),
        }

    queue.put(asyncio.run(main()))


def run(quick: bool = False) -> BenchResult:
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    if quick:
        # Forked from a server that imported the trigger (and so Airflow) once: ten processes do not
        # each pay the import (about 3 CPU s apiece). A forked child's RSS growth is not comparable
        # with a fresh interpreter's, so only the quick run (the smoke test) does this.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["airflow_provider_kirin.triggers.kirin"])
    else:
        context = multiprocessing.get_context("spawn")
    for name, body in bodies().items():
        server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Handler,), {"body": body}))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        figures = {}
        for mode in ("ours", "json.loads"):
            queue = context.Queue()
            proc = context.Process(target=_measure, args=(mode, url, body, queue))
            proc.start()
            figures[mode] = queue.get(timeout=120)
            proc.join(30)
        server.shutdown()
        server.server_close()
        raw[name] = {"bytes": len(body), **figures}
        ours, ref = figures["ours"], figures["json.loads"]
        print(f"  {name} ({len(body):,} bytes): ours {ours}, json.loads {ref}", flush=True)
        b = f"hostile answer: {name} ({len(body) / 1024:.0f} KB)"
        mb = 1024 * 1024
        rows += [
            Row(
                b,
                "longest the event loop was held",
                fmt(ours["worst_lag"], 3, "s"),
                fmt(ref["worst_lag"], 3, "s"),
                "",
                f"<= {CALLBACK_TARGET_S} s",
                verdict(ours["worst_lag"] <= CALLBACK_TARGET_S),
            ),
            Row(
                b,
                "peak RSS growth",
                fmt(ours["rss_growth"] / mb, 1, "MB"),
                fmt(ref["rss_growth"] / mb, 1, "MB"),
            ),
            Row(
                b,
                f"trigger event ({ours['status']}) / kirin_result XCom",
                f"{ours['event_bytes']:,} / {ours['xcom_bytes']:,} B",
                "",
                "",
                "< 16 KB each",
                verdict(ours["event_bytes"] < SIZE_TARGET and ours["xcom_bytes"] < SIZE_TARGET),
            ),
        ]
    notes = [
        "Hostile answers: each body just under max_response_bytes (1 MiB) answers every status check; "
        "ours is a KirinTaskTrigger in a fresh process, the reference column `json.loads` of the same "
        "body on the loop in a fresh process (the least any client pays for it).",
    ]
    return BenchResult(rows, raw, notes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fork each measurement from a process with the provider imported (cheap; RSS figures "
        "then differ from a full run's)",
    )
    args = parser.parse_args(argv)
    return run(args.quick).report(args.json)


if __name__ == "__main__":
    sys.exit(main())
