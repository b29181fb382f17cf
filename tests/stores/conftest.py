"""The store contract suite's fixtures: one ``store`` fixture, parametrized over every engine.

Each engine registers a factory in ``FACTORIES``; a factory is an async
context manager taking the injected clock and yielding a fresh, empty store.
Engines that normally take time from their server honour the injected clock
when the context sets ``options={"server_time": False}`` (a testing hook).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from triggergate.clock import ManualClock
from triggergate.registry import Context, store_from_url
from triggergate.stores.base import Store

Factory = Callable[[ManualClock, Path, pytest.FixtureRequest], contextlib.AbstractAsyncContextManager[Store]]


@contextlib.asynccontextmanager
async def _from_url(url: str, clock: ManualClock, **options: Any) -> AsyncIterator[Store]:
    store = store_from_url(url, Context(clock=clock, options={"server_time": False, **options}))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def memory_factory(clock: ManualClock, tmp: Path, request: pytest.FixtureRequest) -> Any:
    return _from_url("memory://", clock)


def sqlite_factory(clock: ManualClock, tmp: Path, request: pytest.FixtureRequest) -> Any:
    return _from_url(f"sqlite:///{tmp}/contract.db", clock)


def redis_factory(clock: ManualClock, tmp: Path, request: pytest.FixtureRequest) -> Any:
    server = request.getfixturevalue("redis_server")
    server.flush()
    return _from_url(server.url, clock)


def postgres_factory(clock: ManualClock, tmp: Path, request: pytest.FixtureRequest) -> Any:
    server = request.getfixturevalue("postgres_server")
    server.reset()
    return _from_url(server.url, clock)


def dynamodb_factory(clock: ManualClock, tmp: Path, request: pytest.FixtureRequest) -> Any:
    # dynalite, not moto: moto's conditional writes are not atomic (TTL checks: tests/aws).
    from tests.servers.aws import REGION, shared_dynalite

    endpoint = shared_dynalite(request.config)
    table = f"contract-{uuid.uuid4().hex[:12]}"
    return _from_url(f"dynamodb://{table}?region={REGION}&endpoint_url={endpoint}&create_table=true", clock)


FACTORIES: dict[str, tuple[Factory, list[Any]]] = {
    "memory": (memory_factory, []),
    "sqlite": (sqlite_factory, [pytest.mark.sqlite]),
    "dynamodb": (dynamodb_factory, [pytest.mark.dynamodb]),
    "redis": (redis_factory, [pytest.mark.redis]),
    "postgres": (postgres_factory, [pytest.mark.postgres]),
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=[pytest.param(name, marks=marks) for name, (_, marks) in FACTORIES.items()])
async def store(request: pytest.FixtureRequest, clock: ManualClock, tmp_path: Path) -> AsyncIterator[Store]:
    factory, _ = FACTORIES[request.param]
    async with factory(clock, tmp_path, request) as opened:
        yield opened
