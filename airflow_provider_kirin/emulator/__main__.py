"""Command line: run the Kirin emulator until SIGINT/SIGTERM.

Example::

    python -m airflow_provider_kirin.emulator --port 8765 --processing-seconds 2 \\
        --fault '{"endpoint": "create", "kind": "http_error", "status": 429, "retry_after": "1"}'

Prints one line, ``Kirin emulator listening on http://127.0.0.1:8765 (api key: ...)``: the
address it is bound to (the control plane is at its ``/_emulator``, behind the same key; API paths
follow ``--path-prefix``), and with ``--print-conn`` a second one,
``AIRFLOW_CONN_KIRIN_DEFAULT='{...}'``, ready for ``export``.

On loopback (the default) the key is ``kirin-emulator-key`` unless ``--api-key`` says otherwise.
Bound beyond loopback (``--host 0.0.0.0``, a LAN address) that well-known key is refused: a key
is generated and printed unless ``--api-key`` gives one, and a warning goes to stderr. Clients
must then use the bound address or a name given with ``--allowed-host``; callbacks go to loopback
only unless ``--callback-host`` names more.
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

from airflow_provider_kirin.emulator.config import DEFAULT_API_KEY, EmulatorConfig, is_loopback_host
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
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"default on loopback: {DEFAULT_API_KEY}; beyond loopback: a generated key, printed",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name to serve besides loopback ones and the bound address (repeatable)",
    )
    parser.add_argument(
        "--callback-host",
        action="append",
        default=[],
        metavar="NAME",
        help='a host callbacks may go to besides loopback ones; "*" for any (repeatable)',
    )
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

    loopback = is_loopback_host(args.host)
    if args.api_key == DEFAULT_API_KEY and not loopback:
        print(
            f"error: --api-key {DEFAULT_API_KEY} is well known; bound to {args.host}, beyond loopback, "
            "the emulator needs a key of its own (leave --api-key out to have one generated)",
            file=sys.stderr,
        )
        return 2
    try:
        config = EmulatorConfig(
            api_key=args.api_key or DEFAULT_API_KEY,  # beyond loopback the server generates one
            allowed_hosts=tuple(args.allowed_host),
            callback_hosts=tuple(args.callback_host),
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
    print(f"Kirin emulator listening on {server.bound_url} (api key: {server.api_key}{prefix})", flush=True)
    if not loopback:
        print(
            f"warning: bound to {args.host}, beyond loopback: anyone who can reach this machine on port "
            f"{server.port} can use the emulator with the key above. This machine reaches it at "
            f"{server.url}; other clients must use the bound address or a name given with --allowed-host.",
            file=sys.stderr,
            flush=True,
        )
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
