"""The ceiling: a bare Starlette route answering the same 429 body, under triggergate's server.

``python -m bench.ceiling --port P``. :data:`SERVER_OPTIONS` mirrors what
``triggergate serve`` passes to uvicorn, so the three servers differ only in the app.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from triggergate.web.limits import BoundedHttpTools

# Keep in step with triggergate.cli.serve: the same HTTP protocol class and options.
SERVER_OPTIONS: dict[str, Any] = {
    "workers": 1,
    "server_header": False,
    "proxy_headers": False,
    "http": BoundedHttpTools,
    "access_log": False,
    "log_config": None,
}
DETAIL = "you have used all your triggers; try again after 2030-01-01T00:00:00Z"
HEADERS = {
    "Retry-After": "604800",
    "RateLimit-Policy": '"3/7d";q=3;w=604800',
    "RateLimit": '"3/7d";r=0;t=604800',
}


async def trigger(request: Request) -> JSONResponse:
    rid = uuid.uuid4().hex
    body = {"error": "quota_exhausted", "detail": DETAIL, "request_id": rid}
    return JSONResponse(body, 429, headers={**HEADERS, "X-Request-Id": rid})


app = Starlette(routes=[Route("/trigger", trigger, methods=["POST"])])


def serve(target: Any, port: int) -> None:
    """Run ``target`` (the app object itself: one worker needs no import string)."""
    import uvicorn

    uvicorn.run(target, host="127.0.0.1", port=port, **SERVER_OPTIONS)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    serve(app, parser.parse_args().port)
