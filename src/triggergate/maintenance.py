"""Background work of every process: reconcile pending reservations, flush denial
summaries, sweep expired data. Safe to run on every replica at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from triggergate.audit import audit_record
from triggergate.errors import BackendCannotFind, BackendError, StoreError
from triggergate.gate import ADMIN_LOGIN_PURPOSE
from triggergate.runs import started_records
from triggergate.stores.base import Batch, Record

if TYPE_CHECKING:
    from triggergate.service import Service

log = logging.getLogger("triggergate")


class Maintenance:
    """The jobs :meth:`run` repeats; each reads the service's store, backend and policy."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def reconcile(self) -> int:
        """Settle (the run exists) or refund (it does not) reservations left pending by a
        crash or an uncertain start, once each across all replicas."""
        svc = self.service
        retention = svc.policy.audit_retention
        handled = 0
        for entry in await svc.store.pending(svc.clock() - svc.policy.reconcile_after):
            rid = entry["rid"]
            if entry.get("purpose") == ADMIN_LOGIN_PURPOSE:
                # A sign-in attempt cut off between its charge and its answer: it stays
                # charged (a guess may have been compared); there is no run to look for.
                await svc.store.apply(Batch(settle=rid))
                continue
            now = svc.clock()
            # Held by one replica; if it dies meanwhile, another retries after the claim lapses.
            claim = Record("reconciling", rid, {"at": now}, expires=now + svc.policy.backend_timeout + 30)
            if svc.in_flight(rid) or not await svc.store.put_new(claim):
                continue
            try:
                found = await asyncio.wait_for(svc.backend.find(rid), svc.policy.backend_timeout)
            except BackendCannotFind as exc:
                # No way to learn whether it started: keep the slot counted and say so,
                # rather than refund a run that may be running.
                await self._hold_uncertain(entry, str(exc), now)
                handled += 1
                continue
            except (BackendError, TimeoutError):
                found = None
            if found is None:
                svc.spent.forget(f"c:{entry.get('client_key')}")  # the slot is free again
                audit = audit_record(
                    now,
                    retention,
                    "refunded",
                    request_id=rid,
                    client_key=entry.get("client_key"),
                    client=entry.get("client"),
                    detail="no run was started",
                )
                await svc.store.apply(Batch(release=rid, records=[audit]))
            else:
                _, records = started_records(rid, found, entry, now, retention, "recovered")
                alert = svc.alerts.accepted(str(entry.get("client")), rid, found.ref, now)
                await svc.store.apply(Batch(settle=rid, records=records, outbox=svc.outbox.items_for(alert)))
            handled += 1
        return handled

    async def _hold_uncertain(self, entry: dict[str, Any], reason: str, now: float) -> None:
        """Settle a reservation whose start cannot be confirmed: counted, audited, alerted."""
        svc, rid = self.service, entry["rid"]
        audit = audit_record(
            now,
            svc.policy.audit_retention,
            "uncertain",
            request_id=rid,
            client_key=entry.get("client_key"),
            client=entry.get("client"),
            detail=f"the start was not confirmed and cannot be checked ({reason}); the slot stays used",
        )
        alert = svc.alerts.uncertain(str(entry.get("client")), rid, reason, now)
        await svc.store.apply(Batch(settle=rid, records=[audit], outbox=svc.outbox.items_for(alert)))
        log.warning("start held as uncertain", extra={"request_id": rid, "decision": "uncertain"})

    async def flush_denials(self, force: bool = False) -> None:
        """One log line and one audit record per finished minute of denials."""
        svc = self.service
        now = svc.clock()
        for summary in svc.denials.drain(now, force):
            log.info("denials", extra={"decision": "denied", **summary})
            record = audit_record(now, svc.policy.audit_retention, "denied", **summary)
            await svc.store.apply(Batch(records=[record]))

    async def run(self, stop: asyncio.Event, interval: float = 5.0) -> None:
        """Reconcile, flush denial summaries and sweep, until ``stop`` is set."""
        svc = self.service
        while not stop.is_set():
            for job in (self.reconcile, self.flush_denials, svc.store.sweep):
                try:
                    await job()
                except StoreError as exc:  # an outage: one line per window, no traceback
                    svc.store_alarm("", exc)
                except Exception:  # the loop must survive any single failure
                    log.exception("background job failed", extra={"job": job.__name__})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
        await self.flush_denials(force=True)
