"""Helpers shared by the server fixtures: free ports, waiting, stopping by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def require_binary(path: str, install: str) -> str:
    """The binary's path; a failure under CI, else a skip naming the install command."""
    found = shutil.which(path)
    if found:
        return found
    message = f"{path} is not installed; install it with: {install}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


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
