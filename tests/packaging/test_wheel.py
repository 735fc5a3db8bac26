"""The package as a user gets it: ``python -m build`` makes a wheel and an sdist that pass ``twine check``,
and the BUILT WHEEL, installed with pip into a fresh venv, registers the provider with Airflow and runs
an example DAG. No package index is asked for anything: the build and the install reuse what the test's
own environment (the Makefile's ``.venv``, pinned by the newest line's constraints) already has.

Everything happens once, in the module-scoped ``packaged`` fixture, in temporary directories:

1. the repo's source files (``git ls-files``, tracked and untracked-not-ignored; a filtered copy
   where there is no git) are copied, and ``python -m build --no-isolation --wheel --sdist`` runs on
   the copy with the test environment's build backend (hatchling), so nothing is ever written into
   the working tree and nothing is downloaded;
2. ``python -m venv --without-pip`` (no system site-packages) gets the test environment's installed
   distributions as a site directory of its own (links to each of them, less this package's editable
   install), and the test environment's pip, run by the venv's interpreter (``pip --python``), with
   ``install --no-index <wheel>`` (pip's configuration files and ``PIP_*`` variables left out)
   installs the wheel there: pip resolves the
   wheel's declared requirements against that environment and fails if one is missing, and the
   fixture then checks each ``Requires-Dist`` of the wheel against the versions installed there, and
   runs ``pip check`` on the whole environment;
3. with an explicit environment (no ``AIRFLOW*`` variable inherited) on a temporary SQLite
   AIRFLOW_HOME, the fresh venv's Python runs ``airflow providers list``, ``providers links`` and
   ``dags test example_kirin_deferrable_operator`` against the emulator, itself started from the
   fresh venv with ``python -m airflow_provider_kirin.emulator``. The home's metadata DB is a copy
   of the suite's migrated one (``airflow_template_db``): the fresh venv links the same Airflow, and
   a migration is Airflow's business, not the wheel's.

The tests below then assert on what each step produced. Every subprocess runs in its own process
group, killed as a whole on a time-out; the emulator is stopped in the fixture's finalizer whatever
happens.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from airflow_helpers import (
    FAST_WAITS,
    REPO_ROOT,
    count_start,
    decode_xcom,
    fernet_key,
    free_port,
    json_output,
    prepare_home,
    run_in_group,
)

pytestmark = [pytest.mark.timeout(900), pytest.mark.airflow]  # builds, installs, runs Airflow

PACKAGE = "airflow_provider_kirin"
DIST_NAME = "airflow-provider-kirin"
DAG_ID = "example_kirin_deferrable_operator"
SAMPLE_VIDEO = f"{PACKAGE}/emulator/media/sample.mp4"
EMULATOR_API_KEY = "packaging-test-key"
#: Never copied into the build tree when there is no git to list the source files.
COPY_IGNORE = (
    ".git",
    ".venv",
    "venv",
    "__pycache__",
    "*.pyc",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    ".airflow-demo",
    "build",
    "dist",
    "*.egg-info",
    ".work",
)
#: Variables never passed to the subprocesses: each Airflow setting is set explicitly here, the fresh
#: venv must not see the repo's venv or source tree, and pip reads no configuration that could name
#: an index or a folder of wheels (``PIP_CONFIG_FILE`` points it at nothing instead).
_SCRUBBED_PREFIXES = ("AIRFLOW", "_AIRFLOW", "KIRIN_", "PYTEST_", "PIP_")
_SCRUBBED_NAMES = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
#: Entries of the test environment's site-packages the fresh venv must not see: this package's own
#: (editable) install. Everything else there is a dependency the wheel may use.
_OWN_ENTRIES = ("airflow_provider_kirin", "_airflow_provider_kirin", "__editable__")

#: Run in the fresh venv: each requirement the installed wheel declares (markers evaluated, no extras)
#: that the environment does not satisfy, as ``"<requirement>: <installed version or None>"``.
_UNMET_REQUIREMENTS = """
import json, importlib.metadata as md
from packaging.requirements import Requirement
unmet = []
for line in md.requires("airflow-provider-kirin") or []:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        version = None
    if version is None or not req.specifier.contains(version, prereleases=True):
        unmet.append(f"{req}: {version}")
