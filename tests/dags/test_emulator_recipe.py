"""The ``dag.test()`` recipe of ``docs/emulator.md`` ("In your own DAG tests"), run as written.

The doc's three files (each a ``python`` block whose first line names its path) are written to an
empty project folder and ``pytest tests`` runs there in a fresh interpreter, with no Airflow
setting inherited from this test run: exactly what a newcomer copying them gets. The compat suite
runs it on every Airflow line.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from airflow_helpers import REPO_ROOT, run_in_group

pytestmark = pytest.mark.airflow  # starts Airflow (dag.test) in a subprocess: not in `make test-fast`

DOC = REPO_ROOT / "docs" / "emulator.md"


def recipe_files() -> dict[str, str]:
    """``{path: text}`` of every ``python`` block of the doc whose first line is ``# <path>``."""
    files = {}
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL):
        first, _, rest = block.partition("\n")
        if re.fullmatch(r"# [\w/]+\.py", first.strip()):
            files[first.strip()[2:]] = rest
    return files


def test_the_doc_holds_the_three_files() -> None:
    assert set(recipe_files()) == {"tests/conftest.py", "dags/fox_video.py", "tests/test_fox_video.py"}


@pytest.mark.timeout(400)
def test_the_dag_test_recipe_runs_as_written(tmp_path: Path) -> None:
    for name, text in recipe_files().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    # Nothing of this run's Airflow (home, settings, connections) reaches the newcomer's run.
    scrubbed = ("AIRFLOW", "_AIRFLOW", "PYTEST", "KIRIN")
    env = {k: v for k, v in os.environ.items() if not k.startswith(scrubbed)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    result = run_in_group(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        env=env,
        cwd=tmp_path,
        timeout=360,
    )
    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, output[-6000:]
    assert "2 passed" in output, output[-3000:]
