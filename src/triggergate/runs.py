"""Run records and their status, read through a short cache so a crowd refreshing a
status page cannot exhaust the CI system's API rate limit."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from triggergate.audit import audit_record
from triggergate.backends.base import FINAL_STATES, Backend, Started, Status
from triggergate.clock import Clock
from triggergate.errors import BackendError
from triggergate.idempotency import Guard
from triggergate.singleflight import SingleFlight
from triggergate.stores.base import Batch, Record, Store

log = logging.getLogger("triggergate")
ACTIVE = ("active", "run")
ACTIVE_TTL = 6 * 3600.0


class RunTracker:
    """Reads runs from the store and their live state from the backend (cached)."""

    CACHE_SECONDS = 2.0
    MAX_CACHED = 10_000

    def __init__(
        self, store: Store, backend: Backend, clock: Clock, retention: float, guard: Guard | None = None
    ) -> None:
        self.store = store
        # The fail-closed deadline around each store call (the service's), so a stalled
        # store costs a status read one deadline, not the store client's own timeouts.
        self.guard: Guard = guard or _unguarded
        self.retention = retention
        self.backend = backend
        self.clock = clock
        self._cache: dict[str, tuple[float, Status]] = {}
        self._reads: SingleFlight[Status] = SingleFlight()  # one backend call per run

    async def _status(self, ref: str) -> Status:
        cached = self._cache.get(ref)
        if cached and self.clock() - cached[0] < self.CACHE_SECONDS:
            return cached[1]
        return await self._reads.run(ref, lambda: self._read_backend(ref))

    async def _read_backend(self, ref: str) -> Status:
        """The backend's answer, or the last known one (else ``unknown``) when it fails.

        Any failure degrades to what was known: a status page never fails because the CI
        system (or its adapter) did; the cause goes to the log.
        """
        now = self.clock()
        cached = self._cache.get(ref)
        try:
            status = await asyncio.wait_for(self.backend.status(ref), 5.0)
        except (BackendError, TimeoutError):
            status = cached[1] if cached else Status("unknown")
        except Exception as exc:  # an adapter bug: the type only, its text may hold secrets
            log.warning("status read failed (%s)", type(exc).__name__, extra={"run_ref": ref})
            status = cached[1] if cached else Status("unknown")
        if len(self._cache) >= self.MAX_CACHED:
            self._cache.clear()
        self._cache[ref] = (now, status)
        return status

    async def read(self, run_id: str) -> dict[str, Any] | None:
        """The public view of a run, or None when there is no such run."""
        run: dict[str, Any] | None = await self.guard(self.store.get("run", run_id))
        if run is None:
            return None
        state, url = str(run.get("state", "unknown")), run.get("url")
        if state not in FINAL_STATES:
            status = await self._status(str(run["ref"]))
            if status.state != "unknown":
                state, url = status.state, status.url or url
            if state in FINAL_STATES:
                run.update(state=state, url=url, finished_at=self.clock())
                expires = float(run.get("at", self.clock())) + self.retention
                await self.guard(
                    self.store.apply(Batch(records=[Record("run", run_id, run, expires=expires)]))
                )
        return {
            "run_id": run_id,
            "status": state,
            "url": url,
            "created_at": run.get("at"),
            "pipeline": self.backend.name,
        }

    async def active(self) -> dict[str, Any] | None:
        """The run new triggers join while it is queued or running (coalescing)."""
        run: dict[str, Any] | None = await self.guard(self.store.get(*ACTIVE))
        if run is None:
            return None
        view = await self.read(str(run["run_id"]))
        if view is None or view["status"] in FINAL_STATES:
            return None
        return {**run, **view}

    def active_record(self, run: dict[str, Any]) -> Record:
        return Record(*ACTIVE, run, expires=float(run["at"]) + ACTIVE_TTL)


def started_records(
    rid: str, started: Started, ledger: dict[str, Any], now: float, retention: float, event: str
) -> tuple[dict[str, Any], list[Record]]:
    """The run and what an accepted (or recovered) trigger writes: the run, its backend
    reference, and its audit record. ``ledger`` holds client_key, client and params."""
    run = {
        "at": now,
        "run_id": rid,
        "ref": started.ref,
        "url": started.url,
        "state": started.state,
        "client_key": ledger.get("client_key"),
        "params": ledger.get("params", {}),
    }
    records = [
        Record("run", rid, run, expires=now + retention),
        Record("run_ref", started.ref, {"at": now, "run_id": rid}, expires=now + retention),
        audit_record(
            now,
            retention,
            event,
            request_id=rid,
            run_id=rid,
            client_key=ledger.get("client_key"),
            client=ledger.get("client"),
            ref=started.ref,
        ),
    ]
    return run, records


async def _unguarded(call: Awaitable[Any]) -> Any:
    return await call
