"""Download: stream a large file to disk with ``KirinHook.download_video`` versus ``curl -o``.

The emulator (its own process) serves ``/v1/files/blob?bytes=N``: N bytes of a fixed pattern,
streamed in 1 MiB chunks. Ours runs in one child process that imports the hook and resolves the
connection once, then runs ``download_video(url, path)`` on command, timing the call alone and
reporting its CPU and peak RSS (``ru_maxrss``). Curl is timed as a whole process
(``curl -s -o path url``), its CPU and peak RSS from ``wait4``. After an untimed warm-up the runs
alternate in ABBA order (ours, curl, curl, ours, ...), each started right after the previous
file was deleted, so both write into the same kind of page-cache memory. (This VM's balloon
device has free-page reporting on: pages freed more than about 2 s earlier are handed back to the
host and cost host faults, counted as system time, when written again. A client that starts
seconds after the last delete, e.g. a fresh Python importing Airflow, would be charged for that.)
The table shows medians, and the client CPU per GiB (user CPU is the steady figure). Each file's
size and a sample of its bytes are checked, and every file is deleted right after its run; all
files live in a temporary directory removed at the end.

Targets: at least 90 % of curl's throughput; peak RSS under 100 MB. Importing Airflow alone puts
a Python process near 120 MB before the first byte, so the memory target is judged on what the
download adds (peak minus the RSS just before it); the whole-process peak is shown beside it.

Run: ``python benchmarks/bench_download.py [--quick] [--mb 500] [--repeat 4] [--idle-repeat 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
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
    maxrss_bytes,
    median,
    ratio,
    rss_bytes,
    venv_env,
    verdict,
)

MB = 1024 * 1024
THROUGHPUT_TARGET = 0.9
RSS_TARGET_MB = 100.0


def child_main(chunk_kib: int | None = None) -> int:
    """In the child: import the hook, then download once per ``{"url", "path"}`` line on stdin.

    ``chunk_kib`` (an experiment, for evaluating a change to the package) overrides the
    package's read size, ``airflow_provider_kirin.io.storage.CHUNK_BYTES``, in this process only.
    """
    from airflow_provider_kirin.hooks.kirin import KirinHook

    if chunk_kib:
        import airflow_provider_kirin.io.storage as download

        download.CHUNK_BYTES = chunk_kib * 1024

    hook = KirinHook()
    _ = hook.config  # resolve the connection before any clock starts
    emit("ready", {"rss": rss_bytes()})
    for line in sys.stdin:
        job = json.loads(line)
        if not job:
            break
        cpu0, user0 = cpu_seconds(), resource.getrusage(resource.RUSAGE_SELF).ru_utime
        start = time.perf_counter()
        hook.download_video(job["url"], job["path"])
        seconds = time.perf_counter() - start
        cpu, user = cpu_seconds() - cpu0, resource.getrusage(resource.RUSAGE_SELF).ru_utime - user0
        emit("download", {"seconds": seconds, "cpu": cpu, "user": user, "maxrss": maxrss_bytes()})
    return 0


def _wait(proc: subprocess.Popen[Any], timeout: float) -> tuple[int, int, float, float]:
    """Reap ``proc`` with ``wait4``: exit status, peak RSS (bytes), CPU and user CPU seconds."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            proc.kill()
            _, _, usage = os.wait4(proc.pid, 0)
            proc.returncode = -9
            break
        time.sleep(0.002)
    return proc.returncode, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime, usage.ru_utime


def _check_file(path: Path, size: int) -> None:
    """The file has ``size`` bytes and byte ``i`` is ``i % 256`` (sampled at both ends)."""
    actual = path.stat().st_size
    if actual != size:
        raise RuntimeError(f"{path.name}: {actual} bytes, expected {size}")
    with path.open("rb") as f:
        head = f.read(4096)
        f.seek(max(0, size - 4096))
        tail_start = f.tell()
        tail = f.read()
    if head != bytes(i % 256 for i in range(len(head))) or tail != bytes(
        (tail_start + i) % 256 for i in range(len(tail))
    ):
        raise RuntimeError(f"{path.name}: content differs from the emulator's pattern")


