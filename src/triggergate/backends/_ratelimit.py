"""Rate-limit answers of the CI systems, and the back-off they ask for.

GitHub, "Rate limits for the REST API" (github/docs
``content/rest/using-the-rest-api/rate-limits-for-the-rest-api.md``, "Exceeding the rate
limit"): a primary limit answers 403 or 429 with ``x-ratelimit-remaining: 0`` (wait until
``x-ratelimit-reset``); a secondary limit answers 403 or 429 "and an error message that
indicates that you exceeded a secondary rate limit": wait ``retry-after`` seconds when
given, until ``x-ratelimit-reset`` when remaining is 0, "otherwise, wait for at least one
minute", for an exponentially growing time while it persists. "Continuing to make
requests while you are rate limited may result in the banning of your integration": so
the wait is kept by the client and honoured before the next request is even sent.
GitLab (https://docs.gitlab.com/security/rate_limits/) and proxies answer 429, usually
with ``Retry-After`` (RFC 9110 §10.2.3: delta-seconds or an HTTP date).
"""

from __future__ import annotations

import email.utils

import httpx

SECONDARY_WAIT = 60.0  # "wait for at least one minute before retrying"
MAX_WAIT = 900.0  # the growing wait of a persisting secondary limit stops growing here


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as delta-seconds or an HTTP date; None when absent or unreadable."""
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


def _names_a_rate_limit(response: httpx.Response) -> bool:
    # GitHub's secondary-limit body: {"message": "You have exceeded a secondary rate
    # limit. Please wait a few minutes before you try again.", "documentation_url": ...}
    try:
        text = response.text
    except UnicodeDecodeError:
        return False
    return "rate limit" in text[:2000].lower()


class Cooldown:
    """When the CI system may be asked again, after it answered with a rate limit."""

    def __init__(self) -> None:
        self.until = 0.0  # wall-clock time
        self._secondary = 0  # secondary limits in a row, for the growing wait

    def left(self, now: float) -> float:
        return max(0.0, self.until - now)

    def succeeded(self) -> None:
        self._secondary = 0

    def observe(self, response: httpx.Response, now: float) -> tuple[bool, float | None]:
        """(is a rate limit, seconds to wait or None when unknown); remembers the wait."""
        if response.status_code not in (403, 429):
            return False, None
        headers = response.headers
        wait = retry_after_seconds(headers.get("Retry-After"), now)
        if wait is None and headers.get("X-RateLimit-Remaining") == "0":
            reset = headers.get("X-RateLimit-Reset", "")
            wait = max(0.0, int(reset) - now) if reset.isdigit() else SECONDARY_WAIT
        if wait is None and _names_a_rate_limit(response):
            wait = min(MAX_WAIT, SECONDARY_WAIT * 2**self._secondary)
            self._secondary += 1
        if wait is None:
            # A bare 429 is "not now" with no stated wait; a bare 403 is a refusal.
            return response.status_code == 429, None
        self.until = max(self.until, now + wait)
        return True, wait
