"""``redis://host:port/db`` and ``rediss://`` (TLS): a store shared by every replica.

Every operation that touches several keys is one call of the Lua script
``redis_store.lua`` (atomic on the server). Time comes from the server's ``TIME``
so replicas with skewed clocks still agree; ``options={"server_time": False}``
makes the store use the injected clock instead, a hook for tests only.

Each client's events are one small string (the layout is described in the
script; about 140 bytes of Redis memory per client with one event). Every quota
key, ledger entry and index carries an expiry equal to when it stops mattering,
so memory is bounded by the clients active within the longest window; a denied
reservation writes nothing, and a ledger entry goes once its reservation is
settled or refunded. Records written without ``expires`` and the outbox and dead
letters persist until removed. Peeks that arrive while another is on the wire
share the next round trip.

URL query options: ``prefix`` (key prefix, default ``tg:``), ``timeout`` (seconds
per operation, default 0.8), ``pool`` (connections, default 20), ``batch`` (peeks
sharing one round trip at most, default 64; 1 sends each alone), ``ssl_ca_certs``
and ``ssl_cert_reqs`` (rediss only). The password comes from
``TRIGGERGATE_REDIS_PASSWORD`` (or ``_FILE``), else from the URL.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.resources
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from triggergate.errors import ConfigurationError, StoreError
from triggergate.quota import Check, Decision, Limit, decide
from triggergate.registry import Context
from triggergate.stores.base import Batch, Doc, OutboxItem, Record, Store
from triggergate.stores.batching import Batcher

log = logging.getLogger(__name__)
SCRIPT = importlib.resources.files(__package__).joinpath("redis_store.lua").read_text("utf-8")
_string = json.encoder.encode_basestring_ascii  # what json.dumps uses for a str, in C
SAFE_POLICIES = ("noeviction",)
OPTIONS = ("prefix", "timeout", "pool", "batch", "ssl_ca_certs", "ssl_cert_reqs")
PEEK_BATCH = 64  # peeks per round trip at most: a longer script would hold up other clients


def _times(per_check: Sequence[Sequence[str]]) -> list[list[float]]:
    """The script's event times (17-digit texts, exact) -> floats, per check."""
    return [[float(v) for v in texts] for texts in per_check]


def _checks(checks: Sequence[Check]) -> list[dict[str, Any]]:
    return [
        {"key": c.key, "horizon": c.horizon, "limits": [[lim.count, lim.window] for lim in c.limits]}
        for c in checks
    ]


@functools.lru_cache(maxsize=64)
def _after_key(limits: tuple[Limit, ...]) -> str:
    """A check's JSON after its key: the same for every client of one policy."""
    horizon = max(lim.window for lim in limits)
    return f',"horizon":{horizon},"limits":{json.dumps([[lim.count, lim.window] for lim in limits])}}}'


def _peeks_json(batch: Sequence[Sequence[Check]]) -> str:
    """``{"batch": [_checks(checks), ...]}`` as JSON, built from cached parts (every peek pays it)."""
    return (
        '{"batch":['
        + ",".join(
            "[" + ",".join('{"key":' + _string(c.key) + _after_key(c.limits) for c in checks) + "]"
            for checks in batch
        )
        + "]}"
    )


def _item(item: OutboxItem) -> str:
    doc = asdict(item)
    del doc["due"]  # the due time lives in the sorted set's score
    return json.dumps(doc, separators=(",", ":"))


def _parse_item(text: str, due: float = 0.0) -> OutboxItem:
    return OutboxItem(**json.loads(text), due=due)


