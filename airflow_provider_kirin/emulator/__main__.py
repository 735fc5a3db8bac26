"""Command line: run the Kirin emulator until SIGINT/SIGTERM.

Example::

    python -m airflow_provider_kirin.emulator --port 8765 --processing-seconds 2 \\
        --fault '{"endpoint": "create", "kind": "http_error", "status": 429, "retry_after": "1"}'

Prints one line, ``Kirin emulator listening on http://127.0.0.1:8765 (api key: ...)`` (the
control plane is at that URL's ``/_emulator``; API paths follow ``--path-prefix``), and with
``--print-conn`` a second one, ``AIRFLOW_CONN_KIRIN_DEFAULT='{...}'``, ready for ``export``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import signal
import sys
import threading
from types import FrameType

from airflow_provider_kirin.emulator.config import DEFAULT_API_KEY, EmulatorConfig
from airflow_provider_kirin.emulator.faults import Fault


def _fault(text: str) -> Fault:
    try:
        return Fault.from_dict(json.loads(text))
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise argparse.ArgumentTypeError(f"bad --fault {text!r}: {exc}") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_kirin.emulator", description="Local Kirin V2.5 Turbo API emulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--pending-seconds", type=float, default=1.0)
    parser.add_argument("--processing-seconds", type=float, default=4.0)
    parser.add_argument("--path-prefix", default="", help='e.g. "/gateway"')
    parser.add_argument("--download-base-url", default=None, help='e.g. "http://localhost:{port}"')
    parser.add_argument(
        "--fault", action="append", type=_fault, default=[], metavar="JSON", help="fault rule (repeatable)"
    )
    parser.add_argument(
        "--http", choices=["auto", "h11", "httptools"], default="auto", help="auto: httptools if installed"
    )
    parser.add_argument(
        "--loop", choices=["auto", "asyncio", "uvloop"], default="auto", help="auto: uvloop if installed"
    )
    parser.add_argument("--print-conn", action="store_true", help="also print AIRFLOW_CONN_KIRIN_DEFAULT=...")
    return parser


def raise_open_file_limit() -> None:
    """Lift the soft open-file limit to the hard one (thousands of pollers need descriptors)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from airflow_provider_kirin.emulator.server import EmulatorServer

    try:
        config = EmulatorConfig(
            api_key=args.api_key,
            pending_seconds=args.pending_seconds,
            processing_seconds=args.processing_seconds,
            path_prefix=args.path_prefix,
            download_base_url=args.download_base_url,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    raise_open_file_limit()
    server = EmulatorServer(config, host=args.host, port=args.port, http=args.http, loop=args.loop)
    server.add_faults(list(args.fault))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    server.start()
    prefix = f", path prefix: {config.path_prefix}" if config.path_prefix else ""
    print(f"Kirin emulator listening on {server.url} (api key: {server.api_key}{prefix})", flush=True)
    if args.print_conn:
        print(f"AIRFLOW_CONN_KIRIN_DEFAULT={shlex.quote(server.airflow_conn_json())}", flush=True)
    try:
        while not stop.wait(0.5):
            if not server.running:
                print("error: the emulator stopped unexpectedly", file=sys.stderr)
                return 1
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
