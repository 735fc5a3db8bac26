"""On a failing test of this directory that uses ``real_airflow``, the tail of every Airflow
component's log is added to the test's report."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    airflow = getattr(item, "funcargs", {}).get("real_airflow")
    diagnostics = getattr(airflow, "diagnostics", None)
    if callable(diagnostics):
        report.sections.append((f"Airflow component logs ({report.when})", diagnostics()))
