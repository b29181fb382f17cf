"""The store contract every engine implements (memory, SQLite, Redis, PostgreSQL, DynamoDB).

A store offers a few atomic primitives; the policy (window arithmetic, the
flow) lives in :mod:`triggergate.quota` and :mod:`triggergate.service`.

Three families of data, kept apart:

* quota events: one timestamp per (key, accepted reservation), dropped once
  older than the key's longest window; plus the reservation ledger that says
  whether each reservation is pending, started or refunded;
* records: small JSON documents by ``(kind, id)`` with an optional expiry
  (audit entries, runs, idempotency entries, flags);
* the outbox: notifications waiting to be delivered, retried, or dead.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from triggergate.clock import Clock, system_clock
from triggergate.quota import Check, Decision
from triggergate.registry import Context

Doc = dict[str, Any]


@dataclass(frozen=True)
class Record:
    """A document to write: ``expires`` is an epoch second after which it may vanish."""

    kind: str
    id: str
    doc: Doc
    expires: float | None = None


@dataclass
class OutboxItem:
    """One notification for one notifier; ``due`` is when it may next be attempted."""

    id: str
    target: str
    payload: Doc
    attempts: int = 0
    due: float = 0.0
    error: str = ""


@dataclass
class Batch:
    """Writes applied together, atomically where the engine allows.

    ``settle`` marks a pending reservation started; ``release`` refunds one
    (its events are removed, so the slots are free again).
    """

    settle: str | None = None
    release: str | None = None
    records: list[Record] = field(default_factory=list)
    outbox: list[OutboxItem] = field(default_factory=list)


class Store(abc.ABC):
    """A quota and record engine, shared by every process that points at it."""

    #: URL schemes this class answers to (set by each engine).
    schemes: tuple[str, ...] = ()
    #: True when reads complete without suspending (no network): callers skip timers.
    inline_reads: bool = False
    #: True when :meth:`peek` answers or raises StoreError by itself within
    #: ``ctx.options["store_timeout"]`` (the fail-closed budget): callers arm no timer.
    bounded_peeks: bool = False

    def __init__(self, clock: Clock = system_clock) -> None:
        self.clock = clock

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: str, ctx: Context) -> Store:
        """Build from the configured URL without connecting; raise ConfigurationError."""

    # -- quota ---------------------------------------------------------------

    @abc.abstractmethod
    async def reserve(self, rid: str, checks: Sequence[Check], ledger: Mapping[str, Any]) -> Decision:
        """Admit one event iff every check passes, atomically across all processes.

        When admitted, record an event at the decision time under every
        check's key and a pending ledger entry ``rid`` holding ``ledger``
        (plus the keys and the time). When denied, write nothing at all.
        """

    @abc.abstractmethod
    async def peek(self, checks: Sequence[Check]) -> Decision:
        """Evaluate the checks now without writing anything."""

    @abc.abstractmethod
    async def pending(self, older_than: float) -> list[Doc]:
        """Ledger entries still pending that were reserved before ``older_than``.

        Each holds the ``ledger`` mapping given to :meth:`reserve` plus
        ``rid`` and ``at``. Used to reconcile after a crash.
        """

    @abc.abstractmethod
    async def reset(self, key: str) -> int:
        """Forget every event of ``key``; return how many were dropped."""

    # -- records, outbox and settlement ---------------------------------------

    @abc.abstractmethod
    async def apply(self, batch: Batch) -> None:
        """Apply a batch of writes (settle or release, records, outbox items).

        Settling or releasing a reservation that is not pending is a no-op
        for that part, so a batch can be applied again after a crash.
        """

    @abc.abstractmethod
    async def put_new(self, record: Record) -> bool:
        """Write ``record`` only if no live record has its kind and id; True if written."""

    @abc.abstractmethod
    async def get(self, kind: str, id: str) -> Doc | None:
        """The live document of that kind and id, or None."""

    @abc.abstractmethod
    async def delete(self, kind: str, id: str) -> None:
        """Remove a record if present."""

    @abc.abstractmethod
    async def query(self, kind: str, *, since: float, until: float, limit: int) -> list[Doc]:
        """Live documents of a kind whose ``at`` lies in [since, until), newest first."""

    @abc.abstractmethod
    async def claim(self, now: float, lease: float, limit: int) -> list[OutboxItem]:
        """Take up to ``limit`` due outbox items and hide them for ``lease`` seconds.

        Two processes never claim the same item within one lease.
        """

    @abc.abstractmethod
    async def ack(self, item_id: str) -> None:
        """Remove a delivered outbox item."""

    @abc.abstractmethod
    async def retry_later(self, item: OutboxItem) -> None:
        """Store the item's new ``attempts``, ``due`` and ``error``."""

    @abc.abstractmethod
    async def bury(self, item: OutboxItem) -> None:
        """Move an item to the dead letters."""

    @abc.abstractmethod
    async def dead(self, limit: int) -> list[OutboxItem]:
        """Dead-lettered items, oldest first."""

    @abc.abstractmethod
    async def revive(self, item_id: str | None) -> int:
        """Move one dead item (or all, with None) back to the outbox, due now."""

    # -- lifecycle -------------------------------------------------------------

    @abc.abstractmethod
    async def ping(self) -> None:
        """Return when the engine answers; raise StoreError otherwise."""

    @abc.abstractmethod
    async def sweep(self, limit: int = 500) -> int:
        """Delete up to ``limit`` expired events and records; return how many."""

    def prepare(self) -> None:  # noqa: B027 - adapters without an SDK client need nothing
        """Build SDK clients now (no network): called once before serving, so no request's
        deadline pays for an import or a client's construction."""

    async def open(self) -> None:  # noqa: B027 - engines without a connection need nothing
        """Connect and create the schema if needed; called once before serving."""

    async def close(self) -> None:  # noqa: B027 - engines without a connection need nothing
        """Release connections."""
