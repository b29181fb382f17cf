"""How strong an admin token must be (``check-config`` and ``serve`` refuse weaker ones).

The token guards the kill switch and signs every operator session, so a copied
session cookie is a way to test guesses offline: it must resist an offline
search, not only the sign-in limit. The rule, exactly:

* at least ``MIN_LENGTH`` (32) characters;
* visible ASCII only (``!`` to ``~``): what an ``Authorization`` header and a
  form field carry unchanged;
* at least ``MIN_BITS`` (128) bits by the smallest of three estimates:

  1. characters: ``n * H`` of the token's own character frequencies, where
     ``H = sum(p * log2(1 / p))`` and ``p`` is a character's share (a small
     alphabet, or one character that dominates, scores low);
  2. steps: the same over the differences between neighbouring character codes
     (runs such as ``abcdef…`` or ``123456…`` score low);
  3. repetition: 8 bits per byte of the token compressed by ``zlib`` at level 9,
     less 8 bytes of framing (``passwordpassword…`` scores low).

The estimate is a guard against mistakes, not a proof of randomness: a phrase
of words can pass it. Generate the token instead: ``GENERATE`` gives 43
characters from 64, which scored at least 178 bits over 100,000 draws (so did
``secrets.token_hex(32)``); 32 hex digits (``token_hex(16)``) score under 128.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections import Counter
from collections.abc import Hashable, Sequence

MIN_LENGTH = 32
MIN_BITS = 128
ZLIB_FRAMING = 8  # bytes: header, checksum and block markers around the compressed data
GENERATE = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


def _frequency_bits(items: Sequence[Hashable]) -> float:
    n = len(items)
    return sum((count * math.log2(n / count) for count in Counter(items).values()), 0.0)


def estimated_bits(token: str) -> float:
    """The smallest of the character, step and repetition estimates (see the module docstring)."""
    codes = [ord(char) for char in token]
    steps = [b - a for a, b in itertools.pairwise(codes)]
    compressed = 8 * (len(zlib.compress(token.encode(), 9)) - ZLIB_FRAMING)
    return max(0.0, min(_frequency_bits(token), _frequency_bits(steps), float(compressed)))


def token_problem(token: str) -> str | None:
    """Why ``token`` is too weak (never quoting it), or None when it passes the rule."""
    if len(token) < MIN_LENGTH:
        reason = f"it has {len(token)} characters; at least {MIN_LENGTH} are required"
    elif not all("!" <= char <= "~" for char in token):
        reason = "it may hold only visible ASCII characters (no spaces or other characters)"
    elif (bits := estimated_bits(token)) < MIN_BITS:
        reason = (
            f"it is too predictable ({bits:.0f} of {MIN_BITS} bits estimated from its "
            "characters, their steps and their repetition)"
        )
    else:
        return None
    return f"the admin token is too weak: {reason}; generate one with {GENERATE}"
