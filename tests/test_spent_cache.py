"""The spent-key cache: bounded, short-lived, never outliving the slot it describes."""

from __future__ import annotations

import tracemalloc

from triggergate.quota import Limit
from triggergate.spent_cache import SpentCache

LIMIT = Limit(3, 604_800)


def test_entry_lives_at_most_its_lifetime_and_never_past_until() -> None:
    """An entry holds for min(lifetime, until - now); then it is gone."""
    cache = SpentCache(lifetime=2.0)
    cache.put("c:a", until=1000.5, limit=LIMIT, now=1000.0)
    cache.put("c:b", until=5000.0, limit=LIMIT, now=1000.0)
    assert cache.get("c:a", 1000.4) is not None
    assert cache.get("c:a", 1000.5) is None
    assert cache.get("c:b", 1001.9) is not None
    assert cache.get("c:b", 1002.0) is None
    assert len(cache) == 0


def test_size_is_bounded_by_evicting_the_oldest() -> None:
    """Past ``size`` entries the oldest insertion goes first."""
    cache = SpentCache(size=3)
    for i in range(5):
        cache.put(f"c:{i}", until=2000.0, limit=LIMIT, now=1000.0)
    assert len(cache) == 3
    assert [cache.get(f"c:{i}", 1000.0) is not None for i in range(5)] == [False, False, True, True, True]


def test_forget_and_a_past_until_leave_nothing() -> None:
    """A refunded key is forgotten; a key already free is never stored."""
    cache = SpentCache()
    cache.put("c:a", until=2000.0, limit=LIMIT, now=1000.0)
    cache.forget("c:a")
    cache.put("c:b", until=999.0, limit=LIMIT, now=1000.0)
    assert cache.get("c:a", 1000.0) is None
    assert cache.get("c:b", 1000.0) is None


def test_a_flood_of_new_keys_never_grows_memory_past_a_fixed_bound() -> None:
    """16,384 entries take under 2.5 MB of the cache's own however many keys pass; 50,000 more add nothing."""
    keys = [f"c:10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in range(150_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cache = SpentCache(size=16_384)
        for key in keys[:100_000]:
            cache.put(key, until=2000.0, limit=LIMIT, now=1000.0)
        flooded = tracemalloc.get_traced_memory()[0]
        for key in keys[100_000:]:
            cache.put(key, until=2000.0, limit=LIMIT, now=1000.0)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(cache) == 16_384
    # The key strings were allocated by the test, before: this is the cache's own memory.
    assert flooded - before < 2.5e6  # an ordered dict of small objects took 3.3 MB
    assert after - flooded < 0.1e6
    assert cache.get(keys[-1], 1000.0) is not None and cache.get(keys[0], 1000.0) is None
