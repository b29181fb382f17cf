"""Helpers for the command:// backend tests: scripts in tmp_path, polling, process checks."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from triggergate.backends.base import FINAL_STATES, Status
from triggergate.backends.command import CommandBackend
from triggergate.registry import Context, backend_from_url

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-pipeline"
DUMP = f"""#!{sys.executable}
# Writes the exact argv and environment bytes this process received to argv[1].
import json, os, sys
environ = open("/proc/self/environ", "rb").read()
argv = [os.fsencode(a).hex() for a in sys.argv[2:]]
open(sys.argv[1], "w").write(json.dumps({{"argv": argv, "environ": environ.hex()}}))
"""


def script(tmp_path: Path, body: str, name: str = "pipeline.sh", bash: bool = True) -> Path:
    """An executable file in tmp_path: a strict bash script, or ``body`` as it is."""
    path = tmp_path / name
    path.write_text(("#!/usr/bin/env bash\nset -euo pipefail\n" if bash else "") + body)
    path.chmod(0o755)
    return path


def environ(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": str(tmp_path), **extra}


def backend(path: Path, state_dir: Path, query: str = "", **ctx: Any) -> CommandBackend:
    url = f"command://{quote(str(path))}" + (f"?{query}" if query else "")
    built = backend_from_url(url, Context(state_dir=state_dir, environ=environ(state_dir), **ctx))
    assert isinstance(built, CommandBackend)
    return built


async def wait_final(b: CommandBackend, ref: str, limit: float = 20.0) -> list[Status]:
    """Poll until the run reaches a final state; every distinct status seen, in order."""
    seen: list[Status] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status = await b.status(ref)
        if not seen or seen[-1] != status:
            seen.append(status)
        if status.state in FINAL_STATES:
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {ref} not final after {limit} s: {seen}")


def status_doc(b: CommandBackend, ref: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((b.log_path(ref).parent / "status.json").read_text())
    return doc


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie nobody reaped is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


def live_in_group(pgid: int) -> list[int]:
    """Pids of processes in group ``pgid`` that are not zombies."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            live.append(int(stat.parent.name))
    return live


def env_of(dump: Path) -> dict[bytes, bytes]:
    raw = bytes.fromhex(json.loads(dump.read_text())["environ"])
    return dict(item.split(b"=", 1) for item in raw.split(b"\0") if item)


async def until(condition: Callable[[], bool], limit: float = 10.0) -> None:
    """Wait (bounded) until ``condition()`` holds; fail the test if it never does."""
    for _ in range(int(limit / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition still false after {limit} s")


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def is_empty(folder: Path) -> bool:
    return not any(folder.iterdir())
