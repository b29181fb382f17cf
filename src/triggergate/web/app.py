"""The Starlette app: routes of DESIGN.md's HTTP surface, safe errors, request ids."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from triggergate import logs
from triggergate.errors import RequestError
from triggergate.metrics import DECISIONS, LATENCY, REGISTRY
from triggergate.models import Outcome, TriggerRequest, error
from triggergate.ratelimit_headers import policy_header
from triggergate.service import Service
from triggergate.settings import Settings, load_settings
from triggergate.web.admin import admin_auth, admin_routes
from triggergate.web.body import MAX_BODY, parse_payload
from triggergate.web.fastpath import FastDeny
from triggergate.web.limits import HeadLimit
from triggergate.web.metrics_access import MetricsAccess
from triggergate.web.openapi import openapi_document
from triggergate.web.page import (
    FORM_TYPE,
    Static,
    page_response,
    prefers_html,
)
from triggergate.web.result import result_response
from triggergate.web.scheme import StrictTransport
from triggergate.wiring import build_service

log = logging.getLogger("triggergate.web")

REQUEST_ID = "triggergate.request_id"
# Set by the routes that read the caller's quota themselves: whatever they answered (even
# a 503 because the read failed), the middleware must not read it a second time.
QUOTA_READ = "triggergate.quota_read"
NEVER_READS = frozenset({"/healthz"})  # liveness answers without touching the store


class _TooLarge(Exception):
    pass


def request_id(request: Request) -> str:
    return str(request.scope.get(REQUEST_ID, ""))


def respond(outcome: Outcome) -> JSONResponse:
    return JSONResponse(outcome.body, outcome.status, headers=outcome.headers)


class RequestIdMiddleware:
    """Gives every request an id and every response ``X-Request-Id`` and the rate headers.

    Routes that evaluated the caller's quota set ``RateLimit`` themselves; for the
    others (the run status, errors) the caller's state is read here (a read, never
    a write). Never for a route that read the quota already (``QUOTA_READ``), for
    a 503 (the store just failed or triggers are refused: another read would only
    add a deadline), or for ``/healthz``: no request reads the quota twice.
    """

    def __init__(self, app: ASGIApp, policy: str, service: Service) -> None:
        self.app = app
        self.policy = policy.encode()
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid.uuid4().hex
        scope[REQUEST_ID] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.append((b"x-request-id", rid.encode()))
                if b"ratelimit-policy" not in names:
                    headers.append((b"ratelimit-policy", self.policy))
                if (
                    b"ratelimit" not in names
                    and message["status"] != 503
                    and not scope.get(QUOTA_READ)
                    and scope.get("path") not in NEVER_READS
                ):
                    client = scope.get("client")
                    request_headers = [
                        (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]
                    ]
                    state = await self.service.rate_state(client[0] if client else None, request_headers)
                    if "RateLimit" in state:
                        headers.append((b"ratelimit", state["RateLimit"].encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


async def read_body(request: Request) -> bytes:
    """The body, refused past MAX_BODY without buffering the rest."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise _TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BODY:
            raise _TooLarge
    return bytes(body)


def _trigger_request(request: Request, payload: Any = None) -> TriggerRequest:
    """The request as the flow takes it; only the routes that read the quota build one."""
    request.scope[QUOTA_READ] = True
    return TriggerRequest(
        peer=request.client.host if request.client else None,
        headers=[(k.lower(), v) for k, v in request.headers.items()],
        request_id=request_id(request),
        payload=payload,
        idempotency_key=request.headers.get("idempotency-key"),
    )


