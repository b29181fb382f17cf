"""``webhook+https://host/path``: each alert as one JSON POST (Slack-compatible).

The body is ``{"text": "<subject>\\n<body>", "event", "subject", "body",
"attributes"}``; Slack incoming webhooks read ``text`` and ignore the rest.
``webhook+http://`` is accepted only for loopback hosts (tests, a local relay):
an alert crossing a network goes over TLS.

With ``TRIGGERGATE_WEBHOOK_SECRET`` set, each request is signed:
``X-Triggergate-Timestamp: <epoch seconds>`` and
``X-Triggergate-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">``.
A receiver recomputes the HMAC over the exact bytes it received and rejects
stale timestamps, which stops replays.

Webhook URLs often carry their secret in the path (Slack's do), so the
notifier's ``target`` keeps the host and a fingerprint of the URL, never the path.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from urllib.parse import urlsplit

import httpx

from triggergate.clock import Clock, system_clock
from triggergate.errors import ConfigurationError, NotifyError
from triggergate.notifiers.base import Alert, Notifier
from triggergate.registry import Context

SIGNATURE_HEADER = "X-Triggergate-Signature"
TIMESTAMP_HEADER = "X-Triggergate-Timestamp"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


class WebhookNotifier(Notifier):
    """POSTs each alert as JSON; anything but a 2xx answer is a NotifyError."""

    def __init__(
        self,
        url: str,
        *,
        secret: str | None = None,
        clock: Clock = system_clock,
        timeout: float = 5.0,
        target: str | None = None,
    ) -> None:
        self.url = url
        self.secret = secret
        self.clock = clock
        self.timeout = timeout
        parts = urlsplit(url)
        fingerprint = hashlib.sha256(url.encode()).hexdigest()[:12]
        self.target = target or f"webhook+{parts.scheme}://{parts.netloc}/#{fingerprint}"
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_url(cls, url: str, ctx: Context) -> WebhookNotifier:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        safe = f"{scheme}://{parts.hostname or ''}/..."
        if scheme not in ("webhook+https", "webhook+http"):
            raise ConfigurationError(
                "notify: webhook URL must start with webhook+https://", key="notify", value=safe
            )
        if not parts.hostname:
            raise ConfigurationError("notify: webhook URL needs a host", key="notify", value=safe)
        if parts.username or parts.password:
            raise ConfigurationError(
                "notify: webhook URL must not hold credentials; "
                "set TRIGGERGATE_WEBHOOK_SECRET to sign requests",
                key="notify",
                value=safe,
            )
        if scheme == "webhook+http" and not _is_loopback(parts.hostname):
            raise ConfigurationError(
                "notify: webhook+http:// is only for loopback hosts; use webhook+https://",
                key="notify",
                value=safe,
            )
        return cls(
            parts._replace(scheme=scheme.removeprefix("webhook+")).geturl(),
            secret=ctx.secret("WEBHOOK_SECRET"),
            clock=ctx.clock,
        )

    @staticmethod
    def payload(alert: Alert) -> dict[str, object]:
        """The JSON document sent for ``alert``."""
        return {
            "text": f"{alert.subject}\n{alert.body}",
            "event": alert.event,
            "subject": alert.subject,
            "body": alert.body,
            "attributes": dict(alert.attributes),
        }

    async def send(self, alert: Alert) -> None:
        body = json.dumps(self.payload(alert), ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "triggergate"}
        if self.secret:
            timestamp = str(int(self.clock()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(self.secret, timestamp, body)
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        try:
            response = await self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise NotifyError(f"{self.target}: {type(exc).__name__}") from exc
        if not 200 <= response.status_code < 300:
            raise NotifyError(f"{self.target}: HTTP {response.status_code}")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
