"""``RateLimit-Policy`` and ``RateLimit`` headers (draft-ietf-httpapi-ratelimit-headers).

Structured-field lists: one policy item per client limit, e.g.
``RateLimit-Policy: "3/7d";q=3;w=604800`` and ``RateLimit: "3/7d";r=2;t=86400``
where ``r`` is what is left and ``t`` the seconds until a used slot frees up.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

from triggergate.quota import Decision, Limit


def policy_header(limits: Sequence[Limit]) -> str:
    return _policy(tuple(limits))


@functools.lru_cache(maxsize=16)
def _policy(limits: tuple[Limit, ...]) -> str:
    return ", ".join(f'"{limit}";q={limit.count};w={limit.window}' for limit in limits)


def rate_headers(
    limits: Sequence[Limit], decision: Decision | None, *, consumed: bool = False
) -> dict[str, str]:
    """Headers for a response; ``consumed`` when this request just took a slot."""
    headers = {"RateLimit-Policy": policy_header(limits)}
    verdict = next((v for v in decision.verdicts if v.key.startswith("c:")), None) if decision else None
    if verdict is None:
        return headers
    if not verdict.allowed:
        remaining, reset = 0, verdict.retry_after
    elif consumed:
        remaining = verdict.remaining - 1
        reset = verdict.reset_after if verdict.used else verdict.limit.window
    else:
        remaining, reset = verdict.remaining, verdict.reset_after
    headers["RateLimit"] = f'"{verdict.limit}";r={max(remaining, 0)};t={math.ceil(reset)}'
    return headers
