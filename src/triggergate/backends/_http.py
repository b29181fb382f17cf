"""The HTTP plumbing the CI backends share: one client, bounded retries, safe errors.

A status read is idempotent; a start is not (GitHub, GitLab and Jenkins take no
idempotency key), so once a start may have reached the CI system it is never sent again:

- never sent (connect error, connect timeout, pool timeout): retried, for reads and
  starts alike, with exponential backoff and full jitter inside the time budget;
- a rate limit (429, or a 403 that is one: :mod:`._ratelimit`): reads wait and retry;
  a start is a definite refusal (nothing started), not resent, with ``retry_after``.
  The wait is remembered: until it is over, a call waits it out before sending when
  the budget allows, and otherwise refuses without sending;
- 408 (the server did not get the whole request): reads retry; a start is refused;
- 5xx and sent-then-lost (read timeout, dropped connection): reads retry; a start is
  *uncertain* and raises :class:`BackendUncertain` at once, so the caller reconciles
  with ``find()`` instead of sending it again;
- any other 4xx (401, 403, 404, 422 ...) or 3xx: a definite refusal,
  :class:`BackendRefused` with ``misconfigured=True`` and an operator message.

Messages name the backend, the action and the status, never a token, a
response body or an exception text: they may reach alerts.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httpx

from triggergate.backends._ratelimit import Cooldown
from triggergate.errors import BackendError, BackendRefused, BackendUncertain

NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
log = logging.getLogger("triggergate.backends")


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


class HttpRefused(BackendRefused):
    """A definite refusal with its HTTP status, for backends that must look closer (crumbs)."""

    def __init__(self, message: str, response: httpx.Response) -> None:
        super().__init__(message, misconfigured=True)
        self.status = response.status_code
        self.response = response


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
        self.cooldown = Cooldown()

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
        """Send under the rules above; return a response whose status is in ``ok``.

        ``action`` names the call in messages ("workflow dispatch"). Raises
        BackendRefused (definite), BackendUncertain (a start may have
        happened) or BackendError (a read failed).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.budget
        await self._wait_out_cooldown(action, idempotent, deadline)
        last = "no attempt"
        for attempt in range(self.policy.attempts):
            delay: float | None = None
            try:
                timeout = min(self.policy.timeout, max(0.1, deadline - loop.time()))
                response = await self._client.request(method, url, timeout=timeout, **kwargs)
            except NOT_SENT as exc:
                last = f"{self.name}: {action}: cannot connect ({type(exc).__name__})"
            except httpx.TransportError as exc:
                last = f"{self.name}: {action}: no complete answer ({type(exc).__name__})"
                if not idempotent:
                    raise BackendUncertain(last + "; reconcile, never resend") from exc
            else:
                status = response.status_code
                if status in ok:
                    self.cooldown.succeeded()
                    return response
                last = f"{self.name}: {action}: HTTP {status} {_reason(status)}"
                limited, delay = self.cooldown.observe(response, self._wall_clock())
                if limited or status == 408:
                    if not idempotent:
                        raise _not_now(last, delay)  # refused before it was processed
                elif status >= 500:
                    if not idempotent:
                        raise BackendUncertain(last + "; reconcile, never resend")
                else:
                    raise HttpRefused(last, response)
            if delay is None:
                delay = random.uniform(0, min(self.policy.cap, self.policy.base * 2**attempt))  # noqa: S311 - jitter, not security
            if attempt + 1 >= self.policy.attempts or loop.time() + delay > deadline:
                break
            log.debug("%s; retrying in %.2f s", last, delay)
            await self._sleep(delay)
        left = self.cooldown.left(self._wall_clock()) or None
        if idempotent:
            raise BackendError(last + " (retries exhausted)", definite=False, retry_after=left)
        # Only never-sent attempts reach here for a start: nothing started.
        raise _not_now(last + " (retries exhausted)", left)

    async def _wait_out_cooldown(self, action: str, idempotent: bool, deadline: float) -> None:
        """Honour a rate limit's wait before sending: sleep if it fits the budget, else fail."""
        left = self.cooldown.left(self._wall_clock())
        if not left:
            return
        if asyncio.get_running_loop().time() + left <= deadline:
            await self._sleep(left)
            return
        message = f"{self.name}: {action}: rate limited for {left:.0f} s more; not sent"
        if idempotent:
            raise BackendError(message, definite=False, retry_after=left)
        raise _not_now(message, left)


def _not_now(message: str, retry_after: float | None) -> BackendRefused:
    """A definite refusal that is no misconfiguration: the CI system said "not now"."""
    refused = BackendRefused(message)
    refused.retry_after = retry_after
    return refused


def json_object(response: httpx.Response, name: str, action: str) -> dict[str, Any]:
    """The response body as a JSON object; a BackendError when it is not one."""
    try:
        body = response.json()
    except ValueError as exc:
        raise BackendError(f"{name}: {action}: answer is not JSON", definite=False) from exc
    if not isinstance(body, dict):
        raise BackendError(f"{name}: {action}: answer is not a JSON object", definite=False)
    return body