class RedisStore(Store):
    """Quota, records and outbox in one Redis primary."""

    schemes = ("redis", "rediss")
    bounded_peeks = True  # each peek's batch is bounded by its earliest caller's deadline

    def __init__(
        self,
        ctx: Context,
        name: str,
        connect: dict[str, Any],
        prefix: str,
        timeout: float,
        batch: int = PEEK_BATCH,
    ) -> None:
        super().__init__(clock=ctx.clock)
        self.name = name
        self._connect = connect
        self._prefix = prefix
        self._timeout = timeout
        self._server_time = bool(ctx.options.get("server_time", True))
        self._client: aioredis.Redis | None = None
        self._script: Any = None
        # The service's fail-closed budget, when shorter than our own timeout, bounds peeks.
        self._peek_budget = min(timeout, float(ctx.options.get("store_timeout", timeout)))
        self._peeks: Batcher[Sequence[Check], Decision] | None = None
        if batch > 1:
            self._peeks = Batcher(self._peek_many, self._error, self._peek_budget, batch)

    @classmethod
    def from_url(cls, url: str, ctx: Context) -> RedisStore:
        try:
            parts = urlsplit(url)
            port = parts.port or 6379
            db = int(parts.path.strip("/") or 0)
        except ValueError as exc:
            raise ConfigurationError(f"store: invalid Redis URL ({exc})", key="store") from exc
        if not parts.hostname:
            raise ConfigurationError("store: a Redis URL needs a host: redis://host:6379/0", key="store")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = sorted(set(query) - set(OPTIONS))
        if unknown:
            raise ConfigurationError(
                f"store: unknown Redis URL option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}",
                key="store",
            )
        try:
            timeout, pool = float(query.get("timeout", 0.8)), int(query.get("pool", 20))
            batch = int(query.get("batch", PEEK_BATCH))
        except ValueError as exc:
            raise ConfigurationError(
                "store: Redis timeout, pool and batch must be numbers", key="store"
            ) from exc
        if batch < 1:
            raise ConfigurationError(
                f"store: Redis batch={batch} is not allowed; use 1 (no sharing) or more", key="store"
            )
        password = ctx.secret("REDIS_PASSWORD") or (unquote(parts.password) if parts.password else None)
        masked = "***@" if parts.username or password else ""
        name = f"{parts.scheme}://{masked}{parts.hostname}:{port}/{db}"
        connect: dict[str, Any] = {
            "host": parts.hostname,
            "port": port,
            "db": db,
            "username": unquote(parts.username) if parts.username else None,
            "password": password,
            "max_connections": pool,
            "timeout": timeout,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            # One immediate retry replaces a pooled connection the server closed
            # (restart); a timeout is never retried: the caller must hear within `timeout`.
            "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            "decode_responses": True,
        }
        if parts.scheme == "rediss":
            connect["connection_class"] = aioredis.SSLConnection
            connect["ssl_cert_reqs"] = query.get("ssl_cert_reqs", "required")
            if "ssl_ca_certs" in query:
                connect["ssl_ca_certs"] = query["ssl_ca_certs"]
        return cls(ctx, name, connect, query.get("prefix", "tg:"), timeout, batch)

    # -- plumbing ----------------------------------------------------------------

    def _cause(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError | RedisTimeoutError):
            return f"no answer within {self._timeout:g}s"
        text = f"{type(exc).__name__}: {exc}"
        password = self._connect.get("password")
        return text.replace(password, "***") if password else text

    def _error(self, exc: BaseException) -> Exception:
        """A StoreError naming the store for a Redis failure; anything else as it was."""
        if not isinstance(exc, RedisError | OSError | TimeoutError | asyncio.CancelledError):
            return exc if isinstance(exc, Exception) else StoreError(f"store {self.name}: closed")
        error = StoreError(f"store {self.name}: {self._cause(exc)}")
        error.__cause__ = exc
        return error

    def _script_call(self, op: str, args: Mapping[str, Any] | str, now: float | None = None) -> Any:
        """The script's ``op`` with ``args`` (a mapping, or its JSON already)."""
        if self._client is None:
            raise StoreError(f"store {self.name}: used before open()")
        if now is None and not self._server_time:
            now = self.clock()
        text = args if isinstance(args, str) else json.dumps(args)
        return self._script(args=[op, self._prefix, "" if now is None else repr(now), text])

    async def _call(self, op: str, args: Mapping[str, Any], now: float | None = None) -> Any:
        return await self._run(lambda c: self._script_call(op, args, now))

    async def _run(self, call: Any) -> Any:
        if self._client is None:
            raise StoreError(f"store {self.name}: used before open()")
        try:
            async with asyncio.timeout(self._timeout):
                return await call(self._client)
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._error(exc) from exc

    # -- lifecycle -----------------------------------------------------------------

    async def open(self) -> None:
        pool = aioredis.BlockingConnectionPool(**self._connect)
        self._client = aioredis.Redis(connection_pool=pool)
        self._script = self._client.register_script(SCRIPT)
        try:
            await self.ping()
            await self._check_eviction()
        except StoreError:
            await self.close()
            raise

    async def _check_eviction(self) -> None:
        try:
            policy = (await self._run(lambda c: c.config_get("maxmemory-policy"))).get("maxmemory-policy")
        except StoreError as exc:
            if not isinstance(exc.__cause__, ResponseError):
                raise
            policy = None
        if policy is None:
            log.warning(
                "store %s: could not check maxmemory-policy (CONFIG GET is not allowed); make "
                "sure it is noeviction, or Redis may evict quota keys under memory pressure and "
                "admit clients over their limit",
                self.name,
            )
        elif policy not in SAFE_POLICIES:
            log.warning(
                "store %s: maxmemory-policy is %s, so Redis may evict quota keys when memory is "
                "full and admit clients over their limit (every triggergate key carries an expiry, "
                "so volatile-* policies can evict them too); set maxmemory-policy noeviction",
                self.name,
                policy,
            )

    async def close(self) -> None:
        if self._peeks is not None:
            self._peeks.cancel()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
            await client.connection_pool.disconnect()

    async def ping(self) -> None:
        await self._run(lambda c: c.ping())

    async def sweep(self, limit: int = 500) -> int:
        return int(await self._call("sweep", {"limit": limit}))

    # -- quota -----------------------------------------------------------------------

    async def reserve(self, rid: str, checks: Sequence[Check], ledger: Mapping[str, Any]) -> Decision:
        args = {
            "rid": rid,
            "checks": _checks(checks),
            "ledger": json.dumps(dict(ledger), separators=(",", ":")),
            "keys": json.dumps([c.key for c in checks]),
        }
        admitted, now, *events = await self._call("reserve", args)
        decision = decide(checks, _times(events), float(now))
        if decision.allowed != bool(admitted):
            raise StoreError(f"store {self.name}: the quota script and quota.decide disagree")
        return decision

    async def peek(self, checks: Sequence[Check]) -> Decision:
        # A flood of spent clients is mostly peeks: those that arrive while one round
        # trip is out share the next (stores/batching.py); batch=1 sends each alone.
        if self._peeks is not None:
            return await self._peeks(checks)
        if self._client is None:
            raise StoreError(f"store {self.name}: used before open()")
        try:
            async with asyncio.timeout(self._peek_budget):
                return (await self._peek_many([checks]))[0]
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._error(exc) from exc

    async def _peek_many(self, batch: list[Sequence[Check]]) -> list[Decision]:
        now, *found = await self._script_call("peek", _peeks_json(batch))
        at = float(now)
        return [decide(checks, _times(events), at) for checks, events in zip(batch, found, strict=True)]

    async def pending(self, older_than: float) -> list[Doc]:
        found = await self._call("pending", {"older_than": older_than})
        return [
            {
                **json.loads(doc),
                "rid": rid,
                "at": float(at),
                "keys": json.loads(keys),
                "state": "pending",
            }
            for rid, doc, at, keys in found
        ]

    async def reset(self, key: str) -> int:
        return int(await self._call("reset", {"key": key}))

    # -- records, outbox and settlement -------------------------------------------------

    @staticmethod
    def _record(record: Record) -> dict[str, Any]:
        out = {
            "kind": record.kind,
            "id": record.id,
            "doc": json.dumps(record.doc, separators=(",", ":")),
            "at": float(record.doc.get("at", 0)),
        }
        return out if record.expires is None else {**out, "e": record.expires}

    async def apply(self, batch: Batch) -> None:
        args: dict[str, Any] = {
            "records": [self._record(r) for r in batch.records],
            "outbox": [{"id": i.id, "due": i.due, "item": _item(i)} for i in batch.outbox],
        }
        args.update({k: v for k, v in (("settle", batch.settle), ("release", batch.release)) if v})
        await self._call("apply", args)

    async def put_new(self, record: Record) -> bool:
        return bool(await self._call("put_new", self._record(record)))

    async def get(self, kind: str, id: str) -> Doc | None:
        found = await self._call("get", {"kind": kind, "id": id})
        return json.loads(found) if found else None

    async def delete(self, kind: str, id: str) -> None:
        await self._call("delete", {"kind": kind, "id": id})

    async def query(self, kind: str, *, since: float, until: float, limit: int) -> list[Doc]:
        found = await self._call("query", {"kind": kind, "since": since, "until": until, "limit": limit})
        return [json.loads(doc) for doc in found]

    async def claim(self, now: float, lease: float, limit: int) -> list[OutboxItem]:
        found = await self._call("claim", {"lease": lease, "limit": limit}, now=now)
        return [_parse_item(text, now + lease) for text in found if text]

    async def ack(self, item_id: str) -> None:
        await self._call("ack", {"id": item_id})

    async def retry_later(self, item: OutboxItem) -> None:
        await self._call("retry", {"id": item.id, "due": item.due, "item": _item(item)})

    async def bury(self, item: OutboxItem) -> None:
        await self._call("bury", {"id": item.id, "item": _item(item)})

    async def dead(self, limit: int) -> list[OutboxItem]:
        return [_parse_item(text) for text in await self._call("dead", {"limit": limit}) if text]

    async def revive(self, item_id: str | None) -> int:
        return int(await self._call("revive", {"id": item_id} if item_id else {}))
