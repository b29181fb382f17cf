"""The SQLite store's two connections: inline reads, and writes serialised across processes.

WAL mode lets readers run beside one writer. Every write runs in one
``BEGIN IMMEDIATE`` transaction on a single writer thread per process (a
deferred transaction that upgrades to a write fails with BUSY without waiting);
reads run inline on the event loop's thread, since a WAL read never waits for a
writer. A write runs inline too when nobody else is writing; otherwise it waits
on the writer thread. Writers of all processes queue on an ``flock`` beside the
database before ``BEGIN IMMEDIATE``: SQLite's own busy handler polls with growing
sleeps and starves writers under contention, while a blocked ``flock`` wakes as
soon as the lock is free. A write that waited past its deadline is not executed
at all (the caller has already answered 503).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from triggergate.errors import StoreError

T = TypeVar("T")
BUSY_TIMEOUT_MS = 800


class Connections:
    """The reader and writer connections of one process, and the lock file beside them."""

    def __init__(self, path: Path, synchronous: str, write_timeout: float) -> None:
        self.path = path
        self.synchronous = synchronous
        self.write_timeout = write_timeout
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._guard = threading.Lock()  # one user of the writer connection at a time
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        return conn

    def open(self, prepare: Callable[[sqlite3.Connection], None]) -> None:
        """Connect, switch to WAL and run ``prepare`` (the schema) on the writer."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            writer = self._connect()
            if writer.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
                raise StoreError(f"sqlite store {self.path.name}: WAL mode unavailable")
            prepare(writer)
            self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            # No mmap and SQLite's default 2 MB page cache: a flood of a million
            # spent clients is served from the OS page cache (pread), so the
            # server's own memory stays flat (measured in docs/benchmarks.md).
            self._writer, self._reader = writer, self._connect()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"sqlite store {self.path.name}: cannot open ({exc})") from exc

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for conn in (self._reader, self._writer):
            if conn is not None:
                conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        self._reader = self._writer = self._lock_fd = None

    # -- reads -------------------------------------------------------------------------

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._reader is None:
            raise StoreError("sqlite store is not open")
        try:
            return fn(self._reader)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store read failed: {exc}") from exc

    # -- writes ------------------------------------------------------------------------

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        writer, lock_fd = self._writer, self._lock_fd
        if writer is None or lock_fd is None:
            raise StoreError("sqlite store is not open")
        deadline = time.monotonic() + self.write_timeout

        def transaction() -> T:
            writer.execute("BEGIN IMMEDIATE")
            try:
                result = fn(writer)
            except BaseException:
                writer.execute("ROLLBACK")
                raise
            writer.execute("COMMIT")
            return result

        def run() -> T:
            with self._guard:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                try:
                    if time.monotonic() > deadline:
                        raise StoreError("sqlite store: write lock not obtained in time")
                    return transaction()
                finally:
                    fcntl.flock(lock_fd, fcntl.LOCK_UN)

        try:
            # Nobody writing, here or in another process: a short transaction inline
            # costs less than the hop to the writer thread and back (the accept path
            # makes two). Otherwise wait for the lock on the writer thread.
            if self._guard.acquire(blocking=False):
                try:
                    try:
                        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        pass
                    else:
                        try:
                            return transaction()
                        finally:
                            fcntl.flock(lock_fd, fcntl.LOCK_UN)
                finally:
                    self._guard.release()
            return await asyncio.get_running_loop().run_in_executor(self._pool, run)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store write failed: {exc}") from exc
