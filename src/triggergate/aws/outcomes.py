"""Pipeline outcomes from EventBridge into the run record, the audit log and the alerts.

The reference design caught only failures to start; a run that fails later
must alert too. The service writes ``run`` (by run id) and ``run_ref`` (by
execution id -> run id) when it starts a run; an execution state change finds
the run through ``run_ref``, stores the final state, audits it, and queues a
failure alert. EventBridge delivers at least once, so a marker record makes
each (execution, state) count once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from triggergate.audit import audit_record
from triggergate.stores.base import Batch, Record

if TYPE_CHECKING:
    from triggergate.service import Service

log = logging.getLogger("triggergate.aws")

STATES = {
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    "SUPERSEDED": "superseded",
    "STOPPED": "cancelled",
    "CANCELED": "cancelled",
}
ALERTED = frozenset({"failed"})
LATE_LINK = 120.0  # seconds: an event this young may beat the run_ref write, so retry it


class RunNotLinkedYet(LookupError):
    """Raised when a fresh event's execution has no run yet; EventBridge retries it."""


async def record_outcome(service: Service, detail: dict[str, Any], age: float) -> bool:
    """Record one final execution state; False when it is not ours, not final, or already known."""
    state = STATES.get(str(detail.get("state", "")))
    execution = str(detail.get("execution-id", ""))
    if state is None or not execution:
        return False
    store, now = service.store, service.clock()
    link = await store.get("run_ref", execution)
    if link is None:
        trigger = detail.get("execution-trigger", {}).get("trigger-type")
        if trigger == "StartPipelineExecution" and age < LATE_LINK:
            raise RunNotLinkedYet("execution not linked to a run yet")
        log.info("execution not started through triggergate", extra={"state": state})
        return False
    run_id = str(link["run_id"])
    run = await store.get("run", run_id)
    retention = service.policy.audit_retention
    marker = Record("run_outcome", f"{execution}:{state}", {"at": now}, expires=now + retention)
    if run is None or not await store.put_new(marker):
        return False
    run.update(state=state, finished_at=now)
    records = [
        Record("run", run_id, run, expires=float(run.get("at", now)) + retention),
        audit_record(now, retention, f"run_{state}", run_id=run_id, ref=execution),
    ]
    alert = service.alerts.run_finished(run_id, state, now)
    outbox = service.outbox.items_for(alert) if state in ALERTED else []
    await store.apply(Batch(records=records, outbox=outbox))
    return True
