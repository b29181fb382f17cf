"""A small in-process memory of quota keys known to be spent, for the deny fast path.

Inside a window a spent key becomes unspent only three ways: time passes (the
entry knows when its first slot frees), this process refunds one of its slots
(:meth:`SpentCache.forget`), or something elsewhere removes events (an operator
reset, another replica's refund). The last is covered by a short lifetime for
every entry, so a remote change is seen within ``lifetime`` seconds.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from triggergate.quota import Limit

DEFAULT_SIZE = 16_384
DEFAULT_LIFETIME = 5.0


@dataclass(frozen=True, slots=True)
class Spent:
    """A key denied until ``until`` (epoch seconds) by ``limit``; trusted until ``expires``."""

    until: float
    limit: Limit
    expires: float


class SpentCache:
    """Key -> :class:`Spent`, bounded to ``size`` entries (the oldest insertion is evicted)."""

    def __init__(self, size: int = DEFAULT_SIZE, lifetime: float = DEFAULT_LIFETIME) -> None:
        if size < 1 or lifetime <= 0:
            raise ValueError("size must be at least 1 and lifetime positive")
        self.size = size
        self.lifetime = lifetime
        # OrderedDict, not dict: after many deletions at its front, next(iter(dict)) walks
        # every dead slot (py-spy showed put() at 6% of a flood); popitem(last=False) is O(1).
        self._entries: OrderedDict[str, Spent] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, now: float) -> Spent | None:
        """The entry for ``key`` if it still holds at ``now``; a stale one is dropped."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now < entry.expires:
            return entry
        del self._entries[key]
        return None

    def put(self, key: str, until: float, limit: Limit, now: float) -> None:
        """Remember ``key`` as spent until ``until``, trusted for min(until - now, lifetime)."""
        if until <= now:
            return
        entries = self._entries
        entries.pop(key, None)
        if len(entries) >= self.size:
            entries.popitem(last=False)
        entries[key] = Spent(until, limit, now + min(until - now, self.lifetime))

    def forget(self, key: str) -> None:
        """Drop ``key`` (this process gave one of its slots back)."""
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
