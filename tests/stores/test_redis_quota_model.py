"""The Lua quota script against ``quota.evaluate``: same events, same limits, same clock, same verdicts.

Hypothesis drives a real redis-server through reservations, peeks, refunds,
settlements and clock jumps, over clocks whose times take either packed form
(a whole number of 2^-22 s, or 8-byte doubles). A model keeps the admitted
event times itself; every decision the store returns must equal what
:func:`triggergate.quota.decide` says over the model's events at the store's time.
"""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.servers.redis import RedisServer
from tests.stores import remote_cases as cases
from triggergate.clock import ManualClock
from triggergate.quota import Check, Limit, decide
from triggergate.stores.base import Batch

pytestmark = pytest.mark.redis

HOUR = 3600
limit_sets = st.lists(
    st.builds(Limit, st.integers(1, 4), st.sampled_from([1, 60, HOUR, cases.DAY, 7 * cases.DAY])),
    min_size=1,
    max_size=3,
    unique_by=lambda limit: limit.window,
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.integers(0, 2)),
        st.tuples(st.just("peek"), st.integers(0, 2)),
        st.tuples(st.just("release"), st.integers(0, 30)),
        st.tuples(st.just("settle"), st.integers(0, 30)),
        st.tuples(st.just("wait"), st.floats(0, 2 * cases.DAY, allow_nan=False)),
        # exactly a window, or just short of one: where an event stops counting
        st.tuples(st.just("wait"), st.sampled_from([0.0, 1e-6, 0.999, 1.0, 59.999, 60.0, 3600.0, 86400.0])),
    ),
    max_size=40,
)
# 1.7e9 and 5e9: whole numbers of 2^-22 s (stored as one integer); 1000.1: before 2004,
# where doubles are finer than 2^-22 s (stored as doubles); 2**31 - 1: around 2038.
starts = st.sampled_from([1_700_000_000.0, 1_700_000_000.123, 1000.1, 2.0**31 - 1, 5e9])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=starts, client_limits=limit_sets, budget_limits=limit_sets, steps=steps)
# An event exactly one short window old: counted by the longer window only.
@example(
    start=1_700_000_000.0,
    client_limits=[Limit(1, 60), Limit(3, HOUR)],
    budget_limits=[Limit(4, 1)],
    steps=[("reserve", 0), ("wait", 60.0), ("peek", 0), ("reserve", 0), ("release", 3), ("reserve", 0)],
)
# The same on a clock before 2004, where events are stored as doubles.
@example(
    start=1000.1,
    client_limits=[Limit(1, 60), Limit(3, HOUR)],
    budget_limits=[Limit(4, 1)],
    steps=[("reserve", 0), ("wait", 60.0), ("reserve", 0), ("wait", 59.999), ("reserve", 0)],
)
async def test_every_decision_equals_quota_decide_over_the_admitted_events(
    redis_server: RedisServer,
    start: float,
    client_limits: list[Limit],
    budget_limits: list[Limit],
    steps: list[tuple[str, float]],
) -> None:
    """Reservations, peeks, refunds and clock jumps: each verdict is quota.decide's, exactly."""
    clock = ManualClock(start)
    space = uuid.uuid4().hex[:8]
    budget = Check(f"g:{space}", tuple(budget_limits))
    clients = [Check(f"c:{space}-{i}", tuple(client_limits)) for i in range(3)]
    model: dict[str, list[float]] = {c.key: [] for c in [*clients, budget]}
    pending: dict[str, tuple[float, list[str]]] = {}  # rid -> (time, keys)
    async with cases.opened(redis_server.url, clock=clock, server_time=False) as store:
        for n, (kind, value) in enumerate(steps):
            if kind == "wait":
                clock.advance(value)
                continue
            if kind in ("release", "settle"):
                rid = f"r{int(value)}"
                await store.apply(Batch(**{kind: rid}))
                held = pending.pop(rid, None)
                if held and kind == "release":
                    for key in held[1]:
                        model[key].remove(held[0])
                continue
            checks = [clients[int(value)], budget]
            want = decide(checks, [model[c.key] for c in checks], clock())
            if kind == "peek":
                got = await store.peek(checks)
            else:
                got = await store.reserve(f"r{n}", checks, {})
                if got.allowed:
                    pending[f"r{n}"] = (got.now, [c.key for c in checks])
                    for c in checks:
                        model[c.key].append(got.now)
            assert got.now == clock()
            assert got.verdicts == want.verdicts
