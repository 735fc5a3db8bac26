"""The venv under test is exactly its Airflow line's constraints (marker ``compat``: on every line).

``make test`` and ``make test-compat`` install each venv with ``-c constraints/airflow-<line>.txt``,
which ``scripts/constraints.py`` wrote from a resolution under ``constraints/caps/airflow-<line>.in``
that passed the line's suite (``make constraints-refresh``; docs/compatibility.md). Here, on the
installed line:

* every installed distribution is pinned, at exactly its installed version: a dependency that
  arrived unpinned (a new requirement in pyproject.toml, a package installed by hand) fails until
  the file is refreshed, so the suite always runs on a reproducible set;
* every pin honours the line's caps, and the file says how, when and on what it was made;
* every ``pip install`` of the Makefile and the scripts passes a constraints file.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from pathlib import Path

import airflow
import pytest
from airflow_helpers import REPO_ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

pytestmark = pytest.mark.compat

PROJECT = "airflow-provider-kirin"
LINE = ".".join(airflow.__version__.split(".")[:2])
#: The line's file; during a refresh, the candidate that becomes it if the suite passes.
CONSTRAINTS = Path(
    os.environ.get("KIRIN_CONSTRAINTS_FILE") or REPO_ROOT / "constraints" / f"airflow-{LINE}.txt"
)
CAPS = REPO_ROOT / "constraints" / "caps" / f"airflow-{LINE}.in"
REFRESH = f"`make constraints-refresh AIRFLOW={airflow.__version__}`"


def pins(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        assert match, f"{path.name}: not a `name==version` pin: {raw!r}"
        found[canonicalize_name(match.group(1))] = match.group(2)
    return found


def requirements(path: Path) -> list[Requirement]:
    lines = (raw.split("#", 1)[0].strip() for raw in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def test_every_installed_distribution_is_pinned_at_its_version() -> None:
    pinned = pins(CONSTRAINTS)
    installed = {
        canonicalize_name(dist.metadata["Name"]): dist.version for dist in importlib.metadata.distributions()
    }
    installed.pop(PROJECT, None)
    unpinned = sorted(f"{name}=={version}" for name, version in installed.items() if name not in pinned)
    assert not unpinned, (
        f"installed but not pinned by {CONSTRAINTS.name}: {unpinned}; "
        f"if the project needs them, run {REFRESH}"
    )
    moved = sorted(
        f"{name} {version} (pinned {pinned[name]})"
        for name, version in installed.items()
        if Version(version) != Version(pinned[name])
    )
    assert not moved, f"installed at another version than {CONSTRAINTS.name} pins: {moved}"
    assert pinned[canonicalize_name("apache-airflow")] == airflow.__version__


def test_pins_honour_the_caps_and_the_file_says_how_it_was_made() -> None:
    pinned = pins(CONSTRAINTS)
    broken = [
        f"{cap} (pinned {pinned[canonicalize_name(cap.name)]})"
        for cap in requirements(CAPS)
        if canonicalize_name(cap.name) in pinned
        and not cap.specifier.contains(pinned[canonicalize_name(cap.name)], prereleases=True)
    ]
    assert not broken, f"{CONSTRAINTS.name} breaks its caps in {CAPS.name}: {broken}; run {REFRESH}"
    header = CONSTRAINTS.read_text()
    for field in (
        "# Generated: ",
        "# Python:    CPython ",
        f"# Airflow:   {airflow.__version__}\n",
        "# Verified: ",
    ):
        assert field in header, f"{CONSTRAINTS.name} has no {field.strip()!r} header line"
    # The project itself is never pinned: users get it, and its own requirements stay ranges.
    assert PROJECT not in pinned


def test_every_pip_install_of_the_build_is_constrained() -> None:
    """Makefile and scripts: no ``pip install`` may resolve freely (that is how CI rots)."""
    unconstrained = []
    for path in [REPO_ROOT / "Makefile", *sorted((REPO_ROOT / "scripts").glob("*.sh"))]:
        text = path.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            installs = re.search(r"\bpip install\b", line) and not line.lstrip().startswith("#")
            # `-c FILE`, or the Makefile's `$(call pinned,FILE)` (`-c FILE --build-constraint FILE`).
            if installs and not re.search(r"(^|\s)-c\s|\$\(call pinned,", line):
                unconstrained.append(f"{path.name}: {line.strip()}")
    assert not unconstrained, unconstrained
