"""Shared helpers for the backend tests: contexts with short timeouts, log capture."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from triggergate.registry import Context

FAST = {"http_timeout": 0.5, "http_budget": 4.0, "http_backoff": 0.05, "find_wait": 3.0}


def context(secrets: dict[str, str], **options: Any) -> Context:
    """A context whose secrets are ``TRIGGERGATE_<NAME>`` variables, with test timeouts."""
    environ = {f"TRIGGERGATE_{k}": v for k, v in secrets.items()}
    return Context(environ=environ, options={**FAST, **options})


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture every logger at DEBUG (httpx and httpcore included)."""
    caplog.set_level(logging.DEBUG)
    # triggergate's own log setup quiets these two; the leak checks need their lines.
    caplog.set_level(logging.DEBUG, logger="httpx")
    caplog.set_level(logging.DEBUG, logger="httpcore")
    return caplog


def assert_secret_absent(secret: str, *texts: object) -> None:
    """The secret (or its first half) appears in none of the texts."""
    for text in texts:
        assert secret not in str(text)
        assert secret[: len(secret) // 2] not in str(text)
