"""Shared helpers for the hardening suite: real servers, loopback clients, store reads, scans."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.servers.app import AppServer, start_app

COUNTING_PIPELINE = """#!/bin/sh
echo "$TRIGGERGATE_RUN_ID" >> "{runs}"
"""

# What must never reach a response, a log line, an alert or an audit record.
SECRET_PATTERNS = {
    "arn": re.compile(r"arn:aws[a-z-]*:", re.I),
    "account_id": re.compile(r"(?<![0-9A-Za-z])\d{12}(?![0-9A-Za-z])"),
    # user:password@ in a URL; a password masked as *** is what the adapters must log.
    "userinfo": re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@\"']*:(?!\*\*\*@)[^/\s@\"']+@", re.I),
    "traceback": re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+"),
    "github_token": re.compile(r"gh[pousr]_[A-Za-z0-9]{10,}"),
    "gitlab_token": re.compile(r"glpat-[A-Za-z0-9_-]{10,}"),
    "aws_key": re.compile(r"AKIA[0-9A-Z]{16}"),
    "file_path": re.compile(r"(?<![\w.])/(?:work|tmp|usr|home|root|etc|var|opt)/[\w./-]+"),
    "redis_auth": re.compile(r"WRONGPASS|NOAUTH|invalid username-password", re.I),
}


def leaks(text: str, extra: tuple[str, ...] = ()) -> list[str]:
    """Names of the secret patterns (and literal ``extra`` values) found in ``text``."""
    found = [name for name, pattern in SECRET_PATTERNS.items() if pattern.search(text)]
    return found + [f"literal:{value[:12]}" for value in extra if value and value in text]


def pipeline_script(workdir: Path, body: str | None = None) -> Path:
    """An executable pipeline that appends its run id to ``started.txt`` (or runs ``body``)."""
    script = workdir / "pipeline.sh"
    script.write_text(body or COUNTING_PIPELINE.format(runs=workdir / "started.txt"))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def base_env(workdir: Path, **extra: str) -> dict[str, str]:
    """A SQLite store in ``workdir``, a counting command pipeline, 3/7d, quiet logs."""
    pipeline_script(workdir)
    return {
        "TRIGGERGATE_STORE": f"sqlite:///{workdir}/gate.db",
        "TRIGGERGATE_PIPELINE": f"command://{workdir}/pipeline.sh",
        "TRIGGERGATE_LIMITS": "3/7d",
        "TRIGGERGATE_STATE_DIR": str(workdir / "state"),
        "TRIGGERGATE_COALESCE": "false",
        "TRIGGERGATE_LOG_LEVEL": "INFO",
        **extra,
    }


@contextlib.contextmanager
def serving(workdir: Path, env: dict[str, str], workers: int = 1) -> Iterator[AppServer]:
    """A real ``triggergate serve`` process for the block, stopped by PID after."""
    server = start_app(workdir, env, workers=workers)
    try:
        yield server
    finally:
        server.stop()


def started_runs(workdir: Path, expect: int = 0, timeout: float = 15) -> list[str]:
    """Run ids the pipeline wrote, waiting (bounded) until at least ``expect`` are there."""
    path = workdir / "started.txt"
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().split() if path.exists() else []
        if len(lines) >= expect or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


async def press(
    url: str, source: str, count: int = 1, path: str = "/trigger", **kwargs: Any
) -> list[httpx.Response]:
    """``count`` simultaneous POSTs from the loopback address ``source``."""
    transport = httpx.AsyncHTTPTransport(local_address=source)
    limits = httpx.Limits(max_connections=max(1, count))
    async with httpx.AsyncClient(transport=transport, limits=limits, timeout=30) as client:
        return await asyncio.gather(*(client.post(url + path, **kwargs) for _ in range(count)))


def db(workdir: Path) -> sqlite3.Connection:
    """A plain read connection to the server's SQLite file, for assertions."""
    conn = sqlite3.connect(f"file:{workdir}/gate.db?mode=ro", uri=True, timeout=5)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def audits(workdir: Path) -> list[dict[str, Any]]:
    with contextlib.closing(db(workdir)) as conn:
        rows = conn.execute("SELECT doc FROM records WHERE kind='audit' ORDER BY at").fetchall()
    return [json.loads(row[0]) for row in rows]


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of a server log as JSON; an AssertionError names the first that is not."""
    out = []
    for line in text.splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError as exc:
                raise AssertionError(f"log line is not JSON: {line[:200]!r}") from exc
    return out


async def raw_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """Send one HTTP/1.1 request on a kept-alive connection; (status, body) of the answer."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


def post_bytes(path: str = "/trigger", headers: dict[str, str] | None = None) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return f"POST {path} HTTP/1.1\r\nHost: gate\r\nContent-Length: 0\r\n{extra}\r\n".encode()


async def raw_flood(
    port: int, source: str, total: int, connections: int = 16, request: bytes | None = None
) -> list[tuple[int, bytes]]:
    """``total`` requests from ``source`` over ``connections`` kept-alive sockets (httpx's
    per-request cost would make a 10,000-request flood measure the client, not the server)."""
    request = request or post_bytes()
    results: list[tuple[int, bytes]] = []
    share = [total // connections + (i < total % connections) for i in range(connections)]

    async def worker(count: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        try:
            for _ in range(count):
                results.append(await raw_request(reader, writer, request))
        finally:
            writer.close()

    await asyncio.gather(*(worker(n) for n in share if n))
    return results


async def raw_once(port: int, source: str, request: bytes | None = None) -> tuple[int, bytes]:
    """One request from ``source`` on a fresh connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        return await raw_request(reader, writer, request or post_bytes())
    finally:
        writer.close()
