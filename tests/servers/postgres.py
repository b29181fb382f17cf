"""A real PostgreSQL server on a free 127.0.0.1 port, in a temporary directory, for the session.

PostgreSQL refuses to run as root, so when the suite runs as root the cluster
belongs to the ``postgres`` user and every binary runs through ``runuser``. The
fixture ``postgres_server`` yields a :class:`PostgresServer` whose ``stop``/``start``
simulate an outage (same port) and ``pause``/``resume`` a stalled server.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.servers._process import children, free_port, require_binary, stop_pid, wait_for_port

PASSWORD = "tg-test-secret"


def _binary(name: str) -> str:
    """Debian keeps the server binaries off PATH; require_binary looks where they are."""
    return require_binary(name)


class PostgresServer:
    """One PostgreSQL cluster; ``url`` connects as the superuser with a password over TCP."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.pid = 0
        self._as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        subprocess.run([*self._as_user, *argv], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        if self._as_user:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        pwfile = self.folder / "pwfile"
        pwfile.write_text(PASSWORD, encoding="utf-8")
        if self._as_user:
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
        self._run(
            _binary("initdb"), "-D", str(self.data), "-U", "postgres", f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        """Start (or restart, on the same port) and return once it accepts connections."""
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        # pg_ctl fails silently without a log file it can write: keep it inside the data dir.
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-l", str(self.data / "server.log"),
                  "-w", "-t", "30", "-o", options, "start")  # fmt: skip
        self.pid = int((self.data / "postmaster.pid").read_text(encoding="ascii").split()[0])
        wait_for_port(self.port)

    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT to the postmaster), bounded."""
        if self.pid:
            stop_pid(self.pid, signal.SIGINT)
            self.pid = 0

    def _signal_all(self, sig: signal.Signals) -> None:
        for pid in [self.pid, *children(self.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def pause(self) -> None:
        """SIGSTOP the postmaster and every backend: TCP still connects, nothing answers."""
        self._signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_all(signal.SIGCONT)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        """A synchronous autocommit connection for assertions (row counts, settings)."""
        return psycopg.connect(self.url, autocommit=True, connect_timeout=5)

    def reset(self) -> None:
        """Drop everything the store created: each test starts from an empty database."""
        with self.connect() as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL for the whole session (a test failure when it is missing)."""
    _binary("postgres")
    folder = Path(tempfile.mkdtemp(prefix="tg-pg-"))
    server = PostgresServer(folder)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
