"""The whole flow, and the only module that knows it.

identity -> gate -> store.reserve -> backend.start -> commit | refund ->
audit + outbox -> outcome. Adapters know their own SDK and the core's small
interfaces; everything is wired in :func:`triggergate.wiring.build_service`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from triggergate import faults
from triggergate.audit import AlertText, DenialCounter, audit_record, iso
from triggergate.backends.base import Backend, Started, StartRequest
from triggergate.clock import Clock
from triggergate.errors import BackendError, RequestError, StoreError
from triggergate.failclosed import StoreAlarm, within
from triggergate.gate import BUDGET_ALERT, BUDGET_KEY, Gate, KillSwitch
from triggergate.idempotency import IdempotencyKeys
from triggergate.identity import Client, IdentityPolicy, resolve_client
from triggergate.maintenance import Maintenance
from triggergate.models import (
    Outcome,
    TriggerRequest,
    check_idempotency_key,
    error,
    validate_params,
)
from triggergate.notifiers.base import Alert, Notifier
from triggergate.outbox import Outbox
from triggergate.quota import Check, Decision, Limit
from triggergate.ratelimit_headers import policy_header, rate_headers
from triggergate.runs import RunTracker, started_records
from triggergate.settings import ParamSpec
from triggergate.spent_cache import SpentCache
from triggergate.stores.base import Batch, Record, Store

log = logging.getLogger("triggergate")
T = TypeVar("T")


@dataclass(frozen=True)
class Policy:
    """The settings the flow reads, resolved once."""

    gate: Gate
    identity: IdentityPolicy
    params: dict[str, ParamSpec]
    audit_retention: float
    idempotency_ttl: float
    store_timeout: float
    backend_timeout: float
    reconcile_after: float
    coalesce: bool


class Service:
    """Runs one press of the button from identity to response."""

    def __init__(self, store: Store, backend: Backend, outbox: Outbox, policy: Policy, clock: Clock) -> None:
        self.store = store
        self.backend = backend
        self.outbox = outbox
        self.policy = policy
        self.clock = clock
        self.alerts = AlertText(backend.name)
        self.denials = DenialCounter()
        self.kill_switch = KillSwitch(store, clock)
        self.runs = RunTracker(store, backend, clock, policy.audit_retention, self._store)
        self._inflight: set[str] = set()
        self.store_alarm = StoreAlarm(clock)
        self.spent = SpentCache()
        self.idempotency = IdempotencyKeys(
            store, clock, policy.idempotency_ttl, policy.backend_timeout + 5, self._store
        )
        self.maintenance = Maintenance(self)
        self._alerted: dict[tuple[str, str], float] = {}  # marker -> until, see alert_once

    # -- helpers -----------------------------------------------------------------------

    async def _store(self, call: Awaitable[T]) -> T:
        """Await a store call within the fail-closed budget.

        A local store (SQLite, memory) is cancelled at once, so a plain timeout does;
        a network client may unwind slowly when cancelled, so its call is abandoned
        instead (``within``), at the price of a task per call.
        """
        if self.store.inline_reads:
            try:
                async with asyncio.timeout(self.policy.store_timeout):
                    return await call
            except TimeoutError as exc:
                raise StoreError("store did not answer in time") from exc
        return await within(call, self.policy.store_timeout)

    async def _peek(self, checks: Sequence[Check]) -> Decision:
        """A read-only decision within the fail-closed budget, at the least cost for the store.

        A local read never suspends, so no deadline could fire within it, and a store
        with bounded peeks keeps the budget itself: a timer of ours would only cost
        (py-spy, a million-client flood: 5% on SQLite; ``within``'s task, 20 µs a peek).
        """
        if self.store.inline_reads or self.store.bounded_peeks:
            return await self.store.peek(checks)
        return await within(self.store.peek(checks), self.policy.store_timeout)

    def _headers(self, decision: Decision | None) -> dict[str, str]:
        return rate_headers(self.policy.gate.limits, decision)

    def identify(self, request: TriggerRequest) -> Client:
        return resolve_client(request.peer, request.headers, self.policy.identity)

    def _unavailable(self, request_id: str, decision: Decision | None = None) -> Outcome:
        return error(
            503,
            "unavailable",
            "the service cannot take triggers right now; try again shortly",
            request_id,
            **{"Retry-After": "5", **self._headers(decision)},
        )

    # -- POST /trigger -------------------------------------------------------------------

    async def trigger(self, request: TriggerRequest) -> Outcome:
        rid = request.request_id
        try:
            client = self.identify(request)
            params = validate_params(request.payload, self.policy.params)
            idem = check_idempotency_key(request.idempotency_key)
        except RequestError as exc:
            return error(exc.status, exc.code, exc.detail, rid, **self._headers(None))
        gate = self.policy.gate
        if gate.denied(client.address):
            self.denials.add(client.key, "deny_list", self.clock())
            return error(403, "forbidden", "this client may not trigger the pipeline", rid)
        checks = gate.checks(client.key, client.address)
        try:
            fresh, paused = self.kill_switch.fresh()
            if not fresh:
                paused = await self._store(self.kill_switch.state())
            if paused:
                return error(
                    503,
                    "paused",
                    str(paused.get("reason") or "triggers are paused by the operator"),
                    rid,
                    **{"Retry-After": str(int(paused.get("retry_after", 600)))},
                )
            # Read-only first: the deny path writes nothing.
            decision = await self._peek(checks) if checks else None
            if decision is not None and not decision.allowed:
                return await self._refused(rid, client, decision)
            if idem is not None:
                replay = await self.idempotency.claim(client.key, idem, rid)
                if replay is not None:
                    return replay
            if self.policy.coalesce:
                joined = await self.runs.active()
                if joined is not None:
                    await self.idempotency.forget(client.key, idem)
                    return self._accepted(joined["run_id"], "joined", decision, joined)
            ledger = {"client_key": client.key, "client": str(client.address), "params": params}
            self._inflight.add(rid)
            try:
                decision = await self._store(self.store.reserve(rid, checks, ledger))
                faults.point("after_reserve")
                if not decision.allowed:
                    await self.idempotency.forget(client.key, idem)
                    return await self._refused(rid, client, decision)
                return await self._start(rid, client, params, decision, idem)
            finally:
                self._inflight.discard(rid)
        except StoreError as exc:
            self.store_alarm(rid, exc)
            return self._unavailable(rid)

    async def _refused(self, rid: str, client: Client, decision: Decision) -> Outcome:
        blocking = decision.blocking
        assert blocking is not None
        if blocking.key.startswith("c:"):  # the client's own limit: the common refusal
            self.denials.add(client.key, "quota", decision.now)
            return self._exhausted(rid, decision.now + blocking.retry_after, blocking.limit, decision.now)
        retry = max(1, math.ceil(decision.retry_after))
        headers = {"Retry-After": str(retry), **self._headers(decision)}
        if blocking.key == BUDGET_KEY:
            self.denials.add(client.key, "budget", decision.now)
            await self._budget_alert(decision, retry)
            return error(
                503,
                "budget_exhausted",
                f"the pipeline's trigger budget is used up; try again after {iso(decision.now + retry)}",
                rid,
                **headers,
            )
        self.denials.add(client.key, "quota", decision.now)  # a wider IPv6 cap
        return error(
            429,
            "quota_exhausted",
            f"you have used all your triggers; try again after {iso(decision.now + retry)}",
            rid,
            **headers,
        )

    async def _budget_alert(self, decision: Decision, retry: int) -> None:
        """One alert per exhausted budget window, whichever replica sees it first."""
        budget = ",".join(str(limit) for limit in self.policy.gate.budget)
        alert = self.alerts.budget_exhausted(budget, decision.now)
        await self.alert_once(BUDGET_ALERT, decision.now, decision.now + retry, alert)

    async def alert_once(
        self, marker: tuple[str, str], now: float, until: float, alert: Alert, records: Sequence[Record] = ()
    ) -> bool:
        """Send ``alert`` (and write ``records``) once until ``until``, across every replica.

        The first to write the ``marker`` record (``put_new``, expiring at ``until``)
        sends; the others, and this process until then, send nothing. True if sent.
        """
        if self._alerted.get(marker, float("-inf")) > now:
            return False  # this process already saw the marker: not even a store call
        kind, name = marker
        written = await self._store(self.store.put_new(Record(kind, name, {"at": now}, expires=until)))
        self._alerted[marker] = until
        if written:
            batch = Batch(records=list(records), outbox=self.outbox.items_for(alert))
            await self._store(self.store.apply(batch))
            self.outbox.wake()
        return written

    async def store_call(self, call: Awaitable[T]) -> T:
        """A store call within the fail-closed budget (``store_timeout``), for the web layer."""
        return await self._store(call)

    async def _start(
        self, rid: str, client: Client, params: dict[str, str], decision: Decision, idem: str | None
    ) -> Outcome:
        # The ref selects what runs (a branch, a revision); it is never a pipeline input.
        inputs = {name: value for name, value in params.items() if name != "ref"}
        start = StartRequest(request_id=rid, client=client.key, params=inputs, ref=params.get("ref"))
        try:
            started = await asyncio.wait_for(self.backend.start(start), self.policy.backend_timeout)
            faults.point("after_start")
        except (BackendError, TimeoutError) as exc:
            definite = isinstance(exc, BackendError) and exc.definite  # no run started: refund now
            found = None if definite else await self.find(rid)
            if found is None:
                await self.idempotency.forget(client.key, idem)
                return await self._failed(rid, client, exc, decision, refund=definite)
            started = found
        now = self.clock()
        ledger = {"client_key": client.key, "client": str(client.address), "params": params}
        run, records = started_records(rid, started, ledger, now, self.policy.audit_retention, "accepted")
        response = self._accepted(rid, started.state, decision, run)
        if idem is not None:
            records.append(self.idempotency.record(client.key, idem, now, response))
        if self.policy.coalesce:
            records.append(self.runs.active_record(run))
        alert = self.alerts.accepted(str(client.address), rid, started.ref, now)
        await self._store(
            self.store.apply(Batch(settle=rid, records=records, outbox=self.outbox.items_for(alert)))
        )
        self.outbox.wake()
        faults.point("after_commit")
        log.info(
            "trigger accepted",
            extra={
                "request_id": rid,
                "client_key": client.key,
                "decision": "accepted",
                "run_id": rid,
            },
        )
        faults.point("before_response")
        return response

    async def find(self, rid: str) -> Started | None:
        try:
            return await asyncio.wait_for(self.backend.find(rid), self.policy.backend_timeout)
        except (BackendError, TimeoutError):
            return None

    async def _failed(
        self, rid: str, client: Client, exc: BaseException, decision: Decision, *, refund: bool
    ) -> Outcome:
        """A definite failure refunds now; an uncertain one is left to the reconciler."""
        now = self.clock()
        reason = str(exc) or type(exc).__name__
        event = "refunded" if refund else "failed"
        records = [
            audit_record(
                now,
                self.policy.audit_retention,
                event,
                request_id=rid,
                client_key=client.key,
                client=str(client.address),
                detail=reason,
            )
        ]
        alert = self.alerts.failed(str(client.address), rid, reason, now, refunded=refund)
        await self._store(
            self.store.apply(
                Batch(
                    release=rid if refund else None,
                    records=records,
                    outbox=self.outbox.items_for(alert),
                )
            )
        )
        self.outbox.wake()
        if refund:
            self.spent.forget(f"c:{client.key}")  # the slot is free again
        log.warning(
            "pipeline start failed",
            extra={"request_id": rid, "client_key": client.key, "decision": event, "cause": reason},
        )
        detail = (
            "the pipeline could not be started; your trigger was not counted"
            if refund
            else "the pipeline did not confirm the start; if no run started, your trigger will be given back"
        )
        headers = self._headers(None)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        return error(502, "pipeline_unavailable", detail, rid, **headers)

    def _accepted(self, run_id: str, status: str, decision: Decision | None, run: dict[str, Any]) -> Outcome:
        body = {"run_id": run_id, "status": status, "status_url": f"/runs/{run_id}"}
        if run.get("url"):
            body["url"] = run["url"]
        consumed = decision is not None and status != "joined"
        headers = {
            "Location": f"/runs/{run_id}",
            **rate_headers(self.policy.gate.limits, decision, consumed=consumed),
        }
        return Outcome(202, body, headers)

    # -- the deny fast path (web/fastpath.py) ----------------------------------------------

    async def fast_deny(
        self, peer: str | None, headers: Sequence[tuple[str, str]], request_id: str
    ) -> Outcome | None:
        """The refusal for a client whose quota is spent, or None to run the full flow.

        Answers only when :meth:`trigger` would answer the same: the client resolves,
        is not deny-listed, triggers are not paused, and a read-only decision (or the
        spent-key cache) denies. Any doubt, including a store error, returns None.
        Writes nothing, except what :meth:`trigger` itself writes for a refusal.
        """
        try:
            client = resolve_client(peer, headers, self.policy.identity)
        except RequestError:
            return None
        gate = self.policy.gate
        if gate.denied(client.address):
            return None
        checks = gate.checks(client.key, client.address)
        if not checks or checks[0].key == BUDGET_KEY:  # allow-listed: never spent
            return None
        key = checks[0].key
        try:
            # Read from the store at most once a second, within the fail-closed budget.
            fresh, paused = self.kill_switch.fresh()
            if paused or (not fresh and await self._store(self.kill_switch.state())):
                return None
            now = self.clock()
            spent = self.spent.get(key, now)
            if spent is not None:
                self.denials.add(client.key, "quota", now)
                return self._exhausted(request_id, spent.until, spent.limit, now)
            decision = await self._peek(checks)
            if decision.allowed:
                return None
            blocking = decision.blocking
            assert blocking is not None
            if blocking.key == key:
                self.spent.put(key, decision.now + blocking.retry_after, blocking.limit, decision.now)
            return await self._refused(request_id, client, decision)
        except StoreError as exc:
            # The route would spend a second store_timeout to say the same: fail closed now.
            self.store_alarm(request_id, exc)
            return self._unavailable(request_id)

    @functools.cached_property
    def _policy_text(self) -> str:
        return policy_header(self.policy.gate.limits)

    def _exhausted(self, rid: str, until: float, limit: Limit, now: float) -> Outcome:
        """The 429 for a client whose own ``limit`` is spent until ``until``.

        Built from two numbers, so the spent-key cache and a fresh decision give the
        same answer without evaluating headers from a whole decision.
        """
        left = until - now
        retry = max(1, math.ceil(left))
        headers = {
            "Retry-After": str(retry),
            "RateLimit-Policy": self._policy_text,
            "RateLimit": f'"{limit}";r=0;t={math.ceil(left)}',
        }
        return error(
            429,
            "quota_exhausted",
            f"you have used all your triggers; try again after {iso(now + retry)}",
            rid,
            **headers,
        )

    async def rate_state(self, peer: str | None, headers: list[tuple[str, str]]) -> dict[str, str]:
        """RateLimit headers for any response to this caller; empty when unknown."""
        try:
            client = resolve_client(peer, headers, self.policy.identity)
            checks = self.policy.gate.checks(client.key, client.address)
            decision = await self._peek(checks) if checks else None
        except (RequestError, StoreError):
            return {}
        return rate_headers(self.policy.gate.limits, decision)

    # -- GET /quota and GET /runs/{id} ----------------------------------------------------------

    async def quota(self, request: TriggerRequest) -> Outcome:
        rid = request.request_id
        try:
            client = self.identify(request)
        except RequestError as exc:
            return error(exc.status, exc.code, exc.detail, rid)
        checks = self.policy.gate.checks(client.key, client.address)
        try:
            decision = await self._peek(checks) if checks else None
        except StoreError:
            return self._unavailable(rid)
        body: dict[str, Any] = {
            "client": client.key,
            "limits": [str(x) for x in self.policy.gate.limits],
        }
        client_verdict = (
            next((v for v in decision.verdicts if v.key.startswith("c:")), None) if decision else None
        )
        if decision is None or client_verdict is None:
            body.update(remaining=None, unlimited=True)
        else:
            body.update(
                remaining=client_verdict.remaining if decision.allowed else 0,
                allowed=decision.allowed,
                retry_after=math.ceil(decision.retry_after),
                next_slot_at=iso(decision.now + (decision.retry_after or client_verdict.reset_after))
                if client_verdict.used
                else None,
                reset_after=math.ceil(client_verdict.reset_after),
            )
        return Outcome(200, body, self._headers(decision))

    async def run_status(self, run_id: str, request_id: str) -> Outcome:
        try:
            run = await self.runs.read(run_id)
        except StoreError:
            return self._unavailable(request_id)
        if run is None:
            return error(404, "not_found", "no run with this id", request_id)
        return Outcome(200, run, self._headers(None))

    # -- health -----------------------------------------------------------------------------------

    async def ready(self) -> dict[str, bool]:
        checks = {"store": True, "backend": True}
        try:
            await self._store(self.store.ping())
        except StoreError:
            checks["store"] = False
        try:
            await asyncio.wait_for(self.backend.ping(), 2.0)
        except (BackendError, TimeoutError):
            checks["backend"] = False
        return checks

    # -- background work (triggergate.maintenance) ----------------------------------------------

    def in_flight(self, rid: str) -> bool:
        """Whether this process is still working on reservation ``rid``."""
        return rid in self._inflight

    async def reconcile(self) -> int:
        return await self.maintenance.reconcile()

    async def background(self, stop: asyncio.Event, interval: float = 5.0) -> None:
        await self.maintenance.run(stop, interval)

    def prepare(self) -> None:
        """Build every adapter's SDK client before serving (a server's start, Lambda's init),
        so no request's deadline pays for it."""
        self.store.prepare()
        self.backend.prepare()
        for notifier in self._notifiers():
            notifier.prepare()

    def _notifiers(self) -> list[Notifier]:
        dead = self.outbox.dead_letter
        return [*self.outbox.notifiers.values(), *([dead] if dead is not None else [])]

    async def close(self) -> None:
        """Release every adapter's connections."""
        for notifier in self._notifiers():
            await notifier.close()
        await self.backend.close()
        await self.store.close()
