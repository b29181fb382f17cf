"""Audit records and operator alerts: what is kept, what is said, and denial aggregation.

Audit records are store records of kind ``audit``, kept apart from quota
events and retained far longer. Denials are never recorded one by one: a
:class:`DenialCounter` folds them into one record and one log line per minute.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from triggergate.notifiers.base import Alert
from triggergate.stores.base import Record

log = logging.getLogger("triggergate.audit")

TOP_KEYS = 20
MAX_TRACKED = 2_000  # distinct keys counted per minute; the rest add to one overflow count


@functools.lru_cache(maxsize=64)
def _iso_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def iso(at: float) -> str:
    """UTC ISO 8601 to the second (cached: a denial flood asks for the same few seconds)."""
    return _iso_second(int(at))


def audit_record(at: float, retention: float, event: str, **fields: Any) -> Record:
    """One audit entry; ``event`` is accepted, refunded, failed, uncertain, denied, recovered or admin."""
    doc = {"at": at, "event": event, **{k: v for k, v in fields.items() if v is not None}}
    return Record("audit", uuid.uuid4().hex, doc, expires=at + retention)


@dataclass(frozen=True)
class AlertText:
    """Builds alerts in the reference design's words."""

    pipeline: str

    def accepted(self, client: str, run_id: str, execution: str, at: float) -> Alert:
        return Alert(
            event="accepted",
            subject="Pipeline triggered via public endpoint",
            body=(
                f"Pipeline: {self.pipeline}\nClient: {client}\nExecution ID: {execution}\n"
                f"Run ID: {run_id}\nTime: {iso(at)}"
            ),
            attributes={"event": "accepted", "pipeline": self.pipeline, "run_id": run_id},
        )

    def failed(self, client: str, run_id: str, reason: str, at: float, *, refunded: bool = True) -> Alert:
        return Alert(
            event="failed",
            subject="Pipeline trigger failed",
            body=(
                f"Pipeline: {self.pipeline}\nClient: {client}\nRun ID: {run_id}\n"
                f"Reason: {reason}\n"
                + (
                    "The client's quota slot was refunded."
                    if refunded
                    else "The start is uncertain: the slot stays held until the run is found or refunded."
                )
                + f"\nTime: {iso(at)}"
            ),
            attributes={"event": "failed", "pipeline": self.pipeline, "run_id": run_id},
        )

    def uncertain(self, client: str, run_id: str, reason: str, at: float) -> Alert:
        return Alert(
            event="uncertain",
            subject="Pipeline start unconfirmed",
            body=(
                f"Pipeline: {self.pipeline}\nClient: {client}\nRun ID: {run_id}\n"
                f"Reason: {reason}\nThe start may or may not have run; check the pipeline. "
                f"The client's quota slot stays used.\nTime: {iso(at)}"
            ),
            attributes={"event": "uncertain", "pipeline": self.pipeline, "run_id": run_id},
        )

    def budget_exhausted(self, budget: str, at: float) -> Alert:
        return Alert(
            event="budget_exhausted",
            subject="Pipeline trigger budget exhausted",
            body=(
                f"Pipeline: {self.pipeline}\nThe global budget {budget} is used up; "
                f"further presses are refused until it frees up.\nTime: {iso(at)}"
            ),
            attributes={"event": "budget_exhausted", "pipeline": self.pipeline},
        )

    def admin_login_limited(self, limits: str, at: float) -> Alert:
        return Alert(
            event="admin_login_limited",
            subject="Operator sign-in limit reached",
            body=(
                f"Pipeline: {self.pipeline}\nFailed operator sign-ins reached the global limit "
                f"{limits}; every sign-in to /admin is refused until it frees up. Someone may be "
                f"guessing the admin token.\nTime: {iso(at)}"
            ),
            attributes={"event": "admin_login_limited", "pipeline": self.pipeline},
        )

    def run_finished(self, run_id: str, state: str, at: float) -> Alert:
        return Alert(
            event=f"run_{state}",
            subject=f"Pipeline run {state}",
            body=f"Pipeline: {self.pipeline}\nRun ID: {run_id}\nState: {state}\nTime: {iso(at)}",
            attributes={"event": f"run_{state}", "pipeline": self.pipeline, "run_id": run_id},
        )


class DenialCounter:
    """Counts denials per key for the current minute; bounded in memory.

    The request path only increments a counter; :meth:`drain` (called by the
    background loop) turns a finished minute into one audit record and one log
    line, so a flood of denials costs no store write and no log line each.
    """

    def __init__(self) -> None:
        self.minute = 0
        self.counts: Counter[str] = Counter()
        self.overflow = 0
        self.reasons: Counter[str] = Counter()
        self._finished: list[dict[str, Any]] = []

    def add(self, key: str, reason: str, now: float) -> None:
        minute = int(now // 60)
        if minute != self.minute and self.counts:
            self._finished.append(self._snapshot())
        self.minute = minute
        if key in self.counts or len(self.counts) < MAX_TRACKED:
            self.counts[key] += 1
        else:
            self.overflow += 1
        self.reasons[reason] += 1

    def _snapshot(self) -> dict[str, Any]:
        snap = {
            "minute": iso(self.minute * 60),
            "total": sum(self.counts.values()) + self.overflow,
            "distinct_keys": len(self.counts) + (1 if self.overflow else 0),
            "top": dict(self.counts.most_common(TOP_KEYS)),
            "reasons": dict(self.reasons),
        }
        self.counts, self.overflow, self.reasons = Counter(), 0, Counter()
        return snap

    def drain(self, now: float, force: bool = False) -> list[dict[str, Any]]:
        """Finished minutes (or everything, with ``force``) as summaries, oldest first."""
        out, self._finished = self._finished, []
        if self.counts and (force or int(now // 60) != self.minute):
            out.append(self._snapshot())
        return out
