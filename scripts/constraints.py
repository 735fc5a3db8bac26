#!/usr/bin/env python3
"""Make (and deliberately refresh) the complete per-line constraints files, the way Airflow's own are
made: resolve, prove, freeze.

    python3 scripts/constraints.py refresh [--test-deps "pytest ..."] [--keep-venv] 3.0.6 [3.1.8 ...]

(``make constraints-refresh`` runs it for every line, ``make constraints-refresh AIRFLOW=3.1.8`` for
one.) For each Airflow release given, in a throw-away venv ``.venv-constraints/<release>``:

1. ``pip install --upgrade pip`` and ``pip install -c constraints/caps/airflow-<line>.in
   "apache-airflow==<release>" -e . <test deps> <what the line must also cover>``: the newest
   packages the line's caps allow (the caps are the only hand-written input; each says why);
2. ``pip check``; ``pip freeze --all`` (minus this project) under a header saying how, when and on
   what it was made, into a candidate file;
3. the line's suite on exactly that set (``make compat-suite``: the compat suite, and on the lines of
   the Makefile's ``E2E_LINES`` the real-server end-to-end test; its constraints test checks the
   candidate: every installed distribution pinned, every cap honoured);
4. only if it passed, the candidate becomes ``constraints/airflow-<line>.txt``, and a summary of
   what moved against the previous file is printed. Nothing is written on a failure
   (the venv is kept to look into); on success the venv is removed.

Every step is bounded in time. The result is a reviewed diff: commit it with the summary.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

try:
    from packaging.version import InvalidVersion, Version
except ImportError:  # a bare Python: pip always vendors it
    from pip._vendor.packaging.version import InvalidVersion, Version  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "constraints"
CAPS = CONSTRAINTS / "caps"
WORK = REPO / ".venv-constraints"
PROJECT = "airflow-provider-kirin"

#: What a line's file covers beyond ``apache-airflow==<release>``, this package (``-e .``) and the
#: compat suite's test tools (the Makefile's ``COMPAT_TEST_DEPS``). The newest line's ``.venv``
#: installs the ``dev`` extra (``make test``), the ``distributed`` extra
#: (``scripts/install-distributed-deps.sh``) and the HTTP provider (``make bench``); the OpenLineage
#: provider and the StatsD client are test dependencies on every line (``COMPAT_TEST_DEPS``).
#: Every line pins hatchling, which builds this package (pip's ``--build-constraint``).
PROJECT_SPEC = {"3.3": ".[dev,distributed]"}
ALSO_COVER = {
    "3.3": ["apache-airflow-providers-http"],
}
BUILD_DEPS = ["hatchling"]

INSTALL_TIMEOUT = 1800.0
SUITE_TIMEOUT = 2400.0
DETAIL_LIMIT = 60


def line_of(release: str) -> str:
    """``3.1.8`` -> ``3.1``."""
    parts = release.split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts):
        raise SystemExit(f"not an Airflow release: {release!r} (e.g. 3.1.8)")
    return ".".join(parts[:2])


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def rel(path: Path) -> str:
    return os.path.relpath(path, REPO)


def run(
    argv: list[str],
    *,
    timeout: float,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    echo: bool = True,
) -> str:
    """Run ``argv`` in its own process group, its output streamed (and kept in ``log``); kill the group
    after ``timeout`` seconds. Returns the output; raises ``SystemExit`` on a non-zero exit."""
    print(f"$ {' '.join(argv)}", flush=True)
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill)
    timer.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "is ignored: it is neither a file nor a directory" in line:
                continue  # pip's noise about this machine's optional local indexes
            lines.append(line)
            if echo:
                sys.stdout.write(line)
                sys.stdout.flush()
        proc.wait()
    except BaseException:
        kill()
        raise
    finally:
        timer.cancel()
        with contextlib.suppress(ProcessLookupError, PermissionError):  # what the command left behind
            os.killpg(proc.pid, signal.SIGKILL)
    output = "".join(lines)
    if log is not None:
        with log.open("a") as fh:
            fh.write(f"$ {' '.join(argv)}\n{output}\n")
    if timed_out.is_set():
        raise SystemExit(f"timed out after {timeout:.0f} s: {' '.join(argv)}")
    if proc.returncode != 0:
        raise SystemExit(f"exit {proc.returncode}: {' '.join(argv)}")
    return output


def read_pins(path: Path) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """``({canonical name: (name as written, version)}, [other requirement lines])`` of a file."""
    pins: dict[str, tuple[str, str]] = {}
    others: list[str] = []
    if not path.exists():
        return pins, others
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if match:
            pins[canonical(match.group(1))] = (match.group(1), match.group(2))
        else:
            others.append(line)
    return pins, others


def version_key(version: str) -> Version | None:
    try:
        return Version(version)
    except InvalidVersion:
        return None


def diff_summary(
    path: Path, old: dict[str, tuple[str, str]], old_caps: list[str], new: dict[str, tuple[str, str]]
) -> str:
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    up: list[str] = []
    down: list[str] = []
    for key in sorted(set(old) & set(new)):
        before, after = old[key][1], new[key][1]
        if before == after:
            continue
        vb, va = version_key(before), version_key(after)
        target = up if vb is None or va is None or va > vb else down
        target.append(f"{new[key][0]} {before} -> {after}")
    unchanged = len(set(old) & set(new)) - len(up) - len(down)
    was = f"{len(old)} pins" + (f" and {len(old_caps)} caps ({', '.join(old_caps)})" if old_caps else "")
    out = [
        f"{rel(path)}: {len(new)} pins (was {was})",
        f"  added {len(added)}, removed {len(removed)}, upgraded {len(up)}, downgraded {len(down)}, "
        f"unchanged {unchanged}",
    ]
    for label, items in (
        ("upgraded", up),
        ("downgraded", down),
        ("added", [f"{new[k][0]}=={new[k][1]}" for k in added]),
        ("removed", [f"{old[k][0]}=={old[k][1]}" for k in removed]),
    ):
        if items:
            shown = items[:DETAIL_LIMIT]
            more = f" ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
            out.append(f"  {label}: {', '.join(shown)}{more}")
    return "\n".join(out)


def suite_result(output: str) -> str:
    """pytest's closing line, e.g. ``35 passed in 231.20s (0:03:51)``."""
    finals = [ln.strip(" =") for ln in output.splitlines() if re.search(r"\d+ passed", ln)]
    return finals[-1] if finals else "passed"


