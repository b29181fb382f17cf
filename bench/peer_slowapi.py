"""The peer: FastAPI + slowapi limiting "3 per 7 days" per client, the usual Python choice.

``PEER_STORAGE`` is ``memory://`` or a Redis URL; the client is the right-most
``X-Forwarded-For`` entry when the peer is the loopback proxy (as triggergate's
``trusted_proxies = ["127.0.0.1/32"]``). ``PEER_PREFILL=N`` spends the quota of
addresses 0..N-1 (bench/pool.lua's numbering) in memory storage before serving,
and writes the RSS before and after to ``PEER_RSS_FILE``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import uuid
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from limits import parse
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded

from bench.ceiling import DETAIL, HEADERS, serve

LIMIT = "3 per 7 days"
STORAGE = os.environ.get("PEER_STORAGE", "memory://")
# slowapi logs a warning per refused request; a deployment would not print each one.
logging.getLogger("slowapi").setLevel(logging.ERROR)


def address(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def client_key(request: Request) -> str:
    peer = request.client.host if request.client else ""
    forwarded = request.headers.get("x-forwarded-for")
    if peer == "127.0.0.1" and forwarded:
        return forwarded.rsplit(",", 1)[-1].strip()
    return peer


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


limiter = Limiter(key_func=client_key, storage_uri=STORAGE)
app = FastAPI()
app.state.limiter = limiter


async def refused(request: Request, exc: Exception) -> JSONResponse:
    rid = uuid.uuid4().hex
    body = {"error": "quota_exhausted", "detail": DETAIL, "request_id": rid}
    return JSONResponse(body, 429, headers={**HEADERS, "X-Request-Id": rid})


app.add_exception_handler(RateLimitExceeded, refused)


@app.post("/trigger")
@limiter.limit(LIMIT)
async def trigger(request: Request) -> JSONResponse:
    return JSONResponse({"run_id": uuid.uuid4().hex, "status": "started"}, 202)


def prefill(count: int) -> None:
    """Spend the quota of ``count`` addresses in this process's storage."""
    before = rss_kib()
    item = parse(LIMIT)
    for i in range(count):
        limiter.limiter.hit(item, address(i), "/trigger", cost=3)
    report = os.environ.get("PEER_RSS_FILE")
    if report:
        Path(report).write_text(json.dumps({"before_kib": before, "after_kib": rss_kib()}))


def redis_key(i: int) -> str:
    """The Redis key limits' fixed window keeps for address ``i`` (for prefilling Redis)."""
    return f"LIMITS:{parse(LIMIT).key_for(address(i), '/trigger')}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    if STORAGE.startswith("memory"):
        prefill(int(os.environ.get("PEER_PREFILL", "0")))
    serve(app, port)
