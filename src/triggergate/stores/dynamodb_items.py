"""The DynamoDB store's quota and ledger items, and what all its items share; blocking boto3.

Why each write is shaped the way it is lives in :mod:`triggergate.stores.dynamodb`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from triggergate.aws.dynamodb_schema import BY_KIND, PK
from triggergate.quota import Check
from triggergate.stores.base import Doc, OutboxItem

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

Item = dict[str, Any]
LEDGER_GRACE = 86400  # a ledger entry outlives its events by a day, for late reconciliation
_TABLE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")


def valid_table(name: str) -> bool:
    return bool(_TABLE.match(name))


def n(value: float) -> dict[str, str]:
    return {"N": repr(float(value))}


def s(value: str) -> dict[str, str]:
    return {"S": value}


def num(attr: Mapping[str, Any]) -> float:
    return float(attr["N"])


def record_pk(kind: str, id: str) -> str:
    return f"r#{kind}#{id}"


def outbox_pk(id: str) -> str:
    return f"o#{id}"


def ledger_doc(item: Item) -> Doc:
    doc: Doc = json.loads(item["data"]["S"])
    return {
        **doc,
        "rid": item[PK]["S"][2:],
        "at": num(item["at"]),
        "keys": [k["S"] for k in item["keys"]["L"]],
        "state": item["st"]["S"],
    }


def outbox_entry(item: Item) -> OutboxItem:
    return OutboxItem(
        id=item[PK]["S"][2:],
        target=item["target"]["S"],
        payload=json.loads(item["payload"]["S"]),
        attempts=int(num(item["attempts"])),
        due=num(item["due"]),
        error=item["error"]["S"],
    )


@dataclass
class QuotaState:
    """One quota key as read: its events (rid -> at), version (0: absent) and horizon."""

    events: dict[str, float] = field(default_factory=dict)
    ver: int = 0
    hz: int = 0

    @property
    def times(self) -> list[float]:
        return list(self.events.values())


class Items:
    """What every item family shares: the TTL attribute name and paginated index queries."""

    def __init__(self, ttl_attribute: str) -> None:
        self.ttl = ttl_attribute

    def _expiring(self, expires: float) -> Item:
        # The TTL attribute is whole seconds (DynamoDB ignores fractions); xat is exact for sweep.
        return {self.ttl: {"N": str(math.ceil(expires))}, "xpk": s("x"), "xat": n(expires)}

    def query_index(
        self,
        db: DynamoDBClient,
        table: str,
        gpk: str,
        since: float | None,
        until: float | None,
        ascending: bool,
        limit: int,
        keep: Callable[[Item], bool] = lambda item: True,
    ) -> list[Item]:
        """Items of one ``by_kind`` partition, paginated, bounded by ``limit`` kept items."""
        values: dict[str, Any] = {":g": s(gpk)}
        cond = "gpk = :g"
        if since is not None and until is not None:
            cond += " AND gsk BETWEEN :lo AND :hi"
            values |= {":lo": n(since), ":hi": n(until)}
        elif until is not None:
            cond += " AND gsk <= :hi"
            values[":hi"] = n(until)
        args: dict[str, Any] = {
            "TableName": table,
            "IndexName": BY_KIND,
            "KeyConditionExpression": cond,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": ascending,
            "Limit": max(min(limit, 100), 1),
        }
        kept: list[Item] = []
        for _ in range(1000):  # pages; bounded so a huge partition cannot pin a thread forever
            page = db.query(**args)
            kept += [dict(i) for i in page.get("Items", []) if keep(dict(i))]
            if len(kept) >= limit or "LastEvaluatedKey" not in page:
                break
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return kept[:limit]


class QuotaItems(Items):
    """Quota keys and the reservation ledger: reads and conditional writes."""

    # -- quota --------------------------------------------------------------------

    def read_quota(self, db: DynamoDBClient, table: str, key: str, consistent: bool = True) -> QuotaState:
        found = db.get_item(TableName=table, Key={PK: s(f"q#{key}")}, ConsistentRead=consistent)
        item = found.get("Item")
        if not item:
            return QuotaState()
        events = {rid: num(at) for rid, at in item["ev"]["M"].items()}
        return QuotaState(events, int(num(item["ver"])), int(num(item["hz"])))

    def _write_quota(
        self,
        db: DynamoDBClient,
        table: str,
        key: str,
        state: QuotaState,
        events: dict[str, float],
        hz: int,
    ) -> bool:
        """Replace the key's events iff its version is still the one read; False when it moved."""
        pk = s(f"q#{key}")
        guard: dict[str, Any] = (
            {"ConditionExpression": "attribute_not_exists(pk)"}
            if state.ver == 0
            else {
                "ConditionExpression": "ver = :v",
                "ExpressionAttributeValues": {":v": n(state.ver)},
            }
        )
        try:
            if events:
                item = {
                    PK: pk,
                    "ev": {"M": {rid: n(at) for rid, at in events.items()}},
                    "ver": n(state.ver + 1),
                    "hz": n(hz),
                    **self._expiring(max(events.values()) + hz),
                }
                db.put_item(TableName=table, Item=item, **guard)
            elif state.ver:
                db.delete_item(TableName=table, Key={PK: pk}, **guard)
        except db.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def add_event(
        self, db: DynamoDBClient, table: str, check: Check, state: QuotaState, rid: str, now: float
    ) -> bool:
        hz = max(state.hz, check.horizon)
        events = {r: at for r, at in state.events.items() if at > now - hz}
        events[rid] = now
        return self._write_quota(db, table, check.key, state, events, hz)

    def _rewrite(
        self,
        db: DynamoDBClient,
        table: str,
        key: str,
        change: Callable[[dict[str, float]], dict[str, float]],
    ) -> int:
        """Apply ``change`` to a key's events until it sticks; return how many were dropped."""
        for _ in range(50):
            state = self.read_quota(db, table, key)
            events = change(dict(state.events))
            if events == state.events or self._write_quota(db, table, key, state, events, state.hz):
                return len(state.events) - len(events)
        raise RuntimeError("quota key kept changing")

    def remove_event(self, db: DynamoDBClient, table: str, key: str, rid: str) -> None:
        self._rewrite(db, table, key, lambda ev: {r: at for r, at in ev.items() if r != rid})

    def drop_quota(self, db: DynamoDBClient, table: str, key: str) -> int:
        return self._rewrite(db, table, key, lambda ev: {})

    # -- ledger ---------------------------------------------------------------------

    def put_ledger(
        self,
        db: DynamoDBClient,
        table: str,
        rid: str,
        checks: Sequence[Check],
        ledger: Mapping[str, Any],
        now: float,
    ) -> None:
        horizon = max(c.horizon for c in checks)
        item = {
            PK: s(f"l#{rid}"),
            "st": s("pending"),
            "at": n(now),
            "keys": {"L": [s(c.key) for c in checks]},
            "data": s(json.dumps(dict(ledger))),
            "gpk": s("pending"),
            "gsk": n(now),
            **self._expiring(now + horizon + LEDGER_GRACE),
        }
        db.put_item(TableName=table, Item=item)

    def _leave_pending(self, db: DynamoDBClient, table: str, rid: str, state: str) -> Item | None:
        try:
            done = db.update_item(
                TableName=table,
                Key={PK: s(f"l#{rid}")},
                UpdateExpression="SET st = :new REMOVE gpk, gsk",
                ConditionExpression="st = :pending",
                ExpressionAttributeValues={":new": s(state), ":pending": s("pending")},
                ReturnValues="ALL_NEW",
            )
        except db.exceptions.ConditionalCheckFailedException:
            return None
        return dict(done["Attributes"])

    def settle(self, db: DynamoDBClient, table: str, rid: str) -> None:
        self._leave_pending(db, table, rid, "started")

    def refund(self, db: DynamoDBClient, table: str, rid: str) -> list[str]:
        """Mark a pending reservation refunded; the keys whose event must go (after a crash too)."""
        item = self._leave_pending(db, table, rid, "refunded")
        if item is None:
            found = db.get_item(TableName=table, Key={PK: s(f"l#{rid}")}, ConsistentRead=True)
            item = found.get("Item")
            if not item or item["st"]["S"] != "refunded":
                return []
        return [k["S"] for k in item["keys"]["L"]]
