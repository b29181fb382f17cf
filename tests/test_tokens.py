"""The admin token strength rule: length, visible ASCII, and the character-frequency estimate."""

from __future__ import annotations

import secrets

import pytest

from triggergate.tokens import GENERATE, MIN_BITS, estimated_bits, token_problem


def test_the_estimate_is_the_smallest_of_characters_steps_and_repetition() -> None:
    """One repeated character carries nothing; a run of letters carries almost nothing by
    its steps; a repeated word carries little by its repetition; a generated token keeps
    its bits under all three."""
    assert estimated_bits("a" * 40) == 0
    assert estimated_bits("abcdefghijklmnopqrstuvwxyz012345") < 10  # steps: all +1 but one
    assert estimated_bits("abcd" * 50) < 64  # 400 bits by characters, but it repeats
    assert estimated_bits("Qm3vT8yKc1pZr6WnX0aLd4sEh7uJf2gBiN5oV9tRwYe") > 200


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        pytest.param("Qm3vT8yKc1pZr6WnX0aLd4sEh7uJf2g", "31 characters", id="one-short"),
        pytest.param("a" * 64, "too predictable", id="one-character"),
        pytest.param("0110100110010110" * 4, "too predictable", id="binary-digits"),
        pytest.param("passwordpasswordpasswordpassword", "too predictable", id="repeated-word"),
        pytest.param("1234567890" * 4, "too predictable", id="digit-run"),
        pytest.param(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "too predictable", id="alphabet"
        ),
        pytest.param("password1" * 15, "too predictable", id="long-but-periodic"),
        pytest.param("Qm3vT8yKc1pZr6WnX0aLd4sEh7uJf2gBi N5oV9", "visible ASCII", id="a-space"),
        pytest.param("Qm3vT8yKc1pZr6WnX0aLd4sEh7uJf2gBiNé5oV9", "visible ASCII", id="non-ascii"),
    ],
)
def test_weak_tokens_are_refused_with_the_reason_and_the_generator(token: str, reason: str) -> None:
    """Each rule refuses with its own reason, the command to generate a token, and
    never the token itself."""
    problem = token_problem(token)
    assert problem is not None and reason in problem and GENERATE in problem
    assert token not in problem


def test_the_recommended_generator_always_passes() -> None:
    """token_urlsafe(32) and token_hex(32) pass on every one of 2,000 draws."""
    for _ in range(1000):
        assert token_problem(secrets.token_urlsafe(32)) is None
        assert token_problem(secrets.token_hex(32)) is None


def test_the_bound_is_128_bits() -> None:
    """The threshold is the documented 128 bits, and a token scoring above it passes."""
    assert MIN_BITS == 128
    token = "Qm3vT8yKc1pZr6WnX0aLd4sEh7uJf2gB"
    assert estimated_bits(token) >= MIN_BITS and token_problem(token) is None
