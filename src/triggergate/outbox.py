"""The outbox: alerts leave the request path as stored items and are delivered here.

The service writes one :class:`OutboxItem` per notifier into the same batch
as the audit record, so an accepted trigger's alerts are durable before the
202 and nothing is sent while the client waits. A background loop claims due
items (a lease hides them from other processes), sends them, and acks,
retries with exponential backoff and full jitter, or buries them after
``max_attempts`` in the dead letters (and tells the ``dead_letter`` notifier).

Delivery is at least once: an item whose send outlives its lease, or whose
ack is lost, is sent again. Sends are cut at half the lease to keep that rare.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections.abc import Sequence

from triggergate.alert_policy import AlertPolicy
from triggergate.clock import Clock
from triggergate.errors import NotifyError, StoreError
from triggergate.notifiers.base import Alert, Notifier
from triggergate.stores.base import Batch, OutboxItem, Store

logger = logging.getLogger("triggergate.outbox")


def _log(msg: str, **fields: object) -> None:
    logger.warning(json.dumps({"msg": msg, **fields}, default=str))


def _safe_error(exc: BaseException) -> str:
    # NotifyError texts are written by our notifiers to be safe; anything else may
    # carry a URL, an address or a token, so only its type is kept.
    if isinstance(exc, NotifyError):
        return str(exc)[:200]
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__


class Outbox:
    """Delivers stored notifications to their notifiers, with retries and dead letters."""

    def __init__(
        self,
        store: Store,
        notifiers: Sequence[Notifier],
        *,
        clock: Clock,
        max_attempts: int = 5,
        base_delay: float = 2.0,
        max_delay: float = 300.0,
        lease: float = 60.0,
        dead_letter: Notifier | None = None,
        rng: random.Random | None = None,
        policy: AlertPolicy | None = None,
    ) -> None:
        self.store = store
        self.notifiers = {n.target: n for n in notifiers}
        self.clock = clock
        self.max_attempts = max(1, max_attempts)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.lease = lease
        self.dead_letter = dead_letter
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._wake = asyncio.Event()
        self.policy = policy

    def items_for(self, alert: Alert) -> list[OutboxItem]:
        """One item per notifier for ``alert``, due now; the caller stores them.

        Empty when the alert policy folds it into a later digest.
        """
        if not self.notifiers or (self.policy is not None and not self.policy.admit(alert)):
            return []
        now = self.clock()
        doc = alert.to_doc()
        return [
            OutboxItem(id=uuid.uuid4().hex, target=target, payload=dict(doc), due=now)
            for target in self.notifiers
        ]

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failure: full jitter, capped."""
        cap = min(self.max_delay, self.base_delay * 2 ** (attempts - 1))
        return self._rng.uniform(0, cap)

    async def deliver_due(self, limit: int = 50) -> int:
        """Claim up to ``limit`` due items and try each once; return how many were delivered.

        Raises StoreError only when the claim itself fails.
        """
        items = await self.store.claim(self.clock(), self.lease, limit)
        return await self.deliver(items)

    async def deliver(self, items: Sequence[OutboxItem]) -> int:
        """Try each claimed item once (ack, retry later or bury); return how many were delivered."""
        if not items:
            return 0
        results = await asyncio.gather(*(self._deliver(item) for item in items))
        return sum(results)

    async def _deliver(self, item: OutboxItem) -> bool:
        notifier = self.notifiers.get(item.target)
        try:
            if notifier is None:
                item.error = "unknown target"
                await self._bury(item)
                return False
            try:
                alert = Alert.from_doc(item.payload)
                await asyncio.wait_for(notifier.send(alert), timeout=self.lease / 2)
            except Exception as exc:  # one notifier's bug must not stop the rest
                await self._failed(item, _safe_error(exc))
                return False
            await self.store.ack(item.id)
            return True
        except StoreError as exc:
            # The item reappears when its lease ends; at worst it is sent again.
            _log("outbox_store_failed", item=item.id, target=item.target, error=_safe_error(exc))
            return False

    async def _failed(self, item: OutboxItem, error: str) -> None:
        item.attempts += 1
        item.error = error
        if item.attempts >= self.max_attempts:
            _log(
                "notify_failed",
                item=item.id,
                target=item.target,
                attempts=item.attempts,
                error=error,
                buried=True,
            )
            await self._bury(item)
            return
        delay = self.backoff(item.attempts)
        item.due = self.clock() + delay
        _log(
            "notify_failed",
            item=item.id,
            target=item.target,
            attempts=item.attempts,
            error=error,
            retry_in=round(delay, 3),
        )
        await self.store.retry_later(item)

    async def _bury(self, item: OutboxItem) -> None:
        await self.store.bury(item)
        if self.dead_letter is None:
            return
        try:
            original = Alert.from_doc(item.payload)
            alert = Alert(
                event="dead_letter",
                subject=f"[dead letter] {original.subject}",
                body=(
                    f"{original.body}\n\nNot delivered to {item.target} after "
                    f"{item.attempts} attempt(s): {item.error}"
                ),
                attributes={
                    **original.attributes,
                    "original_event": original.event,
                    "target": item.target,
                },
            )
        except (KeyError, TypeError, ValueError):
            alert = Alert(
                event="dead_letter",
                subject="[dead letter] undeliverable notification",
                body=f"Item {item.id} for {item.target}: {item.error}",
            )
        try:
            await asyncio.wait_for(self.dead_letter.send(alert), timeout=self.lease / 2)
        except Exception as exc:  # best effort: the item is already buried
            _log(
                "dead_letter_failed",
                item=item.id,
                target=self.dead_letter.target,
                error=_safe_error(exc),
            )

    async def _flush_digests(self) -> None:
        if self.policy is not None:
            items = [item for alert in self.policy.digests() for item in self.items_for(alert)]
            if items:
                await self.store.apply(Batch(outbox=items))

    def wake(self) -> None:
        """Ask the running loop to deliver now instead of after its interval."""
        self._wake.set()

    async def run(self, stop: asyncio.Event, interval: float = 1.0, limit: int = 50) -> None:
        """Deliver until ``stop`` is set; store failures are logged and retried later."""
        while not stop.is_set():
            busy = False
            try:
                await self._flush_digests()
                busy = await self.deliver_due(limit) >= limit
            except StoreError as exc:
                _log("outbox_store_failed", error=_safe_error(exc))
            except Exception as exc:  # the loop outlives any single bug
                _log("outbox_loop_failed", error=_safe_error(exc))
            if busy:
                continue  # a full batch: more are probably due
            await self._sleep(stop, interval)

    async def _sleep(self, stop: asyncio.Event, interval: float) -> None:
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        self._wake.clear()
