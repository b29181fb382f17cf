"""Limits and the exact rolling-window arithmetic; the only place that arithmetic lives.

"3/7d" means at most 3 accepted events for one key in ANY half-open interval of
7 days. A store keeps the timestamps of accepted events per key and asks
:func:`evaluate` whether one more fits; stores that must decide server-side
(a Lua script) mirror this function and are tested against it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from triggergate.errors import ConfigurationError

UNITS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhdw])\s*$")


@dataclass(frozen=True)
class Limit:
    """At most ``count`` events in any interval of ``window`` seconds."""

    count: int
    window: int

    @classmethod
    def parse(cls, text: str) -> Limit:
        match = _LIMIT.match(text)
        if not match:
            raise ConfigurationError(
                f"invalid limit {text!r}: write COUNT/[N]UNIT, e.g. 3/7d or 1/10m (units s, m, h, d, w)",
                value=text,
            )
        count, amount, unit = int(match[1]), int(match[2] or 1), match[3]
        if count < 1 or amount < 1:
            raise ConfigurationError(
                f"invalid limit {text!r}: count and window must be at least 1", value=text
            )
        return cls(count=count, window=amount * UNITS[unit])

    def __str__(self) -> str:
        return _limit_text(self.count, self.window)


@functools.lru_cache(maxsize=256)
def _limit_text(count: int, window: int) -> str:
    """A limit as a person writes it (cached: it is in every denial's headers)."""
    for unit in ("d", "h", "m"):
        if window % UNITS[unit] == 0:
            return f"{count}/{window // UNITS[unit]}{unit}"
    return f"{count}/{window}s"


def parse_limits(texts: Iterable[str]) -> tuple[Limit, ...]:
    """Parse several limits; an empty entry is skipped, a bad one raises."""
    return tuple(Limit.parse(t) for t in texts if t.strip())


@dataclass(frozen=True)
class Check:
    """Limits that must all pass for one store key (a client, or the global budget)."""

    key: str
    limits: tuple[Limit, ...]

    @property
    def horizon(self) -> int:
        """Seconds after which an event of this key no longer matters."""
        return max(limit.window for limit in self.limits)


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check at one instant.

    ``used`` counts events inside the binding limit's window before this
    decision; ``retry_after`` is 0 when allowed; ``reset_after`` is the time
    until the oldest counted event leaves the binding window (0 when none).
    """

    key: str
    allowed: bool
    limit: Limit
    used: int
    retry_after: float
    reset_after: float

    @property
    def remaining(self) -> int:
        return max(self.limit.count - self.used, 0)


def evaluate(key: str, events: Sequence[float], limits: Sequence[Limit], now: float) -> Verdict:
    """Decide whether one more event at ``now`` fits every limit over ``events``.

    The binding limit is the denying one that frees up last, or, when all
    allow, the one with the fewest remaining slots.
    """
    ordered = sorted(events)
    worst: Verdict | None = None
    for limit in limits:
        inside = [e for e in ordered if e > now - limit.window]
        used = len(inside)
        reset = inside[0] + limit.window - now if inside else 0.0
        if used >= limit.count:
            retry = inside[used - limit.count] + limit.window - now
            verdict = Verdict(key, False, limit, used, retry, reset)
            if worst is None or worst.allowed or retry > worst.retry_after:
                worst = verdict
        elif worst is None or (
            worst.allowed and (limit.count - used, -limit.window) < (worst.remaining, -worst.limit.window)
        ):
            worst = Verdict(key, True, limit, used, 0.0, reset)
    if worst is None:
        raise ValueError("evaluate needs at least one limit")
    return worst


@dataclass(frozen=True)
class Decision:
    """The combined outcome of every check of one request; admitted only if all allow."""

    now: float
    verdicts: tuple[Verdict, ...]

    @property
    def allowed(self) -> bool:
        return all(v.allowed for v in self.verdicts)

    @property
    def retry_after(self) -> float:
        return max((v.retry_after for v in self.verdicts), default=0.0)

    @property
    def blocking(self) -> Verdict | None:
        """The denying verdict that frees up last, if any."""
        denied = [v for v in self.verdicts if not v.allowed]
        return max(denied, key=lambda v: v.retry_after) if denied else None


def decide(checks: Sequence[Check], events: Sequence[Sequence[float]], now: float) -> Decision:
    """Evaluate every check against its key's events (same order as ``checks``)."""
    return Decision(
        now=now,
        verdicts=tuple(evaluate(c.key, e, c.limits, now) for c, e in zip(checks, events, strict=True)),
    )
