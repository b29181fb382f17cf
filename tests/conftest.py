"""Fixtures every test folder may use: real servers started once per session."""

from tests.servers.postgres import postgres_server  # noqa: F401 - a fixture, found by name
from tests.servers.redis import redis_server  # noqa: F401 - a fixture, found by name
