"""Fixtures of the hardening suite: the real Redis and PostgreSQL servers."""

from tests.servers.postgres import postgres_server
from tests.servers.redis import redis_server

__all__ = ["postgres_server", "redis_server"]