class TriggergateApp(Starlette):
    """Starlette with the deny fast path in front of its whole middleware stack.

    Under a flood nearly every request is a spent client's ``POST /trigger``;
    answering it before Starlette's own layers (error handling, routing,
    request objects) is what lets a denial cost less than a bare route.
    """

    fast: ASGIApp | None = None
    strict: StrictTransport | None = None

    def enable_fast_deny(self, service: Service) -> None:
        # HSTS on everything the stack answers. Not on the fast path's refusals: behind
        # a proxy, reading the scheme costs another walk of the forwarded headers, and
        # a browser already holds the policy from the page it posted from.
        self.strict = StrictTransport(service.policy.identity)
        self.fast = FastDeny(self._stack, service=service)

    async def _stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.strict is not None and scope["type"] == "http":
            send = self.strict.wrap(scope, send)
        await super().__call__(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast is not None and scope["type"] == "http":
            await self.fast(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, service: Service | None = None) -> Starlette:
    """The ASGI app; settings default to the environment and ``TRIGGERGATE_CONFIG``."""
    settings = settings or load_settings()
    svc = service or build_service(settings)
    logs.configure(settings.log_level)

    async def trigger(request: Request) -> Response:
        rid = request_id(request)
        started = time.perf_counter()
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        # The page's <form> (no JavaScript) gets a result page; API clients get JSON.
        form = ctype == FORM_TYPE
        html = form and prefers_html(request.headers.get("accept", ""))

        def reply(outcome: Outcome) -> Response:
            return result_response(settings, outcome) if html else respond(outcome)

        if form and request.headers.get("sec-fetch-site") == "cross-site":
            return reply(error(403, "cross_site", "forms from other sites are not accepted", rid))
        try:
            body = await read_body(request)
        except _TooLarge:
            return reply(error(413, "body_too_large", f"the body may be at most {MAX_BODY} bytes", rid))
        try:
            payload = parse_payload(ctype, body)
        except RequestError as exc:
            return reply(error(exc.status, exc.code, exc.detail, rid))
        outcome = await svc.trigger(_trigger_request(request, payload))
        DECISIONS.labels(outcome.body.get("error") or outcome.body.get("status", "accepted")).inc()
        LATENCY.observe(time.perf_counter() - started)
        return reply(outcome)

    async def quota(request: Request) -> Response:
        return respond(await svc.quota(_trigger_request(request)))

    async def run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        if not (0 < len(run_id) <= 64 and run_id.isalnum()):
            return respond(error(404, "not_found", "no run with this id", request_id(request)))
        return respond(await svc.run_status(run_id, request_id(request)))

    async def page(request: Request) -> Response:
        return await page_response(settings, svc, _trigger_request(request))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        checks = await svc.ready()
        ok = all(checks.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503)

    auth = admin_auth(settings, svc)
    metrics_access = MetricsAccess(Settings.networks(settings.metrics_allow), svc, auth)

    async def metrics(request: Request) -> Response:
        refused = await metrics_access.refusal(request)
        if refused is not None:
            return refused
        return Response(generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(settings))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        codes = {
            404: ("not_found", "no such resource"),
            405: ("method_not_allowed", "method not allowed"),
        }
        code, detail = codes.get(exc.status_code, ("bad_request", "the request was not understood"))
        outcome = error(exc.status_code, code, detail, request_id(request))
        return JSONResponse(outcome.body, exc.status_code, headers=exc.headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", extra={"request_id": request_id(request)})
        return respond(error(500, "internal", "something went wrong on our side", request_id(request)))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        svc.prepare()  # SDK clients now, not inside the first request's store deadline
        await svc.store.open()
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(svc.outbox.run(stop)),
            asyncio.create_task(svc.background(stop)),
        ]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await svc.close()

    admin: list[BaseRoute] = admin_routes(settings, svc, auth) if auth is not None else []
    app = TriggergateApp(
        routes=[
            Route("/trigger", trigger, methods=["POST"]),
            Route("/quota", quota, methods=["GET"]),
            Route("/runs/{run_id}", run, methods=["GET"]),
            Route("/", page, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Mount("/static", app=Static(), name="static"),
            *admin,
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.add_middleware(RequestIdMiddleware, policy=policy_header(settings.client_limits), service=svc)
    app.add_middleware(HeadLimit)
    app.state.service = svc
    app.enable_fast_deny(svc)  # spent clients' floods end here, before any middleware
    return app
