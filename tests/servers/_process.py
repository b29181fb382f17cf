"""Helpers shared by the server fixtures: free ports, waiting, stopping by PID."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest

SYSTEM_DEPS = Path(__file__).resolve().parents[2] / "scripts" / "system-deps.txt"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def system_deps() -> dict[str, str]:
    """binary -> Debian package, from the one list the setup script installs from."""
    listed: dict[str, str] = {}
    for line in SYSTEM_DEPS.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            listed[fields[0]] = fields[1]
    return listed


def require_binary(name: str) -> str:
    """The path of a binary from ``scripts/system-deps.txt``; a test failure when it is missing.

    ``make test`` installs every listed binary first (``scripts/system-deps.sh``), so a
    missing one is a broken setup, never a reason to skip. Searched where the setup
    script searches: PATH, the sbin folders, and Debian's PostgreSQL folder.
    """
    listed = system_deps()
    if name not in listed:
        pytest.fail(f"{name} is not in {SYSTEM_DEPS.name}: list it there so the setup installs it")
    postgres = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version)[-1:]
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", *postgres])
    found = shutil.which(name, path=search)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make system-deps` (apt-get install -y {listed[name]})")
    return found


def _version(folder: str) -> tuple[int, ...]:
    return tuple(int(part) for part in Path(folder).parent.name.split(".") if part.isdigit())


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    """Return once 127.0.0.1:port accepts connections; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours still answers signal 0; it is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_pid(pid: int, sig: signal.Signals = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Send ``sig`` to ``pid`` and wait (bounded) until it is gone; SIGKILL as a last resort."""
    try:
        os.kill(pid, signal.SIGCONT)  # a paused server cannot act on SIGTERM
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc), e.g. PostgreSQL's backends."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found
