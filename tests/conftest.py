"""Shared fixtures. The emulator fixtures (``kirin_emulator``, ``kirin_conn_env``,
``kirin_emulator_factory``) come from the package's pytest plugin, registered through its ``pytest11``
entry point. Test directories may add their own ``conftest.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:  # make ``airflow_helpers`` importable whatever the import mode
    sys.path.insert(0, _TESTS_DIR)

from airflow_helpers import migrate_template  # noqa: E402


@pytest.fixture(scope="session")
def airflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A metadata DB migrated by ``airflow db migrate`` once per session; homes start from copies."""
    return migrate_template(tmp_path_factory.mktemp("airflow-template"))
