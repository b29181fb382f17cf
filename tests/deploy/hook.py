"""A pipeline start that takes as long as the test says: a webhook that holds every call.

The ``webhook+http`` backend answers a trigger only once its hook has answered, so a
hook that holds calls keeps that many requests in flight inside the server, for as
long as the test wants (say, across a SIGTERM).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class HeldHook:
    """Control of a running hook; ``url`` is the pipeline URL that starts through it."""

    url: str = ""
    release: threading.Event = field(default_factory=threading.Event)
    arrived: list[float] = field(default_factory=list)
    answered: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_arrived(self, count: int, timeout: float = 30) -> None:
        """Return once ``count`` starts are held; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.arrived) >= count:
                    return
            time.sleep(0.05)
        raise AssertionError(f"{len(self.arrived)} of {count} pipeline starts arrived in {timeout} s")


def _handler(hook: HeldHook) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with hook.lock:
                hook.arrived.append(time.monotonic())
            hook.release.wait(timeout=60)  # bounded: a test that forgets to release still ends
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            with hook.lock:
                hook.answered += 1

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextmanager
def held_hook() -> Iterator[HeldHook]:
    """A hook on a free 127.0.0.1 port until the block ends (released on the way out)."""
    hook = HeldHook()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hook))
    httpd.daemon_threads = True
    hook.url = f"webhook+http://127.0.0.1:{httpd.server_address[1]}/hook"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield hook
    finally:
        hook.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
