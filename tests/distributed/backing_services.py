"""PostgreSQL and Redis for the distributed test, started on loopback from the test itself.

Each server gets a fresh data directory and a free port, runs in its own process group
(:func:`airflow_helpers.spawn`) and is stopped (and its data removed) by :meth:`stop`, whatever happened.
Nothing is installed here: ``scripts/install-distributed-deps.sh`` (``make test-distributed``) does that.
A missing binary or a server that does not come up is an error, never a skip.

PostgreSQL refuses to run as root: as root, ``initdb`` and ``postgres`` run as the ``postgres`` user
(created by Debian's package; else ``nobody``) on a data directory under ``/tmp`` that it owns
(pytest's own temporary directories are private to root); otherwise they run as the current user.

Example::

    with PostgresServer() as pg, RedisServer(tmp_path) as redis:
        pg.sqlalchemy_url   # postgresql+psycopg2://airflow@127.0.0.1:PORT/airflow
        redis.url           # redis://127.0.0.1:PORT/0
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from airflow_helpers import ManagedProcess, free_port, spawn, wait_until
from typing_extensions import Self

DB_USER = "airflow"
DB_NAME = "airflow"
#: Runs PostgreSQL when the test runs as root.
PG_SYSTEM_USER = "postgres"


def postgres_bin(name: str) -> str:
    """Path of a PostgreSQL server binary (``initdb``, ``postgres``): Debian keeps them out of PATH,
    under ``/usr/lib/postgresql/<version>/bin``; the newest version wins, then PATH."""
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[4]) if Path(p).parts[4].isdigit() else 0,
        reverse=True,
    )
    found = candidates[0] if candidates else shutil.which(name)
    if not found:
        raise RuntimeError(
            f"PostgreSQL's {name} not found (looked in /usr/lib/postgresql/*/bin and PATH): "
            "run scripts/install-distributed-deps.sh (as root), or install PostgreSQL yourself"
        )
    return found


def _unprivileged_user() -> str:
    """Who runs PostgreSQL when the test runs as root: ``postgres`` (Debian's package creates it),
    else ``nobody``."""
    for name in (PG_SYSTEM_USER, "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError(
        "running as root, but neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL"
    )


def _server_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


class _Service:
    """``with``: started on entry (stopped again if the start fails), stopped on exit."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class PostgresServer(_Service):
    """A throw-away PostgreSQL cluster on 127.0.0.1 (trust auth, no fsync: test data only)."""

    def __init__(self, startup_timeout: float = 60.0) -> None:
        self.startup_timeout = startup_timeout
        self.user = _unprivileged_user() if os.geteuid() == 0 else None
        self.port = 0
        self.root: Path | None = None
        self.process: ManagedProcess | None = None

    @property
    def dsn(self) -> str:
        """libpq DSN of the ``airflow`` database."""
        return f"host=127.0.0.1 port={self.port} user={DB_USER} dbname={DB_NAME}"

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{self.port}/{DB_NAME}"

    def start(self) -> PostgresServer:
        import psycopg2

        self.root = Path(tempfile.mkdtemp(prefix="kirin-pg-"))
        data = self.root / "data"
        data.mkdir()
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in (self.root, data):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        gid = pwd.getpwnam(self.user).pw_gid if self.user is not None else None
        initdb = subprocess.run(
            [
                postgres_bin("initdb"),
                "-D",
                str(data),
                "-U",
                DB_USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            env=_server_env(),
            cwd=self.root,
            user=self.user,
            group=gid,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed ({initdb.returncode}):\n{initdb.stdout}\n{initdb.stderr}")
        self.port = free_port()
        self.process = spawn(
            "postgres",
            [
                postgres_bin("postgres"),
                "-D",
                str(data),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                str(self.root),  # its Unix socket, out of the system's /var/run/postgresql
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ],
            env=_server_env(),
            cwd=self.root,
            log_path=self.root / "postgres.log",
            user=self.user,
        )

        def ready() -> bool:
            if not self.process or not self.process.alive:
                raise AssertionError(f"postgres exited early:\n{self.log_tail()}")
            try:
                psycopg2.connect(f"host=127.0.0.1 port={self.port} user={DB_USER} dbname=postgres").close()
            except psycopg2.OperationalError:
                return False
            return True

        wait_until(
            ready,
            timeout=self.startup_timeout,
            what="PostgreSQL to accept connections",
            diagnostics=self.log_tail,
        )
        conn = psycopg2.connect(f"host=127.0.0.1 port={self.port} user={DB_USER} dbname=postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {DB_NAME}")
        finally:
            conn.close()
        return self

    def log_tail(self, lines: int = 40) -> str:
        return self.process.tail(lines) if self.process else "<postgres not started>"

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=10)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


class RedisServer(_Service):
    """A throw-away Redis on 127.0.0.1 (no persistence), the Celery broker."""

    def __init__(self, root: Path, startup_timeout: float = 30.0) -> None:
        self.root = root
        self.startup_timeout = startup_timeout
        self.port = 0
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        import redis

        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server not found on PATH: run scripts/install-distributed-deps.sh (as root), "
                "or install Redis yourself"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process = spawn(
            "redis",
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],
            env=_server_env(),
            cwd=self.root,
            log_path=self.root / "redis.log",
        )

        def ready() -> bool:
            if not self.process or not self.process.alive:
                raise AssertionError(f"redis-server exited early:\n{self.process and self.process.tail()}")
            with contextlib.suppress(redis.exceptions.ConnectionError):
                return bool(redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2).ping())
            return False

        wait_until(ready, timeout=self.startup_timeout, what="Redis to answer PING")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=10)
