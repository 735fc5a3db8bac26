"""Run several ``airflow`` CLI commands, one after another, in one Python process.

``tests/airflow_helpers.py`` (``AirflowHome.warm_cli``) starts this script with a home's explicit
environment and sends it one JSON request per line on stdin::

    {"argv": ["dags", "test", "example_kirin_mapped"], "env": {...}, "stdout": "<file>", "stderr": "<file>"}

For each request it sets the process environment to ``env`` (the home's settings plus the command's
own variables: connections, Variables, ``KIRIN_TEST_*``), points file descriptors 1 and 2 at the two
files, and calls ``airflow.__main__.main`` - the function the ``airflow`` command itself runs - with
``argv``. It answers with one JSON line ``{"returncode": n}`` on the stdout it started with: 0, the
code of a ``SystemExit`` (its message goes to the command's stderr, as Python prints it), or 1 with
the traceback for any other exception. So each command runs the real CLI code path (argument parsing,
the DAG bag of the DAGs folder, ``dag.test()``, the exit status) and only the interpreter's start
(importing Airflow, the providers manager, ...) is shared.

Settings Airflow reads once per process (``AIRFLOW__*``) must not change between requests: the
harness starts another process for commands whose settings differ. After each command, the assets
Airflow's hook lineage collector gathered are dropped (:func:`forget_hook_lineage`), as a fresh
process would start without them.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def forget_hook_lineage() -> None:
    """Empty Airflow's hook lineage collector, a process-wide singleton: a real task runs in a
    process of its own, so one command's assets (a file a hook wrote) must not show up in the
    OpenLineage events of the next."""
    try:
        from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector
    except ImportError:  # no common-compat: nothing collects
        return
    collector = get_hook_lineage_collector()
    for name in ("_inputs", "_outputs", "_input_counts", "_output_counts", "_extra", "_extra_counts"):
        collected = getattr(collector, name, None)
        if isinstance(collected, dict):
            collected.clear()


def run_one(argv: list[str], stdout: str, stderr: str, airflow_main: object) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    out_fd = os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err_fd = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    os.close(out_fd)
    os.close(err_fd)
    sys.argv = ["airflow", *argv]
    try:
        airflow_main()  # type: ignore[operator]
        code = 0
    except SystemExit as exit_:
        if exit_.code is None:
            code = 0
        elif isinstance(exit_.code, int):
            code = exit_.code
        else:  # as the interpreter does for an uncaught SystemExit("message")
            print(exit_.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        forget_hook_lineage()
        sys.stdout.flush()
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
    return code


def main() -> None:
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # nothing but the answers reaches the harness's pipe
    os.close(devnull)
    from airflow.__main__ import main as airflow_main

    replies.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        os.environ.clear()
        os.environ.update(request["env"])
        code = run_one(request["argv"], request["stdout"], request["stderr"], airflow_main)
        replies.write(json.dumps({"returncode": code}) + "\n")


if __name__ == "__main__":
    main()
