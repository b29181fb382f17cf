"""Fixtures for the AWS tests: moto (reset per test) and dynalite, on 127.0.0.1."""

from __future__ import annotations

from tests.servers.aws import dynalite, moto, moto_endpoint  # noqa: F401 - fixtures, found by name
