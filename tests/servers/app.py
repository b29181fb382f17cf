"""Start real ``triggergate serve`` processes on free loopback ports; stop them by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class AppServer:
    """A running server process group (uvicorn supervisor and its workers)."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group and wait for the supervisor to exit."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_app(
    workdir: Path,
    env: dict[str, str],
    *,
    workers: int = 1,
    port: int | None = None,
    timeout: float = 30,
) -> AppServer:
    """Run ``python -m triggergate serve`` in ``workdir`` with only the given TRIGGERGATE_* env."""
    port = port or free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGERGATE_")}
    log = workdir / f"server-{port}.log"
    handle = log.open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "triggergate",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        cwd=workdir,
        env={**clean, **env},
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    handle.close()
    server = AppServer(proc, port, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.output()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"server did not become healthy:\n{server.output()[-3000:]}")
