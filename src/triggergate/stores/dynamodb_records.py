"""The DynamoDB store's records, outbox items and expiry sweep; blocking boto3, run in threads.

Why each write is shaped the way it is lives in :mod:`triggergate.stores.dynamodb`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from triggergate.aws.dynamodb_schema import BY_EXPIRY, PK
from triggergate.stores.base import Doc, OutboxItem, Record
from triggergate.stores.dynamodb_items import Item, Items, n, num, outbox_entry, outbox_pk, record_pk, s

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_ABSENT_OR_EXPIRED = "attribute_not_exists(pk) OR (attribute_exists(exp) AND exp <= :now)"
_EXPIRED = "xpk = :x AND xat <= :now"


class RecordItems(Items):
    """Records by kind and id, outbox items and dead letters, and the expiry sweep."""

    # -- records --------------------------------------------------------------------

    def record_item(self, record: Record) -> Item:
        item: Item = {PK: s(record_pk(record.kind, record.id)), "doc": s(json.dumps(record.doc))}
        at = record.doc.get("at")
        if isinstance(at, int | float):
            item |= {"gpk": s(f"r#{record.kind}"), "gsk": n(at)}
        if record.expires is not None:
            item |= {"exp": n(record.expires), **self._expiring(record.expires)}
        return item

    def put_new(self, db: DynamoDBClient, table: str, record: Record, now: float) -> bool:
        try:
            db.put_item(
                TableName=table,
                Item=self.record_item(record),
                ConditionExpression=_ABSENT_OR_EXPIRED,
                ExpressionAttributeValues={":now": n(now)},
            )
        except db.exceptions.ConditionalCheckFailedException:
            return False
        return True

    @staticmethod
    def _live_doc(item: Item, now: float) -> Doc | None:
        if "exp" in item and num(item["exp"]) <= now:
            return None
        doc: Doc = json.loads(item["doc"]["S"])
        return doc

    def get_record(self, db: DynamoDBClient, table: str, kind: str, id: str, now: float) -> Doc | None:
        found = db.get_item(TableName=table, Key={PK: s(record_pk(kind, id))}, ConsistentRead=True)
        item = found.get("Item")
        return self._live_doc(dict(item), now) if item else None

    def query_records(
        self,
        db: DynamoDBClient,
        table: str,
        kind: str,
        since: float,
        until: float,
        limit: int,
        now: float,
    ) -> list[Doc]:
        def keep(item: Item) -> bool:
            return num(item["gsk"]) < until and self._live_doc(item, now) is not None

        found = self.query_index(db, table, f"r#{kind}", since, until, False, limit, keep)
        return [json.loads(item["doc"]["S"]) for item in found]

    # -- outbox ---------------------------------------------------------------------

    @staticmethod
    def outbox_item(entry: OutboxItem, gpk: str, gsk: float) -> Item:
        return {
            PK: s(outbox_pk(entry.id)),
            "target": s(entry.target),
            "payload": s(json.dumps(entry.payload)),
            "attempts": n(entry.attempts),
            "due": n(entry.due),
            "error": s(entry.error),
            "gpk": s(gpk),
            "gsk": n(gsk),
        }

    def _move(
        self,
        db: DynamoDBClient,
        table: str,
        id: str,
        update: str,
        cond: str,
        values: dict[str, Any],
    ) -> Item | None:
        try:
            done = db.update_item(
                TableName=table,
                Key={PK: s(outbox_pk(id))},
                UpdateExpression=update,
                ConditionExpression=cond,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except db.exceptions.ConditionalCheckFailedException:
            return None
        return dict(done["Attributes"])

    def claim(self, db: DynamoDBClient, table: str, now: float, lease: float, limit: int) -> list[OutboxItem]:
        taken: list[OutboxItem] = []
        # The index is eventually consistent; the condition on ``due`` makes a claim exclusive.
        for item in self.query_index(db, table, "outbox", None, now, True, max(limit * 4, 20)):
            if len(taken) >= limit:
                break
            moved = self._move(
                db,
                table,
                item[PK]["S"][2:],
                "SET due = :d, gsk = :d",
                "gpk = :outbox AND due = :old",
                {":d": n(now + lease), ":outbox": s("outbox"), ":old": item["gsk"]},
            )
            if moved is not None:
                taken.append(outbox_entry(moved))
        return taken

    def claim_ids(
        self, db: DynamoDBClient, table: str, ids: list[str], now: float, lease: float
    ) -> list[OutboxItem]:
        taken: list[OutboxItem] = []
        values = {":d": n(now + lease), ":outbox": s("outbox"), ":now": n(now)}
        for id in ids:
            # Conditional on the item itself (always consistent): due and still in the outbox.
            moved = self._move(
                db, table, id, "SET due = :d, gsk = :d", "gpk = :outbox AND due <= :now", values
            )
            if moved is not None:
                taken.append(outbox_entry(moved))
        return taken

    def retry_later(self, db: DynamoDBClient, table: str, entry: OutboxItem) -> None:
        try:
            db.update_item(
                TableName=table,
                Key={PK: s(outbox_pk(entry.id))},
                UpdateExpression="SET attempts = :a, due = :d, gsk = :d, #e = :e",
                ConditionExpression="gpk = :outbox",
                ExpressionAttributeNames={"#e": "error"},
                ExpressionAttributeValues={
                    ":a": n(entry.attempts),
                    ":d": n(entry.due),
                    ":e": s(entry.error),
                    ":outbox": s("outbox"),
                },
            )
        except db.exceptions.ConditionalCheckFailedException:
            return

    def revive(self, db: DynamoDBClient, table: str, id: str | None) -> int:
        ids = (
            [id]
            if id is not None
            else [i[PK]["S"][2:] for i in self.query_index(db, table, "dead", None, None, True, 10_000)]
        )
        values = {":outbox": s("outbox"), ":dead": s("dead"), ":zero": n(0)}
        return sum(
            self._move(db, table, i, "SET gpk = :outbox, gsk = :zero, due = :zero", "gpk = :dead", values)
            is not None
            for i in ids
        )

    # -- expiry ---------------------------------------------------------------------

    def sweep(self, db: DynamoDBClient, table: str, now: float, limit: int) -> int:
        """Delete up to ``limit`` items whose expiry passed, found through ``by_expiry``."""
        removed = 0
        args: dict[str, Any] = {
            "TableName": table,
            "IndexName": BY_EXPIRY,
            "KeyConditionExpression": _EXPIRED,
            "ExpressionAttributeValues": {":x": s("x"), ":now": n(now)},
            "Limit": 100,
        }
        while removed < limit:
            page = db.query(**args)
            for item in page.get("Items", [])[: limit - removed]:
                try:
                    # A quota key may have been written since the index was read.
                    db.delete_item(
                        TableName=table,
                        Key={PK: item[PK]},
                        ConditionExpression="xat <= :now",
                        ExpressionAttributeValues={":now": n(now)},
                    )
                    removed += 1
                except db.exceptions.ConditionalCheckFailedException:
                    continue
            if "LastEvaluatedKey" not in page:
                break
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return removed
