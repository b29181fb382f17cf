"""The gate before the store: kill switch, allow and deny lists, and which checks apply."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from triggergate.clock import Clock
from triggergate.identity import Client, wider_keys
from triggergate.quota import Check, Limit
from triggergate.stores.base import Doc, Store

BUDGET_KEY = "g:budget"
BUDGET_ALERT = ("flag", "budget_alert")  # marker: the budget alert of this window was sent
KILL_SWITCH = ("flag", "kill_switch")
# Failed operator sign-ins (web/admin_auth.py), counted like triggers: per client as
# ADMIN_LOGIN_PREFIX + the client key, and over all clients under ADMIN_LOGIN_KEY.
ADMIN_LOGIN_PREFIX = "a:"
ADMIN_LOGIN_KEY = "g:admin_login"
ADMIN_LOGIN_ALERT = ("flag", "admin_login_alert")  # marker: the trip alert of this window was sent
ADMIN_LOGIN_PURPOSE = "admin_login"  # the ledger ``purpose`` of a sign-in reservation
REVOKED_SESSION = "admin_session_revoked"  # record kind: an operator session ended by sign-out
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _contains(networks: tuple[Network, ...], address: Address) -> bool:
    if not networks:  # the usual case, on every request
        return False
    return any(address.version == n.version and address in n for n in networks)


@dataclass
class Gate:
    """Decides what applies to a client before any quota is counted."""

    limits: tuple[Limit, ...]
    budget: tuple[Limit, ...]
    allow: tuple[Network, ...]
    deny: tuple[Network, ...]
    #: (prefix, limits) caps on the wider IPv6 networks holding a client (e.g. /56, /48).
    wider: tuple[tuple[int, tuple[Limit, ...]], ...] = ()
    key_secret: bytes | None = field(default=None, repr=False)

    def denied(self, address: Address) -> bool:
        return _contains(self.deny, address)

    def checks(self, key: str, address: Address) -> list[Check]:
        """The client's limits and wider IPv6 caps (skipped for allow-listed addresses),
        and the global budget."""
        checks = [] if _contains(self.allow, address) else [Check(f"c:{key}", self.limits)]
        if checks and self.wider and address.version == 6:
            prefixes = [prefix for prefix, _ in self.wider]
            keys = wider_keys(Client(address, key), prefixes, key_secret=self.key_secret)
            checks += [Check(f"w:{k}", limits) for k, (_, limits) in zip(keys, self.wider, strict=True)]
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

    def fresh(self) -> tuple[bool, Doc | None]:
        """(True, state) while the cached state is under a second old: no await, no task."""
        return self.clock() - self._read_at < self.TTL, self._cached

    async def state(self) -> Doc | None:
        now = self.clock()
        if now - self._read_at >= self.TTL:
            self._cached = await self.store.get(*KILL_SWITCH)
            self._read_at = now
        return self._cached

    def forget(self) -> None:
        self._read_at = float("-inf")
