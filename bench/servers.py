"""Processes for the benchmark: servers pinned to a core, redis-server, wrk, /proc readings."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU = "0"
CLIENT_CPU = "1"
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpu: str, argv: list[str]) -> list[str]:
    """``argv`` pinned to ``cpu`` when taskset exists and the machine has that core."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > int(cpu):
        return ["taskset", "-c", cpu, *argv]
    return argv


@dataclass
class Proc:
    """A process we started (in its own session), stopped by its PID only."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


def start(
    name: str, argv: list[str], env: dict[str, str], workdir: Path, port: int, timeout: float = 240
) -> Proc:
    """Start ``argv`` on the server core; return once ``port`` accepts connections."""
    log = workdir / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            pinned(SERVER_CPU, argv),
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = Proc(name, proc, port, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{name} did not listen within {timeout}s")


def python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def start_redis(workdir: Path) -> Proc:
    """A throwaway redis-server on the client core (the server core is the app's alone)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    folder = workdir / "redis"
    folder.mkdir(exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
    argv += ["--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction"]
    log = workdir / "redis.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            pinned(CLIENT_CPU, argv), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Proc("redis", proc, port, log)
    for _ in range(150):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("redis-server did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of every thread of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def ensure_wrk() -> str:
    """wrk's path, installing the Debian package when it is missing."""
    found = shutil.which("wrk")
    if found is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True)
        found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed and could not be installed")
    return found


@dataclass
class WrkResult:
    requests: int
    seconds: float
    non2xx: int
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


_DURATION = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def wrk(port: int, script: str, env: dict[str, str], seconds: float, connections: int = 64) -> WrkResult:
    """One wrk run from the client core: 2 threads, ``connections`` keep-alive connections."""
    argv = [ensure_wrk(), "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    argv += ["-s", str(ROOT / "bench" / script), f"http://127.0.0.1:{port}"]
    out = subprocess.run(
        pinned(CLIENT_CPU, argv),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if total is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        requests=int(total[1]),
        seconds=float(total[2]) * _DURATION[total[3]],
        non2xx=int(non2xx[1]) if non2xx else 0,
        errors=sum(int(x) for x in errors.groups()) if errors else 0,
    )
