"""Run a contract app under uvicorn on a free 127.0.0.1 port, with injectable faults.

Faults are consumed in order by the next matching requests:

- ``Fault(status=429, retry_after="1")``: answer that status at once, in the
  system's error shape (or ``body``, with extra ``headers``), without processing
  (the server said "not now");
- ``Fault(after="error", status=503)``: process the request (the run starts), then
  answer that status instead of the real answer, as a gateway that timed out
  waiting for an upstream which did the work;
- ``Fault(after="drop")``: process the request, send the response head, then
  close the connection (the client cannot know whether it worked);
- ``Fault(after="hang", seconds=2)``: process the request, then answer only
  after ``seconds`` (longer than the client's timeout).

``refusal`` answers every request with a fixed status until cleared.
:func:`serve_later` binds a port that refuses connections until it is opened: a
start sent there provably never reached the system.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass
class Fault:
    """One injected misbehaviour for the next request with ``method``."""

    status: int = 0
    retry_after: str | None = None
    after: str = ""
    seconds: float = 0.0
    method: str = "POST"
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


ErrorBody = Callable[[int], tuple[bytes, str]]


class Faults:
    """The fault queue and request log a contract server shares with its test."""

    def __init__(self, error_body: ErrorBody) -> None:
        self.error_body = error_body
        self.queue: list[Fault] = []
        self.refusal: int | None = None
        self.log: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def inject(self, *faults: Fault) -> None:
        with self.lock:
            self.queue.extend(faults)

    def take(self, method: str) -> Fault | None:
        with self.lock:
            if self.refusal is not None:
                return Fault(status=self.refusal, method=method)
            for i, fault in enumerate(self.queue):
                if fault.method == method:
                    return self.queue.pop(i)
        return None

    def count(self, method: str, path_part: str = "") -> int:
        with self.lock:
            return sum(1 for m, p in self.log if m == method and path_part in p)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def faulty(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            with self.lock:
                self.log.append((scope["method"], scope["path"]))
            fault = self.take(scope["method"])
            if fault is None:
                await app(scope, receive, send)
            elif fault.after == "error":

                async def swallow(message: Message) -> None:
                    return None

                await app(scope, receive, swallow)  # the work is done, its answer lost
                await self._answer(fault, send)
            elif fault.status:
                await self._answer(fault, send)
            elif fault.after == "drop":

                async def head_only(message: Message) -> None:
                    if message["type"] == "http.response.start":
                        # Promise one byte more than the body, so even an empty answer is cut.
                        given = dict(message["headers"]).get(b"content-length", b"0")
                        headers = [(k, v) for k, v in message["headers"] if k != b"content-length"]
                        length = str(int(given) + 1).encode()
                        await send({**message, "headers": [*headers, (b"content-length", length)]})

                # Returning after the head makes uvicorn close the connection mid-response.
                await app(scope, receive, head_only)
            else:
                held: list[Message] = []

                async def hold(message: Message) -> None:
                    held.append(message)

                await app(scope, receive, hold)
                await asyncio.sleep(fault.seconds)
                for message in held:
                    await send(message)

        return faulty

    async def _answer(self, fault: Fault, send: Send) -> None:
        body, content_type = self.error_body(fault.status)
        if fault.body is not None:
            body = fault.body.encode()
        headers = [(b"content-type", content_type.encode())]
        if fault.retry_after is not None:
            headers.append((b"retry-after", fault.retry_after.encode()))
        headers += [(k.lower().encode(), v.encode()) for k, v in fault.headers.items()]
        await send({"type": "http.response.start", "status": fault.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def serve(app: ASGIApp, lifespan: Literal["on", "off"] = "off") -> Iterator[str]:
    """Serve ``app`` on a free 127.0.0.1 port in a thread; yield its base URL; stop it."""
    with serve_later(app, lifespan) as (url, start):
        start()
        yield url


@contextlib.contextmanager
def serve_later(
    app: ASGIApp, lifespan: Literal["on", "off"] = "off"
) -> Iterator[tuple[str, Callable[[], None]]]:
    """Bind a free 127.0.0.1 port and yield (base URL, start): until ``start()`` is called
    the port is bound but not listening, so the kernel refuses every connection to it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="critical", lifespan=lifespan, timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)

    def start() -> None:  # uvicorn calls listen() on the socket as it starts serving
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("contract server did not start")
            time.sleep(0.01)

    try:
        yield f"http://127.0.0.1:{port}", start
    finally:
        server.should_exit = True
        if thread.is_alive():
            thread.join(timeout=5)
        sock.close()