def run_ours(child: Worker, url: str, path: Path, size: int, rss_before: int) -> dict[str, Any]:
    child.send({"url": url, "path": str(path)})
    data = child.expect("download", timeout=300)
    _check_file(path, size)
    path.unlink()
    return {
        "seconds": data["seconds"],
        "mb_s": size / MB / data["seconds"],
        "cpu_per_gb": data["cpu"] / (size / 1024**3),
        "user_per_gb": data["user"] / (size / 1024**3),
        "maxrss": data["maxrss"],
        "rss_before": rss_before,
        "added": data["maxrss"] - rss_before,
    }


def run_curl(url: str, path: Path, size: int) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.Popen(["curl", "-s", "-S", "-f", "-o", str(path), url])
    code, maxrss, cpu, user = _wait(proc, 300)
    seconds = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"curl failed with exit code {code}")
    _check_file(path, size)
    path.unlink()
    return {
        "seconds": seconds,
        "mb_s": size / MB / seconds,
        "cpu_per_gb": cpu / (size / 1024**3),
        "user_per_gb": user / (size / 1024**3),
        "maxrss": maxrss,
    }


def _alternate(
    child: Worker, url: str, tmp: Path, size: int, rss_before: int, repeat: int, idle: float, tag: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``repeat`` runs of each client in ABBA order, each started ``idle`` seconds after the last."""
    ours: list[dict[str, Any]] = []
    curl: list[dict[str, Any]] = []
    for i in range(repeat):
        pair = ["ours", "curl"] if i % 2 == 0 else ["curl", "ours"]  # ABBA: no slot bias
        for who in pair:
            time.sleep(idle)
            path = tmp / f"{tag}-{who}-{i}.mp4"
            if who == "ours":
                ours.append(run_ours(child, url, path, size, rss_before))
            else:
                curl.append(run_curl(url, path, size))
    return ours, curl


def _med(runs: list[dict[str, Any]], key: str, scale: float = 1.0) -> float | None:
    value = median([r[key] for r in runs])
    return None if value is None else value / scale


def _throughput_row(b: str, label: str, ours: list[dict[str, Any]], curl: list[dict[str, Any]]) -> Row:
    tp_ours, tp_curl = _med(ours, "mb_s"), _med(curl, "mb_s")
    tp_ratio = ratio(tp_ours, tp_curl)
    return Row(
        b,
        f"throughput, {label} (median of {len(ours)})",
        fmt(tp_ours, 0, "MB/s"),
        f"curl {fmt(tp_curl, 0, 'MB/s')}",
        fmt(tp_ratio, 2, "x"),
        f">= {THROUGHPUT_TARGET:.2f}x",
        verdict(tp_ratio is not None and tp_ratio >= THROUGHPUT_TARGET),
    )


def run(
    size_mb: int, repeat: int, idle_repeat: int = 2, idle: float = 3.0, chunk_kib: int | None = None
) -> BenchResult:
    """Ours against curl over one emulator: ``repeat`` back-to-back runs of each, then
    ``idle_repeat`` runs of each started after ``idle`` seconds without I/O."""
    if shutil.which("curl") is None:
        raise RuntimeError("curl is not installed")
    size = size_mb * MB
    with tempfile.TemporaryDirectory(prefix="kirin-bench-dl-") as tmp, EmulatorProcess() as emu:
        url = f"{emu.url}/v1/files/blob?bytes={size}"
        env = venv_env(AIRFLOW_CONN_KIRIN_DEFAULT=emu.conn_json, AIRFLOW_HOME=tmp)
        command = [
            str(Path(__file__).resolve()),
            "--child",
            *([f"--chunk-kib={chunk_kib}"] if chunk_kib else []),
        ]
        child = Worker(command, Path(tmp) / "child.log", env)
        try:
            rss_before = int(child.expect("ready", timeout=120)["rss"])
            run_curl(url, Path(tmp) / "warm-up.mp4", size)  # untimed: server and page cache warm
            ours, curl = _alternate(child, url, Path(tmp), size, rss_before, repeat, 0.0, "hot")
            idle_ours, idle_curl = _alternate(
                child, url, Path(tmp), size, rss_before, idle_repeat, idle, "idle"
            )
            child.send({})
            child.wait(30)
        finally:
            child.close()
        blobs = emu.stats()["blob_downloads"] - 1

    everything = ours + idle_ours
    added = max(r["added"] for r in everything) / MB
    peak = max(r["maxrss"] for r in everything)
    b = f"download {size_mb} MB"
    conditions = [("back to back", ours, curl)]
    if idle_ours:
        conditions.append((f"after {idle:g} s idle", idle_ours, idle_curl))
    rows = [
        *(_throughput_row(b, label, o, c) for label, o, c in conditions),
        Row(
            b,
            "time, back to back",
            fmt(_med(ours, "seconds"), 2, "s"),
            f"curl {fmt(_med(curl, 'seconds'), 2, 's')}",
        ),
        Row(
            b,
            "client user CPU per GiB",
            fmt(_med(everything, "user_per_gb"), 2, "s"),
            f"curl {fmt(_med(curl + idle_curl, 'user_per_gb'), 2, 's')}",
            fmt(ratio(_med(everything, "user_per_gb"), _med(curl + idle_curl, "user_per_gb")), 1, "x"),
        ),
    ]
    for label, o, c in conditions:
        rows.append(
            Row(
                b,
                f"client CPU (user + system) per GiB, {label}",
                fmt(_med(o, "cpu_per_gb"), 2, "s"),
                f"curl {fmt(_med(c, 'cpu_per_gb'), 2, 's')}",
                fmt(ratio(_med(o, "cpu_per_gb"), _med(c, "cpu_per_gb")), 1, "x"),
            )
        )
    rows += [
        Row(
            b,
            "peak RSS added by the downloads",
            fmt(added, 1, "MB"),
            "",
            "",
            f"< {RSS_TARGET_MB:.0f} MB",
            verdict(added < RSS_TARGET_MB),
        ),
        Row(
            b,
            "peak RSS of the process (ru_maxrss)",
            f"{fmt(peak / MB, 1, 'MB')} (before: {fmt(rss_before / MB, 1, 'MB')})",
            f"curl {fmt(_med(curl, 'maxrss', MB), 1, 'MB')}",
            fmt(ratio(peak, _med(curl, "maxrss")), 1, "x"),
        ),
        Row(b, "downloads served / complete files", f"{blobs} / {len(everything) + len(curl + idle_curl)}"),
    ]
    notes = [
        "Download: ours = `KirinHook.download_video` in a long-lived child process, timed around the "
        "call; curl = the whole `curl -o` process; same emulator blob URL, ABBA order. Back to back = "
        f"each run starts right after the previous file was deleted; after {idle:g} s idle = each run "
        "starts after a pause, when this VM's balloon (free-page reporting) has handed recently freed "
        "memory back to the host, so freshly faulted memory costs system time.",
    ]
    if chunk_kib:
        notes.append(f"EXPERIMENT: the package's download chunk size was overridden to {chunk_kib} KiB.")
    raw = {
        "size_mb": size_mb,
        "chunk_kib": chunk_kib,
        "ours": ours,
        "curl": curl,
        "idle_ours": idle_ours,
        "idle_curl": idle_curl,
    }
    return BenchResult(rows, raw, notes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100 MB instead of 500 MB")
    parser.add_argument("--mb", "--n", type=int, default=None, help="file size in MiB (500; quick 100)")
    parser.add_argument("--repeat", type=int, default=None, help="back-to-back runs of each (4; quick 2)")
    parser.add_argument("--idle-repeat", type=int, default=2, help="runs of each after 3 s idle (2)")
    parser.add_argument("--json", type=Path, help="also write the rows and raw figures here")
    parser.add_argument(
        "--chunk-kib", type=int, help="experiment: override the package's download chunk size (KiB)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.chunk_kib)
    repeat = args.repeat or (2 if args.quick else 4)
    size = args.mb or (100 if args.quick else 500)
    result = run(size, repeat, idle_repeat=args.idle_repeat, chunk_kib=args.chunk_kib)
    return result.report(args.json)


if __name__ == "__main__":
    sys.exit(main())
