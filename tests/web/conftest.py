"""Fixtures for HTTP tests through the real app (Starlette TestClient runs the lifespan)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from triggergate.settings import Settings
from triggergate.web.app import create_app

MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[MakeClient]:
    """Build a client for an app with the given settings; ``peer`` sets the transport address."""
    stack = ExitStack()

    def make(peer: str = "203.0.113.10", **overrides: Any) -> TestClient:
        values: dict[str, Any] = {
            "store": f"sqlite:///{tmp_path}/gate.db",
            "pipeline": "noop://",
            "notify": ["log://"],
            "state_dir": tmp_path / "state",
            "coalesce": False,
            **overrides,
        }
        app = create_app(Settings(**values))
        client = TestClient(app, client=(peer, 40000), raise_server_exceptions=False)
        return stack.enter_context(client)

    yield make
    stack.close()
