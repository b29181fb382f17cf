"""Refuse spent clients' ``POST /trigger`` before routing: the flood path costs almost nothing.

Under attack nearly every request is a denial. This pure ASGI wrapper sits
outside the whole Starlette stack (see :class:`triggergate.web.app.TriggergateApp`)
and answers those itself, with exactly the status, body and headers the full
route would send, and passes everything else on untouched. It answers only requests the
route would refuse the same way: anything the route would answer differently
(a form for a browser, a cross-site form, a body that is too large, not JSON,
or not valid parameters, a bad client address, a deny-listed client, a pause)
falls through, with whatever body was read replayed to the route.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from triggergate.errors import RequestError
from triggergate.metrics import DECISIONS
from triggergate.models import Outcome, check_idempotency_key, validate_params
from triggergate.service import Service
from triggergate.web.body import MAX_BODY, parse_payload  # a longer body: the route's 413
from triggergate.web.limits import MAX_HEADER_BYTES, MAX_TARGET_BYTES
from triggergate.web.page import FORM_TYPE, prefers_html

# JSONResponse's exact rendering; one encoder, not one per response as json.dumps(**options) makes.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
_ERROR_KEYS = {"error": None, "detail": None, "request_id": None}.keys()
_string = json.encoder.encode_basestring  # what the encoder itself uses with ensure_ascii=False
_COUNTERS: dict[str, Any] = {}  # decision -> its metric child: labels() takes a lock each call
# Header names as servers deliver them (lowercase bytes) -> the names the route looks up.
_FORWARDED = ("x-forwarded-for", "forwarded")
_WANTED = {
    name.encode("latin-1"): name
    for name in ("content-type", "content-length", "accept", "sec-fetch-site", "idempotency-key", *_FORWARDED)
}


class FastDeny:
    """Answers ``POST /trigger`` from a spent client; everything else goes to ``app``."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or _route_path(scope) != "/trigger":
            await self.app(scope, receive, send)
            return
        size = 0
        found: dict[str, str] = {}  # the few headers the route reads; the last of a repeat wins
        # Identity reads only the forwarded headers, and only behind trusted proxies.
        forwarded: list[tuple[str, str]] = []
        for name, value in scope["headers"]:
            size += len(name) + len(value) + 4
            wanted = _WANTED.get(name)
            if wanted is not None:
                if wanted in _FORWARDED:
                    forwarded.append((wanted, value.decode("latin-1")))
                else:
                    found[wanted] = value.decode("latin-1")
        target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        if size > MAX_HEADER_BYTES or target > MAX_TARGET_BYTES:
            await self.app(scope, receive, send)  # the app's HeadLimit answers 431 / 414
            return
        seen: list[Message] = []
        outcome = await self._decide(scope, receive, forwarded, found, seen)
        if outcome is None:
            await self.app(scope, _replay(seen, receive), send)
            return
        await _send(send, outcome)
        code = str(outcome.body.get("error", ""))
        counter = _COUNTERS.get(code)
        if counter is None:
            counter = _COUNTERS[code] = DECISIONS.labels(code)
        counter.inc()

    async def _decide(
        self,
        scope: Scope,
        receive: Receive,
        headers: list[tuple[str, str]],
        found: dict[str, str],
        seen: list[Message],
    ) -> Outcome | None:
        ctype = found.get("content-type", "").split(";")[0].strip().lower()
        form = ctype == FORM_TYPE
        if form and (found.get("sec-fetch-site") == "cross-site" or prefers_html(found.get("accept", ""))):
            return None  # the route answers these with 403 or an HTML page
        declared = found.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
            return None
        body = await _read(receive, seen, declared == "0")
        if body is None:
            return None
        try:  # anything the route would refuse, it refuses itself
            validate_params(parse_payload(ctype, body), self.service.policy.params)
            check_idempotency_key(found.get("idempotency-key"))
        except RequestError:
            return None
        client = scope.get("client")
        # Same 128 random bits as uuid4().hex, at a sixth of the cost.
        return await self.service.fast_deny(client[0] if client else None, headers, os.urandom(16).hex())


def _route_path(scope: Scope) -> str:
    """The path the router matches (Starlette strips ``root_path`` the same way)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


async def _read(receive: Receive, seen: list[Message], empty: bool) -> bytes | None:
    """The body, or None once it passes MAX_BODY or the client left; messages kept in ``seen``."""
    if empty:
        return b""
    body = bytearray()
    while True:
        message = await receive()
        seen.append(message)
        if message["type"] != "http.request":
            return None
        body.extend(message.get("body", b""))
        if len(body) > MAX_BODY:
            return None
        if not message.get("more_body", False):
            return bytes(body)


def _replay(seen: list[Message], receive: Receive) -> Receive:
    """A receive that gives the route the messages already read, then the rest."""
    if not seen:
        return receive
    pending = list(seen)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


async def _send(send: Send, outcome: Outcome) -> None:
    """The same bytes and headers the route and ``RequestIdMiddleware`` would send."""
    body = _render(outcome.body)
    raw = [(_name(k), v.encode("latin-1")) for k, v in outcome.headers.items()]
    raw.append((b"content-length", str(len(body)).encode("latin-1")))
    raw.append((b"content-type", b"application/json"))
    raw.append((b"x-request-id", str(outcome.body.get("request_id", "")).encode("latin-1")))
    await send({"type": "http.response.start", "status": outcome.status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


@functools.lru_cache(maxsize=32)
def _name(header: str) -> bytes:
    return header.lower().encode("latin-1")


def _render(body: dict[str, Any]) -> bytes:
    """JSONResponse's bytes for ``body``; the error shape is assembled from C-encoded strings."""
    if body.keys() == _ERROR_KEYS and all(type(v) is str for v in body.values()):
        return (
            f'{{"error":{_string(body["error"])},"detail":{_string(body["detail"])},'
            f'"request_id":{_string(body["request_id"])}}}'
        ).encode()
    return _ENCODER.encode(body).encode("utf-8")
