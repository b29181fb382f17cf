"""Limit parsing and the exact rolling-window arithmetic, with an injected clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triggergate.clock import ManualClock
from triggergate.errors import ConfigurationError
from triggergate.quota import Check, Limit, decide, evaluate, parse_limits
from triggergate.stores.memory import MemoryStore

DAY = 86400


@pytest.mark.parametrize(
    ("text", "count", "window"),
    [
        ("3/7d", 3, 7 * DAY),
        ("1/10m", 1, 600),
        ("100/1d", 100, DAY),
        ("5/h", 5, 3600),
        ("2/30s", 2, 30),
        ("1/2w", 1, 14 * DAY),
        (" 4 / 12h ", 4, 43200),
    ],
)
def test_limits_parse_count_and_window(text: str, count: int, window: int) -> None:
    """COUNT/[N]UNIT with units s, m, h, d, w parses to a count and seconds."""
    assert Limit.parse(text) == Limit(count, window)


@pytest.mark.parametrize("text", ["", "3", "3/7", "3/7x", "0/1d", "3/0d", "-1/1d", "a/1d", "3/7dd", "3//7d"])
def test_bad_limits_are_configuration_errors_naming_the_value(text: str) -> None:
    """A malformed limit says what was given and how to write one."""
    with pytest.raises(ConfigurationError) as info:
        Limit.parse(text)
    assert repr(text) in str(info.value)
    assert "COUNT/" in str(info.value) or "at least 1" in str(info.value)


def test_limits_print_as_written() -> None:
    """A limit prints in the unit a person would write."""
    assert [str(x) for x in parse_limits(["3/7d", "1/10m", "2/90s", "1/2h"])] == [
        "3/7d",
        "1/10m",
        "2/90s",
        "1/2h",
    ]


def test_evaluate_counts_only_events_inside_the_half_open_window() -> None:
    """An event exactly one window old no longer counts."""
    limit = Limit(1, 100)
    assert not evaluate("k", [1000.0], [limit], 1099.999).allowed
    assert evaluate("k", [1000.0], [limit], 1100.0).allowed


def test_retry_after_is_when_enough_events_leave() -> None:
    """With 3 of 3 used, the wait is until the oldest leaves; with two limits the longer wait wins."""
    events = [100.0, 200.0, 300.0]
    verdict = evaluate("k", events, [Limit(3, 1000)], 400.0)
    assert not verdict.allowed and verdict.retry_after == pytest.approx(700.0)
    both = evaluate("k", events, [Limit(3, 1000), Limit(1, 500)], 400.0)
    assert both.retry_after == pytest.approx(700.0)
    short = evaluate("k", [390.0], [Limit(3, 1000), Limit(1, 60)], 400.0)
    assert not short.allowed and short.limit == Limit(1, 60) and short.retry_after == pytest.approx(50.0)


def test_allowed_verdict_reports_the_tightest_limit() -> None:
    """When every limit allows, the binding one is the one with fewest remaining slots."""
    verdict = evaluate("k", [100.0], [Limit(3, 1000), Limit(2, 10)], 105.0)
    assert verdict.allowed and verdict.limit == Limit(2, 10) and verdict.remaining == 1


def test_decide_denies_when_any_check_denies() -> None:
    """A request passes only when every check passes; the blocking check is named."""
    checks = [Check("c:a", (Limit(3, 100),)), Check("g", (Limit(1, 100),))]
    decision = decide(checks, [[], [50.0]], 60.0)
    assert not decision.allowed
    assert decision.blocking is not None and decision.blocking.key == "g"


# -- the model test ---------------------------------------------------------------------

steps = st.lists(
    st.one_of(
        st.tuples(st.just("press"), st.integers(0, 2)),
        st.tuples(st.just("wait"), st.floats(0, 3 * DAY, allow_nan=False)),
    ),
    max_size=60,
)
limit_sets = st.lists(
    st.builds(Limit, st.integers(1, 4), st.sampled_from([60, 3600, DAY, 7 * DAY])),
    min_size=1,
    max_size=3,
    unique=True,
)


@settings(max_examples=150, deadline=None)
@given(steps=steps, limits=limit_sets)
async def test_random_presses_and_clock_jumps_never_over_or_under_admit(
    steps: list[tuple[str, float]], limits: list[Limit]
) -> None:
    """Model check: at most N admitted in any window, and never a denial while a slot is free."""
    clock = ManualClock()
    store = MemoryStore(clock=clock)
    admitted: dict[int, list[float]] = {0: [], 1: [], 2: []}
    for n, (kind, value) in enumerate(steps):
        if kind == "wait":
            clock.advance(value)
            continue
        client = int(value)
        now = clock()
        free = all(sum(1 for t in admitted[client] if t > now - lim.window) < lim.count for lim in limits)
        decision = await store.reserve(f"r{n}", [Check(f"c:{client}", tuple(limits))], {})
        assert decision.allowed == free
        if decision.allowed:
            admitted[client].append(now)
        else:
            assert decision.retry_after > 0
    for times in admitted.values():
        for lim in limits:
            for start in times:  # any window's worst case starts at an admitted event
                assert sum(1 for t in times if start <= t < start + lim.window) <= lim.count