print(json.dumps(unmet))
"""


# -- helpers ---------------------------------------------------------------------------------------
def base_env(extra: Mapping[str, str] | None = None, *, path_first: Path | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_SCRUBBED_PREFIXES) and k not in _SCRUBBED_NAMES
    }
    if path_first is not None:
        env["PATH"] = os.pathsep.join([str(path_first), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env["PIP_CONFIG_FILE"] = os.devnull
    env.update(extra or {})
    return env


def link_site_packages(target: Path) -> None:
    """Fill ``target`` with links to every entry of this environment's site-packages but this
    package's own: the dependencies a fresh venv is given instead of downloading them."""
    target.mkdir(parents=True)
    for site_dir in dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib")):
        for entry in sorted(Path(site_dir).iterdir()):
            if entry.name.startswith(_OWN_ENTRIES) or entry.name == "__pycache__":
                continue
            if not (target / entry.name).exists():
                (target / entry.name).symlink_to(entry)


def _kill_group(popen: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(10)


def checked(result: subprocess.CompletedProcess[str], what: str) -> subprocess.CompletedProcess[str]:
    if result.returncode != 0:
        raise AssertionError(f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def source_files(repo: Path) -> list[str] | None:
    """The repo's tracked and untracked-not-ignored files (that exist), or None without git."""
    if shutil.which("git") is None:
        return None
    names: set[str] = set()
    for extra in ([], ["--others", "--exclude-standard"]):
        result = subprocess.run(
            ["git", "-C", str(repo), "ls-files", "-z", *extra],
            capture_output=True,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            return None
        names.update(n for n in result.stdout.decode().split("\0") if n)
    return sorted(n for n in names if (repo / n).is_file())


def copy_source(repo: Path, dest: Path) -> None:
    files = source_files(repo)
    if files is None:
        shutil.copytree(repo, dest, ignore=shutil.ignore_patterns(*COPY_IGNORE), symlinks=True)
        return
    for name in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, target)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def http_json(url: str, headers: dict[str, str] | None = None) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as response:
        return json.loads(response.read())


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# -- the one fixture -------------------------------------------------------------------------------
@dataclass
class Packaged:
    version: str
    source_dir: Path
    wheel: Path
    sdist: Path
    twine: subprocess.CompletedProcess[str]
    wheel_from_sdist_names: list[str]
    venv: Path
    pyvenv_cfg: str
    pip_install: subprocess.CompletedProcess[str]
    unmet_requirements: list[str]
    pip_check: subprocess.CompletedProcess[str]
    installed: dict[str, Any]
    providers_list: subprocess.CompletedProcess[str]
    providers_links: subprocess.CompletedProcess[str]
    dags_test: subprocess.CompletedProcess[str]
    dag_runs: list[tuple[Any, ...]]
    task_states: dict[str, Any]
    kirin_result: Any
    emulator_stats: dict[str, Any]
    emulator_url: str
    emulator_exit: int | None
    emulator_log: Path
    durations: dict[str, float] = field(default_factory=dict)

    @property
    def wheel_names(self) -> list[str]:
        with zipfile.ZipFile(self.wheel) as whl:
            return whl.namelist()

    def wheel_read(self, name: str) -> bytes:
        with zipfile.ZipFile(self.wheel) as whl:
            return whl.read(name)

    @property
    def sdist_names(self) -> list[str]:
        """Member names without the ``<name>-<version>/`` top directory."""
        prefix = f"{PACKAGE}-{self.version}/"
        with tarfile.open(self.sdist) as tar:
            names = [m.name for m in tar.getmembers() if m.isfile()]
        assert all(n.startswith(prefix) for n in names), names
        return [n[len(prefix) :] for n in names]


@dataclass
class Emulator:
    popen: subprocess.Popen[bytes] | None = None

    def stop(self, grace: float = 10.0) -> int | None:
        popen = self.popen
        if popen is None:
            return None
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(grace)
        code = popen.poll()
        _kill_group(popen)
        return code


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory, airflow_template_db: Path) -> Iterator[Packaged]:
    tmp = tmp_path_factory.mktemp("packaging")
    durations: dict[str, float] = {}
    emulator = Emulator()

    @contextlib.contextmanager
    def timed(step: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            durations[step] = round(time.monotonic() - start, 1)

    try:
        # 1. Build from a copy of the source, and check the artifacts with twine.
        src, dist = tmp / "src", tmp / "dist"
        with timed("copy source"):
            copy_source(REPO_ROOT, src)
        init = (src / PACKAGE / "__init__.py").read_text()
        version_match = re.search(r'^__version__ = "([^"]+)"', init, re.MULTILINE)
        assert version_match, "no __version__ in the package's __init__.py"
        version = version_match.group(1)
        build_env = base_env()
        build = [sys.executable, "-m", "build", "--no-isolation"]
        with timed("python -m build"):
            checked(
                run_in_group(
                    [*build, "--wheel", "--sdist", "--outdir", str(dist), str(src)],
                    env=build_env,
                    cwd=src,
                    timeout=300,
                ),
                "python -m build --no-isolation (the build backend, hatchling, must be installed here)",
            )
        wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
        assert len(wheels) == 1, wheels
        assert len(sdists) == 1, sdists
        with timed("twine check"):
            twine = run_in_group(
                [sys.executable, "-m", "twine", "check", "--strict", *map(str, sorted(dist.iterdir()))],
                env=build_env,
                cwd=tmp,
                timeout=120,
            )
        # The sdist alone is enough to build the wheel again (nothing it needs was left out).
        with timed("wheel from the sdist"):
            unpacked = tmp / "sdist-unpacked"
            with tarfile.open(sdists[0]) as tar:
                tar.extractall(unpacked, filter="data")
            (sdist_root,) = list(unpacked.iterdir())
            dist2 = tmp / "dist-from-sdist"
            checked(
                run_in_group(
                    [*build, "--wheel", "--outdir", str(dist2), str(sdist_root)],
                    env=build_env,
                    cwd=sdist_root,
                    timeout=300,
                ),
                "python -m build --no-isolation --wheel (from the sdist)",
            )
            (wheel2,) = list(dist2.glob("*.whl"))
            with zipfile.ZipFile(wheel2) as whl:
                wheel_from_sdist_names = sorted(whl.namelist())

        # 2. A fresh venv with the built wheel; its dependencies are this environment's (no index).
        venv = tmp / "venv"
        vbin = venv / "bin"
        vpython = str(vbin / "python")
        with timed("python -m venv"):
            checked(
                run_in_group(
                    [sys.executable, "-m", "venv", "--without-pip", str(venv)],
                    env=base_env(),
                    cwd=tmp,
                    timeout=120,
                ),
                "python -m venv --without-pip",
            )
            venv_site = checked(
                run_in_group(
                    [vpython, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    env=base_env(),
                    cwd=tmp,
                    timeout=60,
                ),
                "the fresh venv's site-packages",
            ).stdout.strip()
            deps = venv / "test-environment-site-packages"
            link_site_packages(deps)
            # A site directory of the venv's own (its .pth files processed), after site-packages.
            (Path(venv_site) / "test_environment.pth").write_text(
                f"import site; site.addsitedir({str(deps)!r})\n"
            )
        # This environment's pip, run by the fresh venv's interpreter (``--python``): the venv needs
        # no pip of its own, and pip sees exactly what that interpreter sees.
        pip = [sys.executable, "-m", "pip", "--python", vpython]
        with timed("pip install --no-index <wheel>"):
            pip_install = run_in_group(
                [*pip, "install", "--no-index", "--no-input", str(wheels[0])],
                env=base_env(),
                cwd=tmp,
                timeout=300,
            )
            checked(pip_install, "pip install --no-index <wheel>")
        with timed("requirements check"):
            unmet_requirements = json.loads(
                checked(
                    run_in_group([vpython, "-c", _UNMET_REQUIREMENTS], env=base_env(), cwd=tmp, timeout=60),
                    "the requirements check",
                ).stdout.splitlines()[-1]
            )
            pip_check = run_in_group([*pip, "check", "--no-input"], env=base_env(), cwd=tmp, timeout=120)
        probe = (
            "import json, importlib.metadata as md, sysconfig, airflow, airflow_provider_kirin as k\n"
            "d = md.distribution('airflow-provider-kirin')\n"
            "print(json.dumps({'file': k.__file__, 'version': k.__version__, 'dist_version': d.version,\n"
            "    'direct_url': json.loads(d.read_text('direct_url.json') or 'null'),\n"
            "    'purelib': sysconfig.get_paths()['purelib'], 'airflow': airflow.__version__}))\n"
        )
        installed = json.loads(
            checked(
                run_in_group([vpython, "-c", probe], env=base_env(), cwd=tmp, timeout=120),
                "import from the fresh venv",
            ).stdout.splitlines()[-1]
        )

        # 3. Airflow from the fresh venv on a temporary home, with an explicit environment.
        home = tmp / "airflow-home"
        prepare_home(home)
        dags = tmp / "dags"
        shutil.copytree(src / "example_dags", dags, ignore=shutil.ignore_patterns("__pycache__"))
        airflow_env = base_env(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW_CONFIG": str(home / "airflow.cfg"),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
                "AIRFLOW__CORE__FERNET_KEY": fernet_key(),
                "AIRFLOW__API_AUTH__JWT_SECRET": "packaging-test-jwt-secret-" + "x" * 40,
                "AIRFLOW__API__SECRET_KEY": "packaging-test-secret",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            },
            path_first=vbin,
        )

        def cli(*args: str, extra: Mapping[str, str] | None = None, timeout: float = 180) -> Any:
            count_start("airflow CLI")
            return run_in_group(
                [vpython, "-m", "airflow", *args],
                env={**airflow_env, **(extra or {})},
                cwd=home,
                timeout=timeout,
            )

        with timed("airflow providers list"):
            providers_list = cli("providers", "list", "--output", "json")
        with timed("airflow providers links"):
            providers_links = cli("providers", "links")
        with timed("metadata DB from the migrated template"):
            shutil.copyfile(airflow_template_db, home / "airflow.db")

        # The emulator, from the fresh venv.
        port = free_port()
        emulator_url = f"http://127.0.0.1:{port}"
        emulator_log = tmp / "emulator.log"
        with timed("emulator start"), open(emulator_log, "wb") as log:
            emulator.popen = subprocess.Popen(
                [
                    vpython,
                    "-m",
                    "airflow_provider_kirin.emulator",
                    "--port",
                    str(port),
                    "--api-key",
                    EMULATOR_API_KEY,
                    "--pending-seconds",
                    "0.2",
                    "--processing-seconds",
                    "1",
                ],
                env=base_env(),
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            deadline = time.monotonic() + 60
            while True:
                if emulator.popen.poll() is not None:
                    raise AssertionError(f"the emulator exited early:\n{emulator_log.read_text()}")
                with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
                    http_json(
                        f"{emulator_url}/_emulator/stats", {"Authorization": f"Bearer {EMULATOR_API_KEY}"}
                    )
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"the emulator never answered:\n{emulator_log.read_text()}")
                time.sleep(0.2)

        conn = {"conn_type": "kirin", "host": emulator_url, "password": EMULATOR_API_KEY}
        with timed("airflow dags test"):
            dags_test = cli(
                "dags",
                "test",
                DAG_ID,
                extra={
                    "AIRFLOW_CONN_KIRIN_DEFAULT": json.dumps(conn),
                    **FAST_WAITS,
                },
                timeout=240,
            )
        emulator_stats = http_json(
            f"{emulator_url}/_emulator/stats", {"Authorization": f"Bearer {EMULATOR_API_KEY}"}
        )
        emulator_exit = emulator.stop()

        db = home / "airflow.db"
        dag_runs = query(db, "SELECT run_id, state FROM dag_run WHERE dag_id = ?", (DAG_ID,))
        task_states = dict(query(db, "SELECT task_id, state FROM task_instance WHERE dag_id = ?", (DAG_ID,)))
        xcom_rows = query(
            db,
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = 'generate' AND key = 'kirin_result'",
            (DAG_ID,),
        )
        kirin_result = decode_xcom(xcom_rows[0][0]) if xcom_rows else None

        packaged = Packaged(
            version=version,
            source_dir=src,
            wheel=wheels[0],
            sdist=sdists[0],
            twine=twine,
            wheel_from_sdist_names=wheel_from_sdist_names,
            venv=venv,
            pyvenv_cfg=(venv / "pyvenv.cfg").read_text(),
            pip_install=pip_install,
            unmet_requirements=unmet_requirements,
            pip_check=pip_check,
            installed=installed,
            providers_list=providers_list,
            providers_links=providers_links,
            dags_test=dags_test,
            dag_runs=dag_runs,
            task_states=task_states,
            kirin_result=kirin_result,
            emulator_stats=emulator_stats,
            emulator_url=emulator_url,
            emulator_exit=emulator_exit,
            emulator_log=emulator_log,
            durations=durations,
        )
        print(f"\npackaging step durations (s): {json.dumps(durations)}")
        yield packaged
    finally:
        emulator.stop()


# -- 1. the artifacts ------------------------------------------------------------------------------
def test_twine_check_passes(packaged: Packaged) -> None:
    output = packaged.twine.stdout + packaged.twine.stderr
    assert packaged.twine.returncode == 0, output
    assert output.count("PASSED") == 2, output


def test_artifact_names_carry_the_package_version(packaged: Packaged) -> None:
    assert packaged.wheel.name == f"{PACKAGE}-{packaged.version}-py3-none-any.whl"
    assert packaged.sdist.name == f"{PACKAGE}-{packaged.version}.tar.gz"


def test_wheel_contains_the_package_data_and_no_tests(packaged: Packaged) -> None:
    names = packaged.wheel_names
    dist_info = f"{PACKAGE}-{packaged.version}.dist-info"
    assert f"{PACKAGE}/py.typed" in names
    assert SAMPLE_VIDEO in names
    # The bundled video is the repo's, byte for byte.
    assert sha256(packaged.wheel_read(SAMPLE_VIDEO)) == sha256(
        (packaged.source_dir / SAMPLE_VIDEO).read_bytes()
    )
    # Every module of the package is in the wheel.
    modules = {
        p.relative_to(packaged.source_dir).as_posix() for p in (packaged.source_dir / PACKAGE).rglob("*.py")
    }
    assert modules, "no modules found in the source copy"
    assert modules <= set(names), sorted(modules - set(names))
    # Only the package and its metadata at the top level: no tests/, example_dags/, docs/ ...
    top_level = {n.split("/", 1)[0] for n in names}
    assert top_level == {PACKAGE, dist_info}, top_level
    assert not [n for n in names if n.startswith("tests/") or "/tests/" in n]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_wheel_declares_the_entry_points(packaged: Packaged) -> None:
    entry_points = configparser.ConfigParser(delimiters=("=",))
    entry_points.optionxform = str  # type: ignore[assignment,method-assign]
    dist_info = f"{PACKAGE}-{packaged.version}.dist-info"
    entry_points.read_string(packaged.wheel_read(f"{dist_info}/entry_points.txt").decode())
    assert dict(entry_points["apache_airflow_provider"]) == {
        "provider_info": "airflow_provider_kirin.get_provider_info:get_provider_info"
    }
    assert "pytest11" not in entry_points, "the emulator's pytest plugin is opt-in, never auto-loaded"


def test_wheel_metadata(packaged: Packaged) -> None:
    dist_info = f"{PACKAGE}-{packaged.version}.dist-info"
    metadata = packaged.wheel_read(f"{dist_info}/METADATA").decode()
    assert f"Name: {DIST_NAME}\n" in metadata
    assert f"Version: {packaged.version}\n" in metadata
    assert "Requires-Dist: apache-airflow>=3" in metadata
    assert "Description-Content-Type: text/markdown" in metadata
    assert "Classifier: Framework :: Apache Airflow :: Provider" in metadata


def test_sdist_contains_the_sources_tests_examples_and_docs(packaged: Packaged) -> None:
    names = set(packaged.sdist_names)
    for required in (
        "README.md",
        "CHANGELOG.md",
        "pyproject.toml",
        "PKG-INFO",
        f"{PACKAGE}/__init__.py",
        f"{PACKAGE}/py.typed",
        SAMPLE_VIDEO,
        f"example_dags/{DAG_ID}.py",
        "tests/conftest.py",
        "tests/airflow_helpers.py",
    ):
        assert required in names, f"{required} missing from the sdist"
    for directory in ("example_dags/", "docs/", "tests/"):
        assert any(n.startswith(directory) for n in names), f"no {directory} in the sdist"
    # Every example DAG file of the source is in the sdist.
    examples = {
        p.relative_to(packaged.source_dir).as_posix()
        for p in (packaged.source_dir / "example_dags").rglob("*")
    }
    examples = {e for e in examples if (packaged.source_dir / e).is_file() and "__pycache__" not in e}
    assert examples <= names, sorted(examples - names)
    junk = [
        n
        for n in names
        if n.startswith((".venv/", ".git/", ".airflow-demo/", ".hypothesis/", "dist/", "build/"))
        or "__pycache__" in n
        or n.endswith(".pyc")
    ]
    assert not junk, junk


def test_the_sdist_builds_the_same_wheel(packaged: Packaged) -> None:
    assert packaged.wheel_from_sdist_names == sorted(packaged.wheel_names)


# -- 2. the fresh venv -----------------------------------------------------------------------------
def test_fresh_venv_imports_the_installed_wheel(packaged: Packaged) -> None:
    assert re.search(r"^include-system-site-packages\s*=\s*false$", packaged.pyvenv_cfg, re.MULTILINE)
    installed = packaged.installed
    module_file = Path(installed["file"]).resolve()
    purelib = Path(installed["purelib"]).resolve()
    assert module_file.is_relative_to(purelib), installed
    assert purelib.is_relative_to(packaged.venv.resolve()), installed
    assert not module_file.is_relative_to(REPO_ROOT.resolve()), installed
    assert installed["version"] == installed["dist_version"] == packaged.version
    # Installed from the wheel file, not as an editable/source-tree install.
    direct_url = installed["direct_url"]
    assert direct_url is not None, installed
    assert direct_url["url"].endswith(packaged.wheel.name), direct_url
    assert "dir_info" not in direct_url, direct_url
    assert installed["airflow"].split(".")[0] == "3", installed


def test_the_wheels_requirements_are_met_without_an_index(packaged: Packaged) -> None:
    """pip, with no index, found every declared requirement of the wheel already installed; each
    ``Requires-Dist`` holds for the installed version; nothing in the environment is broken."""
    output = packaged.pip_install.stdout + packaged.pip_install.stderr
    installed = [line for line in output.splitlines() if line.startswith("Successfully installed")]
    assert installed == [f"Successfully installed {DIST_NAME}-{packaged.version}"], output  # nothing else
    assert packaged.unmet_requirements == [], packaged.unmet_requirements
    check = packaged.pip_check
    assert check.returncode == 0, check.stdout + check.stderr


# -- 3. Airflow from the fresh venv ----------------------------------------------------------------
def test_airflow_providers_list_shows_the_provider(packaged: Packaged) -> None:
    result = packaged.providers_list
    assert result.returncode == 0, result.stdout + result.stderr
    providers = {p["package_name"]: p for p in json_output(result.stdout)}
    assert DIST_NAME in providers, sorted(providers)
    assert providers[DIST_NAME]["version"] == packaged.version


def test_airflow_providers_links_shows_the_extra_link(packaged: Packaged) -> None:
    result = packaged.providers_links
    assert result.returncode == 0, result.stdout + result.stderr
    assert "airflow_provider_kirin.links.kirin.KirinVideoLink" in result.stdout.split(), result.stdout


def test_example_dag_runs_against_the_emulator_from_the_fresh_venv(packaged: Packaged) -> None:
    result = packaged.dags_test
    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, output
    assert len(packaged.dag_runs) == 1, packaged.dag_runs
    assert packaged.dag_runs[0][1] == "success", f"{packaged.dag_runs}\n{output}"
    assert packaged.task_states == {"generate": "success"}, output
    result_xcom = packaged.kirin_result
    assert isinstance(result_xcom, dict), result_xcom
    assert result_xcom["status"] == "completed"
    assert result_xcom["videos"][0]["url"].startswith(f"{packaged.emulator_url}/"), result_xcom
    stats = packaged.emulator_stats
    assert stats["creates"] == 1, stats
    assert stats["tasks_by_status"] == {"completed": 1}, stats
    # SIGTERM stops the emulator cleanly.
    assert packaged.emulator_exit == 0, packaged.emulator_log.read_text()
