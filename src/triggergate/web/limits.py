"""Refuse oversized request heads with 431 before any route or store is reached.

Two layers. :class:`BoundedHttpTools` is the uvicorn protocol ``triggergate
serve`` runs: httptools alone buffers a request head of any size (measured: a
2 MB header was read whole and answered 200), so it counts the bytes of each
head as they arrive and, past ``MAX_HEAD_BUFFER``, answers 431 and closes
without reading more. :class:`HeadLimit` (ASGI) gives the same answer for
heads above ``MAX_HEADER_BYTES`` that arrived whole, under any server, and
refuses over-long URLs with 414.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 8192  # nginx's default large_client_header_buffers line size
MAX_TARGET_BYTES = 4096
MAX_HEAD_BUFFER = 65536  # bytes a head may reach in the server before the 431


async def _refuse(send: Send, status: int, code: str, detail: str) -> None:
    body = json.dumps({"error": code, "detail": detail, "request_id": ""}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class HeadLimit:
    """431 when the request's headers, all together, exceed ``MAX_HEADER_BYTES``; 414 for URLs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
            if size > MAX_HEADER_BYTES:
                await _refuse(send, 431, "headers_too_large", "the request headers are too large")
                return
            target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            if target > MAX_TARGET_BYTES:
                await _refuse(send, 414, "uri_too_long", "the request URL is too long")
                return
        await self.app(scope, receive, send)


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, with each request head's size bounded.

    Bytes are counted from the end of one head to the end of the next, so a
    pipelined burst may be counted a little high; the bound stays far above
    any real head.
    """

    _head_bytes = 0
    _in_head = True
    _too_large = False

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BUFFER:
                self._too_large = True
                self.send_400_response("request head too large")
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._too_large:
            super().send_400_response(msg)
            return
        body = b'{"error":"headers_too_large","detail":"the request headers are too large","request_id":""}'
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
        )
        self.transport.close()
