"""The HTTP plumbing the CI backends share: one client, bounded retries, safe errors.

Retry rules (a start is a non-idempotent POST, a status read is not):

- never sent (connect error, pool timeout), 408, 429, 503, and a 403 that
  is a rate limit (``Retry-After`` or ``X-RateLimit-Remaining: 0``): retried, with
  exponential backoff and full jitter, or after ``Retry-After`` when given;
- other 5xx and sent-then-lost (read timeout, dropped connection): retried
  for idempotent reads; for a start they are *ambiguous* and raise
  :class:`BackendUncertain` at once, so the caller reconciles with ``find()``
  before any second attempt;
- any other 4xx (401, 403, 404, 422 ...) or 3xx: a definite refusal,
  :class:`BackendRefused` with ``misconfigured=True`` and an operator message.

Messages name the backend, the action and the status, never a token, a
response body or an exception text: they may reach alerts.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httpx

from triggergate.errors import BackendError, BackendRefused, BackendUncertain

RETRY_STATUSES = frozenset({408, 429, 503})
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often to retry; ``budget`` bounds the whole call in seconds."""

    attempts: int = 5
    base: float = 0.25
    cap: float = 8.0
    budget: float = 12.0  # with GitHub's run lookup, inside the service's 30 s backend_timeout
    timeout: float = 10.0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> RetryPolicy:
        """Overrides from ``ctx.options`` keys http_attempts/http_budget/http_timeout."""
        default = cls()
        return cls(
            attempts=int(options.get("http_attempts", default.attempts)),
            base=float(options.get("http_backoff", default.base)),
            cap=default.cap,
            budget=float(options.get("http_budget", default.budget)),
            timeout=float(options.get("http_timeout", default.timeout)),
        )


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as delta-seconds or an HTTP date (RFC 9110 §10.2.3); None when absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class HttpRefused(BackendRefused):
    """A definite refusal with its HTTP status, for backends that must look closer (crumbs)."""

    def __init__(self, message: str, response: httpx.Response) -> None:
        super().__init__(message, misconfigured=True)
        self.status = response.status_code
        self.response = response


def rate_limited(response: httpx.Response) -> bool:
    """A 403 that is a rate limit, not a refusal (GitHub's secondary limits answer this way).

    https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
    """
    headers = response.headers
    return response.status_code == 403 and (
        "Retry-After" in headers or headers.get("X-RateLimit-Remaining") == "0"
    )


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "unexpected status"


class HttpClient:
    """One ``httpx.AsyncClient`` per backend, with the retry rules above."""

    def __init__(
        self,
        name: str,
        policy: RetryPolicy,
        *,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        **client_args: Any,
    ) -> None:
        self.name = name
        self.policy = policy
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._client = httpx.AsyncClient(timeout=policy.timeout, follow_redirects=False, **client_args)

    async def close(self) -> None:
        await self._client.aclose()

    async def send(
        self,
        method: str,
        url: str,
        action: str,
        *,
        idempotent: bool,
        ok: frozenset[int] = frozenset({200, 201, 202, 204}),
        **kwargs: Any,
    ) -> httpx.Response:
        """Send with retries; return a response whose status is in ``ok``.

        ``action`` names the call in messages ("workflow dispatch"). Raises
        BackendRefused (definite), BackendUncertain (a start may have
        happened) or BackendError (a read failed).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.budget
        last = "no attempt"
        retry_after: float | None = None
        for attempt in range(self.policy.attempts):
            delay: float | None = None
            try:
                remaining = max(0.1, deadline - loop.time())
                timeout = min(self.policy.timeout, remaining)
                response = await self._client.request(method, url, timeout=timeout, **kwargs)
            except NOT_SENT as exc:
                last = f"{self.name}: {action}: cannot connect ({type(exc).__name__})"
            except httpx.TransportError as exc:
                last = f"{self.name}: {action}: no complete answer ({type(exc).__name__})"
                if not idempotent:
                    raise BackendUncertain(last + "; reconcile before retrying") from exc
            else:
                status = response.status_code
                if status in ok:
                    return response
                last = f"{self.name}: {action}: HTTP {status} {_reason(status)}"
                if status in RETRY_STATUSES or rate_limited(response):
                    delay = retry_after_seconds(response.headers.get("Retry-After"), self._wall_clock())
                    if delay is None and response.headers.get("X-RateLimit-Reset", "").isdigit():
                        delay = max(0.0, int(response.headers["X-RateLimit-Reset"]) - self._wall_clock())
                    retry_after = delay
                elif status >= 500:
                    if not idempotent:
                        raise BackendUncertain(last + "; reconcile before retrying")
                else:
                    raise HttpRefused(last, response)
            if delay is None:
                delay = random.uniform(0, min(self.policy.cap, self.policy.base * 2**attempt))  # noqa: S311 - jitter, not security
            if attempt + 1 >= self.policy.attempts or loop.time() + delay > deadline:
                break
            await self._sleep(delay)
        if idempotent:
            error = BackendError(last + " (retries exhausted)", definite=False)
            error.retry_after = retry_after
            raise error
        # Only never-sent or "not now" answers reach here for a start: nothing started.
        refused = BackendRefused(last + " (retries exhausted)")
        refused.retry_after = retry_after
        raise refused


def json_object(response: httpx.Response, name: str, action: str) -> dict[str, Any]:
    """The response body as a JSON object; a BackendError when it is not one."""
    try:
        body = response.json()
    except ValueError as exc:
        raise BackendError(f"{name}: {action}: answer is not JSON", definite=False) from exc
    if not isinstance(body, dict):
        raise BackendError(f"{name}: {action}: answer is not a JSON object", definite=False)
    return body