def refresh(release: str, test_deps: list[str], keep_venv: bool) -> str:
    line = line_of(release)
    caps = CAPS / f"airflow-{line}.in"
    target = CONSTRAINTS / f"airflow-{line}.txt"
    if not caps.is_file():
        raise SystemExit(f"no {rel(caps)}: a line needs its caps file (it may hold only comments)")
    venv = WORK / release
    log = WORK / f"{release}.log"
    print(f"\n=== Airflow {release}: resolving under {rel(caps)} in {rel(venv)}", flush=True)
    started = time.monotonic()
    if venv.exists():
        shutil.rmtree(venv)
    WORK.mkdir(exist_ok=True)
    log.write_text("")
    python = str(venv / "bin" / "python")
    run([sys.executable, "-m", "venv", str(venv)], timeout=300, log=log)
    pip = [python, "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "install", "--quiet", "-c", rel(caps), "--upgrade", "pip"], timeout=INSTALL_TIMEOUT, log=log)
    extra = dict.fromkeys([*test_deps, *ALSO_COVER.get(line, []), *BUILD_DEPS])  # once each, in order
    requested = [f"apache-airflow=={release}", "-e", PROJECT_SPEC.get(line, "."), *extra]
    install = [*pip, "install", "--quiet", "-c", rel(caps), "--build-constraint", rel(caps), *requested]
    run(install, timeout=INSTALL_TIMEOUT, log=log)
    run([*pip, "check"], timeout=300, log=log)
    installed_in = time.monotonic() - started

    frozen = run([*pip, "freeze", "--all", "--exclude-editable"], timeout=300, echo=False)
    pins: dict[str, tuple[str, str]] = {}
    for raw in frozen.splitlines():
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", entry)
        if not match:
            raise SystemExit(f"pip freeze gave a line that is no pin: {entry!r}")
        if canonical(match.group(1)) != PROJECT:
            pins[canonical(match.group(1))] = (match.group(1), match.group(2))
    pip_version = pins.get("pip", ("pip", "?"))[1]
    old, old_caps = read_pins(target)

    command = f"make constraints-refresh AIRFLOW={release}"
    resolved = " ".join(["pip install", "-c", rel(caps), *(f'"{r}"' if "=" in r else r for r in requested)])
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")

    def render(verified: str) -> str:
        header = [
            f"# Constraints for Airflow {line} (apache-airflow=={release}) on CPython "
            f"{platform.python_version()}: every distribution",
            "# of the line's verified venv pinned, the way Airflow's own constraints files are made. Made by",
            f"# scripts/constraints.py; do not edit by hand: change {rel(caps)} (the caps, each",
            f"# with its reason) and run `{command}`.",
            "#",
            f"# Generated: {now} by `{command}`",
            f"# Python:    CPython {platform.python_version()} ({platform.system()} {platform.machine()}), "
            f"pip {pip_version}",
            f"# Airflow:   {release}",
            f"# Resolved:  {resolved}",
            f"# Verified:  make compat-suite AIRFLOW={release} on exactly these pins: {verified}",
            f"# Pins:      {len(pins)}",
            "",
        ]
        body = [f"{name}=={version}" for _, (name, version) in sorted(pins.items())]
        return "\n".join(header + body) + "\n"

    # The suite runs against the candidate file (its constraints test reads KIRIN_CONSTRAINTS_FILE:
    # every installed distribution pinned, every cap honoured); the line's file is untouched so far.
    candidate = WORK / f"airflow-{line}.txt"
    candidate.write_text(render("(running)"))
    env = {**os.environ}
    for key in list(env):  # the suite sets every Airflow setting itself
        if key.startswith(("AIRFLOW", "KIRIN_")):
            del env[key]
    env["KIRIN_CONSTRAINTS_FILE"] = str(candidate)
    suite = ["make", "--no-print-directory", "compat-suite", f"AIRFLOW={release}", f"COMPAT_VENV={rel(venv)}"]
    try:
        output = run(suite, timeout=SUITE_TIMEOUT, log=log, env=env)
    except SystemExit as failed:
        raise SystemExit(
            f"{failed}\nAirflow {release}: the suite failed on the refreshed resolution; "
            f"{rel(target)} is unchanged (venv kept: {rel(venv)}, candidate: {rel(candidate)}, "
            f"log: {rel(log)})"
        ) from None
    target.write_text(render(suite_result(output)))
    candidate.unlink()
    summary = diff_summary(target, old, old_caps, pins)
    print(
        f"\n{summary}\n(Airflow {release}: {time.monotonic() - started:.0f} s, install {installed_in:.0f} s)"
    )
    if keep_venv:
        print(f"venv kept: {rel(venv)}")
    else:
        shutil.rmtree(venv)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("refresh", help="re-resolve, verify and rewrite the files of the given releases")
    cmd.add_argument(
        "releases", nargs="+", metavar="RELEASE", help="Airflow releases, one per line, e.g. 3.0.6"
    )
    cmd.add_argument(
        "--test-deps",
        default="pytest pytest-asyncio pytest-timeout jsonschema av wtforms",
        help="the compat suite's test tools (the Makefile passes its COMPAT_TEST_DEPS)",
    )
    cmd.add_argument("--keep-venv", action="store_true", help="keep the throw-away venv after a success")
    args = parser.parse_args()
    lines = [line_of(r) for r in args.releases]
    if len(set(lines)) != len(lines):
        raise SystemExit(f"one release per line, got {args.releases}")
    summaries: list[str] = []
    failed: list[str] = []
    for release in args.releases:
        try:
            summaries.append(refresh(release, args.test_deps.split(), args.keep_venv))
        except SystemExit as err:
            print(f"\nFAILED: {err}", file=sys.stderr, flush=True)
            failed.append(release)
    print("\n=== constraints-refresh summary")
    for summary in summaries:
        print(summary)
    if failed:
        print(f"not refreshed (suite or install failed): {' '.join(failed)}")
        return 1
    print("Review `git diff constraints/`, then commit it with this summary.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
