"""The gate before the store: kill switch, allow and deny lists, and which checks apply."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from triggergate.clock import Clock
from triggergate.quota import Check, Limit
from triggergate.stores.base import Doc, Store

BUDGET_KEY = "g:budget"
KILL_SWITCH = ("flag", "kill_switch")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _contains(networks: tuple[Network, ...], address: Address) -> bool:
    return any(address.version == n.version and address in n for n in networks)


@dataclass
class Gate:
    """Decides what applies to a client before any quota is counted."""

    limits: tuple[Limit, ...]
    budget: tuple[Limit, ...]
    allow: tuple[Network, ...]
    deny: tuple[Network, ...]

    def denied(self, address: Address) -> bool:
        return _contains(self.deny, address)

    def checks(self, key: str, address: Address) -> list[Check]:
        """The client's limits (skipped for allow-listed addresses) and the global budget."""
        checks = [] if _contains(self.allow, address) else [Check(f"c:{key}", self.limits)]
        if self.budget:
            checks.append(Check(BUDGET_KEY, self.budget))
        return checks


class KillSwitch:
    """The operator's pause, stored so every replica sees it; read at most once a second."""

    TTL = 1.0

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._cached: Doc | None = None
        self._read_at = float("-inf")

    async def state(self) -> Doc | None:
        now = self.clock()
        if now - self._read_at >= self.TTL:
            self._cached = await self.store.get(*KILL_SWITCH)
            self._read_at = now
        return self._cached

    def forget(self) -> None:
        self._read_at = float("-inf")
