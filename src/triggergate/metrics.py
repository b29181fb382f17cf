"""Prometheus metrics (per process; scrape each replica)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry()

DECISIONS = Counter("triggergate_decisions", "Trigger decisions by outcome", ["decision"], registry=REGISTRY)
LATENCY = Histogram(
    "triggergate_trigger_seconds",
    "Time to answer POST /trigger through the full flow (fast-path denials are only counted)",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
    registry=REGISTRY,
)
