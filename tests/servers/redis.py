"""A real ``redis-server`` on a free 127.0.0.1 port, in a temporary directory, for the session.

The fixture ``redis_server`` yields a :class:`RedisServer` whose ``stop``/``start``
simulate an outage (same port) and ``pause``/``resume`` a stalled server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.servers._process import free_port, require_binary, stop_pid, wait_for_port
from tests.servers.smtp import TLSFiles, tls_files


class RedisServer:
    """One redis-server process; ``url`` points at database 0."""

    def __init__(self, binary: str, folder: Path, tls: TLSFiles | None = None) -> None:
        self.binary = binary
        self.folder = folder
        self.tls = tls
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.tls:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.ca}"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the server is not running"
        return self.process.pid

    def start(self) -> None:
        """Start (or restart, on the same port) and return once it accepts connections."""
        port = ["--port", str(self.port)]
        if self.tls:
            port = ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            port += ["--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)]
            port += ["--tls-ca-cert-file", str(self.tls.ca)]
        argv = [self.binary, *port, "--bind", "127.0.0.1", "--dir", str(self.folder)]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "redis.log"]
        self.process = subprocess.Popen(argv, cwd=self.folder, stdin=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        """Stop the server by PID (its data is lost: persistence is off)."""
        if self.process is not None:
            stop_pid(self.process.pid)
            self.process.wait(timeout=5)
            self.process = None

    def client(self) -> redis.Redis:
        """A synchronous client for assertions (DBSIZE, TTL, CONFIG SET)."""
        tls: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(self.tls.ca)} if self.tls else {}
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, **tls)

    def flush(self) -> None:
        """Empty every database: each test starts from nothing."""
        with self.client() as client:
            client.flushall()

    def pause(self) -> None:
        """SIGSTOP: the port still accepts TCP connections, nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.pause()
        try:
            yield
        finally:
            self.resume()


@contextlib.contextmanager
def running(tls: bool = False) -> Iterator[RedisServer]:
    """A redis-server in a fresh temporary directory (TLS-only with a throwaway CA if asked)."""
    binary = require_binary("redis-server")
    with tempfile.TemporaryDirectory(prefix="tg-redis-") as folder:
        server = RedisServer(binary, Path(folder), tls_files(Path(folder)) if tls else None)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A running redis-server for the whole session (a test failure when it is missing)."""
    with running() as server:
        yield server
