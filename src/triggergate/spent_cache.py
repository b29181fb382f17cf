"""A small in-process memory of quota keys known to be spent, for the deny fast path.

Inside a window a spent key becomes unspent only three ways: time passes (the
entry knows when its first slot frees), this process refunds one of its slots
(:meth:`SpentCache.forget`), or something elsewhere removes events (an operator
reset, another replica's refund). The last is covered by a short lifetime for
every entry, so a remote change is seen within ``lifetime`` seconds.

Entries live in a ring of fixed-size arrays, the oldest insertion overwritten
first: about 190 bytes per entry with its key string, against ~270 for an
ordered dictionary of small objects (tracemalloc, after a flood of new keys), so
a full cache of the default size stays near 3 MB, and a flood of new addresses
cannot grow a server's memory past that.
"""

from __future__ import annotations

from array import array
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
        self._slot: dict[str, int] = {}  # key -> its place in the ring
        self._keys: list[str | None] = [None] * size
        self._until = array("d", bytes(8 * size))
        self._expires = array("d", bytes(8 * size))
        self._limit = array("B", bytes(size))  # an index into _limits
        self._limits: dict[Limit, int] = {}  # the few limits of a policy, numbered
        self._by_number: list[Limit] = []
        self._numbers = list(range(size))  # one int object per place, shared by every entry
        self._next = 0

    def __len__(self) -> int:
        return len(self._slot)

    def get(self, key: str, now: float) -> Spent | None:
        """The entry for ``key`` if it still holds at ``now``; a stale one is dropped."""
        slot = self._slot.get(key)
        if slot is None:
            return None
        expires = self._expires[slot]
        if now < expires:
            return Spent(self._until[slot], self._by_number[self._limit[slot]], expires)
        self.forget(key)
        return None

    def put(self, key: str, until: float, limit: Limit, now: float) -> None:
        """Remember ``key`` as spent until ``until``, trusted for min(until - now, lifetime)."""
        if until <= now:
            return
        number = self._limits.get(limit)
        if number is None:
            if len(self._by_number) == 256:  # never for a real policy; stay within a byte
                self.clear()
            number = self._limits[limit] = len(self._by_number)
            self._by_number.append(limit)
        self.forget(key)
        slot = self._next
        self._next = (slot + 1) % self.size
        oldest = self._keys[slot]
        if oldest is not None:
            del self._slot[oldest]
        self._keys[slot] = key
        self._slot[key] = self._numbers[slot]
        self._until[slot] = until
        self._expires[slot] = now + min(until - now, self.lifetime)
        self._limit[slot] = number

    def forget(self, key: str) -> None:
        """Drop ``key`` (this process gave one of its slots back)."""
        slot = self._slot.pop(key, None)
        if slot is not None:
            self._keys[slot] = None

    def clear(self) -> None:
        self._slot.clear()
        self._keys = [None] * self.size
        self._limits.clear()
        self._by_number.clear()
