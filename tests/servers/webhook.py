"""A real HTTP webhook receiver on 127.0.0.1, in a thread: records, verifies, fails on demand."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool | None  # None when the receiver has no secret

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookServer:
    """Control panel of a running receiver; ``url`` is its base, ``http://127.0.0.1:PORT``."""

    url: str = ""
    secret: str | None = None
    fail_times: int = 0  # answer ``fail_status`` to this many requests before succeeding
    fail_status: int = 500
    always_fail_paths: set[str] = field(default_factory=set)
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)  # accepted (2xx) requests
    rejected: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def verify(self, headers: dict[str, str], body: bytes) -> bool | None:
        """Recompute the signature the way a receiver documented in the notifier would."""
        if self.secret is None:
            return None
        ts = headers.get("x-triggergate-timestamp", "")
        sig = headers.get("x-triggergate-signature", "")
        mac = hmac.new(self.secret.encode(), ts.encode() + b"." + body, hashlib.sha256)
        return bool(ts) and hmac.compare_digest(sig, "sha256=" + mac.hexdigest())


def _handler(server: WebhookServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            seen = Received(self.path, headers, body, server.verify(headers, body))
            if server.delay:
                time.sleep(server.delay)
            with server.lock:
                failing = server.fail_times > 0 or self.path in server.always_fail_paths
                if server.fail_times > 0:
                    server.fail_times -= 1
                if seen.signature_ok is False:
                    status = 401
                elif failing:
                    status = server.fail_status
                else:
                    status = 204
                (server.received if status == 204 else server.rejected).append(seen)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return  # keep the test output clean

    return Handler


@contextmanager
def webhook_server(secret: str | None = None) -> Iterator[WebhookServer]:
    """Serve on a free 127.0.0.1 port until the block ends."""
    state = WebhookServer(secret=secret)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
