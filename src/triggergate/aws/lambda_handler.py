"""Lambda entry points: ``handler`` for API Gateway, ``events_handler`` for EventBridge.

``handler`` serves the same ASGI app as ``triggergate serve`` through Mangum,
for REST API (v1) and HTTP API (v2) proxy events. The client is API Gateway's
``sourceIp`` (Mangum puts it in ``scope["client"]``); with no trusted proxies
configured, a client-sent ``X-Forwarded-For`` changes nothing.

Lambda freezes a process between invocations, so nothing runs in the
background: the app is built once per process on first use and served through
Mangum's API Gateway handlers on one event loop, without the ASGI lifespan
(Mangum would open and close the store and start and stop the loops on every
request). After a request that may have queued alerts (anything but
a read or a 429), this request's alerts are delivered before returning. The
periodic work (reconcile stale reservations, retry alerts, sweep) runs on a
schedule through ``events_handler``, which also records CodePipeline outcomes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from triggergate.aws.outcomes import record_outcome

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from triggergate.service import Service

log = logging.getLogger("triggergate.aws")
T = TypeVar("T")
DELIVERY_SECONDS = 5.0  # alerts are retried by the schedule if SNS is slower than this
STATE_CHANGE = "CodePipeline Pipeline Execution State Change"


class LambdaApp:
    """One ASGI app, its service and one event loop, reused by every invocation of a process."""

    def __init__(self, app: Starlette) -> None:
        from mangum.adapter import DEFAULT_TEXT_MIME_TYPES  # lazily: only Lambda needs Mangum
        from mangum.types import LambdaConfig

        self.app = app
        self.service: Service = app.state.service
        self.config = LambdaConfig(
            api_gateway_base_path="/", text_mime_types=list(DEFAULT_TEXT_MIME_TYPES), exclude_headers=[]
        )
        self.loop = asyncio.new_event_loop()
        self._opened = False

    def run(self, work: Awaitable[T]) -> T:
        """Run a coroutine on this process's loop, opening the store on first use."""
        if not self._opened:
            self.loop.run_until_complete(self.service.store.open())
            self._opened = True
        return self.loop.run_until_complete(work)

    async def deliver(self) -> None:
        """Send what is due now, bounded; failures stay in the outbox for the next pass."""
        try:
            await asyncio.wait_for(self.service.outbox.deliver_due(), DELIVERY_SECONDS)
        except Exception:
            log.warning("alert delivery deferred", exc_info=True)

    def close(self) -> None:
        """Release the service's connections and the loop (tests; Lambda just freezes)."""
        if self._opened:
            self.loop.run_until_complete(self.service.close())
        self.loop.close()

    def http(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        from mangum.handlers import APIGateway, HTTPGateway
        from mangum.protocols.http import HTTPCycle

        # Mangum's own adapter runs on asyncio.get_event_loop(), a process-global it creates
        # and never closes; its event handlers and HTTP cycle on our one loop do the same job.
        kind = next((h for h in (HTTPGateway, APIGateway) if h.infer(event, context, self.config)), None)
        if kind is None:
            raise ValueError("not an API Gateway proxy event (REST v1 or HTTP API v2)")
        request = kind(event, context, self.config)
        cycle = HTTPCycle(request.scope, request.body)
        self.run(cycle.run(self.app))
        response: dict[str, Any] = request(
            {"status": cycle.status, "headers": cycle.headers, "body": cycle.body}
        )
        if _method(event) not in ("GET", "HEAD", "OPTIONS") and response.get("statusCode") != 429:
            self.run(self.deliver())
        return response

    def events(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        if event.get("detail-type") == STATE_CHANGE:
            detail = dict(event.get("detail", {}))
            age = _age(event.get("time"), self.service.clock())
            recorded = self.run(record_outcome(self.service, detail, age))
            self.run(self.deliver())
            return {"recorded": recorded}
        # Anything else (the schedule) is the periodic work a server's background loop does.
        reconciled = self.run(self.service.reconcile())
        self.run(self.deliver())
        swept = self.run(self.service.store.sweep())
        return {"reconciled": reconciled, "swept": swept}


def _method(event: dict[str, Any]) -> str:
    http = event.get("requestContext", {}).get("http", {})
    return str(event.get("httpMethod") or http.get("method") or "").upper()


def _age(stamp: Any, now: float) -> float:
    try:
        return now - datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


_lock = threading.Lock()
_current: LambdaApp | None = None


def current() -> LambdaApp:
    """The process's app, built from the environment on first use (then reused while warm)."""
    global _current
    with _lock:
        if _current is None:
            from triggergate.web.app import create_app

            _current = LambdaApp(create_app())
        return _current


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """API Gateway proxy events (REST v1 or HTTP v2) -> the ASGI app -> a proxy response."""
    return current().http(event, context)


def events_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """EventBridge: pipeline execution state changes, and the periodic maintenance schedule."""
    return current().events(event, context)
