"""Run a real Airflow from tests: temporary AIRFLOW_HOMEs on SQLite (or on a PostgreSQL the test started,
see ``tests/distributed``), ``airflow`` CLI subprocesses with an explicit environment, long-running
components (and other servers, :func:`spawn`) in their own process groups, and read-only access to the
metadata database (task states, dag run states, XComs).

Nothing here imports Airflow: the test process stays independent of the Airflow it drives.

Example::

    template = migrate_template(tmp / "template")  # ``airflow db migrate`` once
    home = AirflowHome.create(tmp / "home", template, dags_folder=EXAMPLE_DAGS)
    run = home.dags_test("example_kirin_deferrable_operator", {"AIRFLOW_CONN_KIRIN_DEFAULT": ...})
    assert run.returncode == 0, run.tail()
    assert run.state == "success" and run.task_states() == {("generate", -1): "success"}
    result = run.xcom("generate", "kirin_result")
    home.close()  # stops what the home started (its warm CLI process, components)

Cold starts are what a real-Airflow test pays most for (importing Airflow and its providers takes
seconds of CPU). ``home.cli`` runs one ``airflow`` command in a new process, as a user types it; by
default ``home.dags_test`` (and ``home.cli(..., warm=True)``) runs the command in the home's *warm*
CLI process instead (``tests/airflow_cli_driver.py``): the same ``airflow`` entry point, argument
parsing, DAG bag and ``dag.test()``, each command with its own environment and output, one
interpreter start for all of them. :data:`STARTS` counts every process started here, by kind; the
root ``conftest.py`` prints the totals at the end of a run.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DAGS = REPO_ROOT / "example_dags"
TEST_DAG_FILES = REPO_ROOT / "tests" / "dags" / "dag_files"

#: Environment variables never inherited by the Airflow subprocesses: every Airflow setting (and
#: the example DAGs' knobs) is set explicitly by the test that starts the process.
_SCRUBBED_PREFIXES = ("AIRFLOW", "KIRIN_", "_AIRFLOW", "PYTEST_")


#: Processes started by this test process, by kind: ``airflow CLI`` (one command, cold),
#: ``airflow component`` (a long-running server), ``warm CLI process`` (one interpreter for several
#: commands), and ``commands run warm`` (commands that such a process ran: no start of their own).
STARTS: Counter[str] = Counter()
#: The warm CLI script (see the module docstring).
CLI_DRIVER = Path(__file__).resolve().parent / "airflow_cli_driver.py"


def count_start(kind: str) -> None:
    """Count one start of kind ``kind`` in :data:`STARTS` (for processes started outside this module,
    e.g. the packaging test's fresh venv)."""
    STARTS[kind] += 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ok(url: str) -> bool:
    """Whether ``url`` answers 200 within 2 s (e.g. the api-server's ``/api/v2/monitor/health``)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def api_server_settings(port: int) -> dict[str, str]:
    """Settings of an ``airflow api-server`` on ``127.0.0.1:port`` that task supervisors (workers) report
    to, with every user an admin (the simple auth manager: nothing to log in to in tests)."""
    api_url = f"http://127.0.0.1:{port}"
    return {
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        # A [core] option in Airflow 3.3 (not a [simple_auth_manager] section).
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        # Workers (task supervisors) report to the api-server's execution API.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__API__WORKERS": "1",
    }


def fernet_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def clean_env(home: Path, settings: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of an Airflow subprocess: the parent's, minus every ``AIRFLOW*``/``KIRIN_*``
    variable, plus this home's explicit settings. The venv's ``bin`` comes first on ``PATH``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW_CONFIG": str(home / "airflow.cfg"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(settings or {})
    return env


def component_settings(port: int, *, parallelism: int) -> dict[str, str]:
    """Settings of a real Airflow's separate components on loopback: LocalExecutor with
    ``parallelism`` slots, one DAG-parsing process, and :func:`api_server_settings`."""
    return {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        **api_server_settings(port),
    }


#: The tests' cluster policy (shortened Kirin waits), installed into every home's ``config/``.
LOCAL_SETTINGS = Path(__file__).resolve().parent / "airflow_local_settings.py"

#: ``KIRIN_TEST_*`` settings that make the example DAGs' waits fit the emulator (see
#: ``tests/airflow_local_settings.py``).
FAST_WAITS = {"KIRIN_TEST_FIRST_POLL_DELAY": "0.5", "KIRIN_TEST_POLL_INTERVAL": "0.5"}


def prepare_home(home: Path) -> None:
    """Folders, an empty ``airflow.cfg`` and the tests' cluster policy (``config/``)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(exist_ok=True)
    (home / "config").mkdir(exist_ok=True)
    shutil.copyfile(LOCAL_SETTINGS, home / "config" / "airflow_local_settings.py")
    # An (empty) config file of our own: Airflow then does not write a generated one (with random
    # secrets) on first use, which would race when several components start at once.
    (home / "airflow.cfg").write_text("# settings come from AIRFLOW__* environment variables\n")


def migrate_template(path: Path, timeout: float = 180) -> Path:
    """Run ``airflow db migrate`` once into ``path``; return the migrated SQLite file to copy from."""
    prepare_home(path)
    env = clean_env(path, {"AIRFLOW__CORE__FERNET_KEY": fernet_key()})
    count_start("airflow CLI")
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        cwd=path,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"airflow db migrate failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return path / "airflow.db"


def run_in_group(
    args: list[str], *, env: Mapping[str, str], cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` to completion in a new process group, killed as a whole if it outlives
    ``timeout`` or if the test is interrupted (e.g. by pytest-timeout) while waiting for it;
    stdout and stderr are captured and never checked here."""
    popen = subprocess.Popen(
        args,
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(popen)
        stdout, stderr = popen.communicate()
        raise AssertionError(f"{' '.join(args)} ran longer than {timeout} s:\n{stdout}\n{stderr}") from None
    except BaseException:
        _kill_group(popen)
        raise
    finally:
        # Whatever the command left behind in its group (it should leave nothing).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(popen.args, popen.returncode, stdout, stderr)


def _kill_group(popen: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(10)


def _descendants(pid: int) -> list[Any]:
    """Every live descendant of ``pid`` (``psutil`` processes; Airflow depends on psutil). Some leave
    the leader's process group on purpose (a task process calls ``setpgid``), so a group kill alone
    would orphan them."""
    try:
        import psutil

        return list(psutil.Process(pid).children(recursive=True))
    except Exception:  # no such process any more, or no psutil: the group kill is all we can do
        return []


def spawn(
    name: str,
    argv: list[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    user: str | None = None,
) -> ManagedProcess:
    """Start ``argv`` in the background in a new session (its own process group), stdout and stderr
    to ``log_path``; as ``user`` if given (the caller must be root then, e.g. for PostgreSQL)."""
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            group=_primary_group(user) if user is not None else None,
        )
    return ManagedProcess(name=name, popen=popen, log_path=log_path)


def _primary_group(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


@dataclass
class ManagedProcess:
    """A long-running process (an Airflow component, a database...) in its own process group,
    logging to a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    killed: bool = False

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as err:
            return f"<no log: {err}>"
        return "\n".join(text.splitlines()[-lines:])

    def terminate(self) -> None:
        """SIGTERM the whole process group (the component and the children it started)."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGTERM)  # new session: group id == leader pid

    def kill(self) -> None:
        """SIGKILL the whole process tree at once (once): the group and every descendant, also those
        that left the group; then reap the leader. On a live component this is a crash (a lost
        machine); after :meth:`terminate` it is the clean-up."""
        if self.killed:
            return
        self.killed = True
        descendants = _descendants(self.popen.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        for child in descendants:
            with contextlib.suppress(Exception):
                child.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the group, wait up to ``grace`` seconds for the leader, then SIGKILL the group."""
        self.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(grace)
        self.kill()


@dataclass
class AirflowHome:
    """A temporary AIRFLOW_HOME and the explicit environment of every process run in it. Its metadata
    DB is SQLite (``airflow.db`` in the home) or, with ``postgres_dsn``, a PostgreSQL database."""

    path: Path
    env: dict[str, str]
    processes: list[ManagedProcess] = field(default_factory=list)
    #: libpq DSN of the metadata DB when it is PostgreSQL (then ``settings`` carry its SQLAlchemy URL).
    postgres_dsn: str | None = None
    #: The warm CLI process, once a command asked for it.
    warm: WarmCli | None = None

    @classmethod
    def create(
        cls,
        path: Path,
        template_db: Path | None,
        *,
        dags_folder: Path,
        settings: Mapping[str, str] | None = None,
        postgres_dsn: str | None = None,
    ) -> AirflowHome:
        """A new home at ``path`` with a copy of the migrated SQLite ``template_db``; or, with
        ``template_db=None``, on the database ``settings`` name (migrate it with ``cli("db", "migrate")``)."""
        prepare_home(path)
        if template_db is not None:
            shutil.copyfile(template_db, path / "airflow.db")
        env = clean_env(
            path,
            {
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
                "AIRFLOW__CORE__FERNET_KEY": fernet_key(),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(16),
                **(settings or {}),
            },
        )
        return cls(path=path, env=env, postgres_dsn=postgres_dsn)

    @property
    def db_path(self) -> Path:
        return self.path / "airflow.db"

    # -- processes -----------------------------------------------------------------------------
    def cli(
        self,
        *args: str,
        extra_env: Mapping[str, str] | None = None,
        timeout: float = 120,
        warm: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``airflow <args>`` to completion; stdout and stderr are captured, never checked.

        Cold (the default): a new process, in its own process group, killed as a whole if it
        outlives ``timeout`` or if the test is interrupted (e.g. by pytest-timeout) while waiting
        for it. ``warm=True``: in this home's warm CLI process (:class:`WarmCli`), which is started
        on first use; ``extra_env`` must not change any ``AIRFLOW__*`` setting then.
        """
        env = {**self.env, **(extra_env or {})}
        if warm:
            return self._warm_cli().run(list(args), env, timeout=timeout)
        count_start("airflow CLI")
        return run_in_group([sys.executable, "-m", "airflow", *args], env=env, cwd=self.path, timeout=timeout)

    def _warm_cli(self) -> WarmCli:
        if self.warm is None or not self.warm.alive:
            self.warm = WarmCli(self.path, self.env)
        return self.warm

    def start(self, name: str, *args: str, extra_env: Mapping[str, str] | None = None) -> ManagedProcess:
        """Start ``airflow <args>`` in the background, in a new session (so its group can be killed)."""
        count_start("airflow component" if args[:1] != ("dags",) else "airflow CLI")
        process = spawn(
            name,
            [sys.executable, "-m", "airflow", *args],
            env={**self.env, **(extra_env or {})},
            cwd=self.path,
            log_path=self.path / f"{name}.out.log",
        )
        self.processes.append(process)
        return process

    def close(self) -> None:
        """Stop everything this home started: its warm CLI process and every :meth:`start`ed one."""
        if self.warm is not None:
            self.warm.stop()
            self.warm = None
        self.stop_all()

    def stop_all(self, grace: float = 15.0) -> None:
        """Stop every process started with :meth:`start`: SIGTERM all groups at once, give them
        ``grace`` seconds in all, then SIGKILL every group (children may outlive their leader)."""
        for process in self.processes:
            process.terminate()
        deadline = time.monotonic() + grace
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(max(0.1, deadline - time.monotonic()))
        for process in self.processes:
            process.kill()

    def diagnostics(self, lines: int = 60) -> str:
        """The tail of every started process's log, for a failure message."""
        return "\n".join(
            f"----- {p.name} (pid {p.popen.pid}, exit {p.popen.poll()}) -----\n{p.tail(lines)}"
            for p in self.processes
        )

    # -- metadata database (read only) ---------------------------------------------------------
    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one read-only query on the metadata DB (a fresh connection each time: no lock kept).
        Placeholders are ``?`` whatever the database."""
        if self.postgres_dsn is not None:
            import psycopg2  # the `distributed` extra

            pg = psycopg2.connect(self.postgres_dsn, connect_timeout=10)
            try:
                pg.set_session(readonly=True, autocommit=True)
                with pg.cursor() as cursor:
                    cursor.execute(sql.replace("?", "%s"), params)
                    return list(cursor.fetchall())
            finally:
                pg.close()
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def dags_test(
        self,
        dag_id: str,
        extra_env: Mapping[str, str] | None = None,
        *,
        timeout: float = 180,
        warm: bool = True,
    ) -> DagsTestRun:
        """One ``airflow dags test <dag_id>`` (in the warm CLI process unless ``warm=False``): the
        new run, with the command's exit status and output. Fails the test if it made no new run."""
        before = self.latest_run(dag_id)
        result = self.cli("dags", "test", dag_id, extra_env=extra_env, timeout=timeout, warm=warm)
        output = f"{result.stdout}\n{result.stderr}"
        latest = self.latest_run(dag_id)
        assert latest is not None, f"`dags test {dag_id}` created no run:\n{output[-4000:]}"
        assert latest != before, f"`dags test {dag_id}` created no new run:\n{output[-4000:]}"
        return DagsTestRun(self, dag_id, latest[0], result.returncode, result.stdout, result.stderr)

    def latest_run(self, dag_id: str) -> tuple[str, str] | None:
        """``(run_id, state)`` of the newest run of ``dag_id``, or None."""
        rows = self.query(
            "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", (dag_id, run_id))
        return rows[0][0] if rows else None

    def task_states(self, dag_id: str, run_id: str) -> dict[tuple[str, int], str | None]:
        """``{(task_id, map_index): state}`` of one run."""
        rows = self.query(
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
            (dag_id, run_id),
        )
        return {(task_id, map_index): state for task_id, map_index, state in rows}

    def xcoms(self, dag_id: str, run_id: str, task_id: str, key: str) -> dict[int, Any]:
        """``{map_index: value}`` of one XCom key of one task in one run, JSON-decoded."""
        rows = self.query(
            "SELECT map_index, value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = ?",
            (dag_id, run_id, task_id, key),
        )
        # PostgreSQL's driver hands JSON columns over decoded already; SQLite gives their text.
        decode = decode_xcom if self.postgres_dsn is None else (lambda value: value)
        return {map_index: decode(value) for map_index, value in rows}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str, map_index: int = -1) -> Any:
        """One XCom value (None if there is none)."""
        return self.xcoms(dag_id, run_id, task_id, key).get(map_index)


@dataclass
class DagsTestRun:
    """What one ``airflow dags test`` left: its exit status and output, and the run it made, read
    back from the home's metadata DB."""

    home: AirflowHome
    dag_id: str
    run_id: str
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return f"{self.stdout}\n{self.stderr}"

    def tail(self, lines: int = 80) -> str:
        """The end of the output, for an assertion message."""
        return "\n".join(self.output.splitlines()[-lines:])

    @property
    def state(self) -> str | None:
        return self.home.run_state(self.dag_id, self.run_id)

    def task_states(self) -> dict[tuple[str, int], str | None]:
        return self.home.task_states(self.dag_id, self.run_id)

    def xcom(self, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        return self.home.xcom(self.dag_id, self.run_id, task_id, key, map_index)

    def xcoms(self, task_id: str, key: str = "return_value") -> dict[int, Any]:
        return self.home.xcoms(self.dag_id, self.run_id, task_id, key)


class WarmCli:
    """One Python process that runs ``airflow`` commands one after another (``tests/airflow_cli_driver.py``:
    the ``airflow`` entry point, called once per command with the command's own environment and
    output files). Started with a home's environment, in its own process group; a command that
    outlives its time-out kills the group (the next command starts a new process)."""

    _ids = itertools.count()

    def __init__(self, home: Path, env: Mapping[str, str]) -> None:
        self.home = home
        self.env = dict(env)
        self.settings = _settings(env)
        self.number = next(self._ids)
        self.log_path = home / f"warm-cli-{self.number}.log"
        count_start("warm CLI process")
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                [sys.executable, str(CLI_DRIVER)],
                env=self.env,
                cwd=home,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                bufsize=1,
                start_new_session=True,
            )
        self.commands = 0
        self._answer(timeout=180, what="the warm CLI process to import Airflow")

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def _answer(self, timeout: float, what: str) -> dict[str, Any]:
        """The process's next answer line, or fail (killing it) after ``timeout`` seconds."""
        assert self.popen.stdout is not None
        import selectors

        with selectors.DefaultSelector() as selector:
            selector.register(self.popen.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout)
        line = self.popen.stdout.readline() if ready else ""
        if not line:
            self.stop()
            log = self.log_path.read_text(errors="replace")[-4000:]
            raise AssertionError(f"timed out after {timeout} s or died waiting for {what}:\n{log}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def run(
        self, argv: list[str], env: Mapping[str, str], *, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        changed = {k for k in set(self.settings) | set(_settings(env)) if self.settings.get(k) != env.get(k)}
        assert not changed, f"a warm command cannot change Airflow settings {sorted(changed)}: run it cold"
        self.commands += 1
        STARTS["commands run warm"] += 1
        out = self.home / f"warm-cli-{self.number}-{self.commands}.out"
        err = self.home / f"warm-cli-{self.number}-{self.commands}.err"
        request = {"argv": argv, "env": dict(env), "stdout": str(out), "stderr": str(err)}
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(request) + "\n")
        self.popen.stdin.flush()
        try:
            answer = self._answer(timeout, f"airflow {' '.join(argv)}")
        except AssertionError as error:
            output = "".join(p.read_text(errors="replace") for p in (out, err) if p.exists())
            raise AssertionError(f"{error}\noutput so far:\n{output[-4000:]}") from None
        return subprocess.CompletedProcess(
            ["airflow", *argv], int(answer["returncode"]), out.read_text(errors="replace"),
            err.read_text(errors="replace"),
        )  # fmt: skip

    def stop(self) -> None:
        """End the process: close its input (it then leaves its loop), give it a second, and kill its
        group (between commands it holds nothing worth a clean exit: each command's output is
        written, its DB session closed)."""
        with contextlib.suppress(OSError):
            if self.popen.stdin is not None:
                self.popen.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


def _settings(env: Mapping[str, str]) -> dict[str, str]:
    """The Airflow settings (``AIRFLOW__*``, ``AIRFLOW_HOME``/``_CONFIG``) of an environment."""
    return {
        k: v for k, v in env.items() if k.startswith("AIRFLOW__") or k in ("AIRFLOW_HOME", "AIRFLOW_CONFIG")
    }


def json_output(stdout: str) -> Any:
    """The JSON document a CLI command printed with ``--output json`` after any log lines."""
    lines = stdout.splitlines()
    for start in range(len(lines) - 1, -1, -1):
        if lines[start].startswith(("[", "{")):
            try:
                return json.loads("\n".join(lines[start:]))
            except ValueError:
                continue
    raise AssertionError(f"no JSON document in the output:\n{stdout}")


def decode_xcom(raw: Any) -> Any:
    """A value of a JSON column (XCom value, asset event extra) as SQLite returns it: JSON text,
    decoded once (a string value stays a string, even one that looks like a number)."""
    if raw is None:
        return None
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode()
    return json.loads(raw) if isinstance(raw, str) else raw


def wait_until(
    predicate: Callable[[], Any],
    *,
    timeout: float,
    interval: float = 0.5,
    what: str,
    diagnostics: Callable[[], str] = lambda: "",
) -> Any:
    """Call ``predicate`` until it returns something truthy (returned); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout:.0f} s waiting for {what}.\n{diagnostics()}")
        time.sleep(interval)
