"""The scheme a request came over, behind TLS termination too, and HSTS for https.

The scheme is the connection's own unless the peer is a trusted proxy; then it is
what that proxy recorded (``X-Forwarded-Proto`` or ``Forwarded: proto=``), read by
:func:`triggergate.identity.resolve_scheme` under the same rule as the client address.
"""

from __future__ import annotations

from starlette.types import Message, Scope, Send

from triggergate.identity import IdentityPolicy, resolve_scheme

# One year; no includeSubDomains: the gate may share a parent domain with sites
# that are not served over https.
HSTS = b"max-age=31536000"


_PROTO_HEADERS = {b"x-forwarded-for", b"x-forwarded-proto", b"forwarded"}


def scope_scheme(scope: Scope, policy: IdentityPolicy) -> str:
    """``"https"`` or ``"http"``: how the client reached the first proxy we trust, or us."""
    own = str(scope.get("scheme", "http"))
    if not policy.trusted_proxies:  # the usual case: no header is read at all
        return resolve_scheme(own, None, (), policy)
    # On every request behind a proxy (this wraps the deny fast path too): decode only
    # the few headers the rule reads, and none when no scheme was forwarded at all.
    headers = [
        (name.decode("latin-1").lower(), value.decode("latin-1"))
        for name, value in scope["headers"]
        if name.lower() in _PROTO_HEADERS
    ]
    if not any(name != "x-forwarded-for" for name, _ in headers):
        return resolve_scheme(own, None, (), policy)
    client = scope.get("client")
    return resolve_scheme(own, client[0] if client else None, headers, policy)


class StrictTransport:
    """Adds ``Strict-Transport-Security`` to every response of a request made over https.

    Only then: RFC 6797 section 7.2 forbids the header on responses conveyed over
    plain http, and behind a TLS-terminating proxy the client's hop is the one
    that counts.
    """

    def __init__(self, policy: IdentityPolicy) -> None:
        self.policy = policy

    def wrap(self, scope: Scope, send: Send) -> Send:
        """``send``, adding the header when the request came over https."""
        if scope_scheme(scope, self.policy) != "https":
            return send

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"strict-transport-security" for name, _ in headers):
                    headers.append((b"strict-transport-security", HSTS))
                message["headers"] = headers
            await send(message)

        return send_with_hsts
