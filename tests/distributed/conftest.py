"""On a failing test of this directory, the tail of every server's log (Airflow components, PostgreSQL,
Redis) is added to the test's report. ``backing_services`` (this directory) is made importable."""

from __future__ import annotations

import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    cluster = getattr(item, "funcargs", {}).get("cluster")
    diagnostics = getattr(cluster, "diagnostics", None)
    if callable(diagnostics):
        report.sections.append((f"Server logs ({report.when})", diagnostics()))
