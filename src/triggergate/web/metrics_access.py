"""Who may read ``/metrics``: callers from ``metrics_allow`` networks, or with the admin token.

Decision counts and latencies tell an attacker how an attack is going (the
global budget draining, say), so they are not public. The caller's address is
resolved through trusted proxies like any client's: behind a proxy the proxy's
own (loopback or private) address never opens the door. A bearer token is a
guess like any other and is charged to the sign-in limit.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from triggergate.errors import RequestError
from triggergate.models import TriggerRequest, error
from triggergate.service import Service
from triggergate.settings import Networks
from triggergate.web.admin_auth import AdminAuth, request_id


class MetricsAccess:
    """Decides whether a request may read the metrics."""

    def __init__(self, allow: Networks, svc: Service, auth: AdminAuth | None) -> None:
        self.allow = allow
        self.svc = svc
        self.auth = auth

    def _allowed_address(self, request: Request) -> bool:
        peer = request.client.host if request.client else None
        headers = [(k.lower(), v) for k, v in request.headers.items()]
        try:
            address = self.svc.identify(TriggerRequest(peer, headers, request_id(request))).address
        except RequestError:
            return False  # an address we cannot read is not in any network
        return any(address.version == net.version and address in net for net in self.allow)

    async def refusal(self, request: Request) -> Response | None:
        """None when the caller may read the metrics; else the 403 (or 429/503) to send."""
        if self._allowed_address(request):
            return None
        token = self.auth.bearer(request) if self.auth is not None else None
        if self.auth is not None and token is not None:
            attempt = await self.auth.attempt(request, token)
            if attempt.ok:
                return None
            if attempt.refused is not None:
                outcome = attempt.refused
                return JSONResponse(outcome.body, outcome.status, headers=outcome.headers)
        outcome = error(
            403,
            "forbidden",
            "metrics are served only to allowed networks or with the admin token",
            request_id(request),
        )
        return JSONResponse(outcome.body, outcome.status)
