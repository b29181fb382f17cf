"""The DynamoDB table triggergate uses: one definition for the store, the tests and the template.

``deploy/aws/template.yaml`` declares the same keys and indexes (its test
compares them with these constants); :func:`create_table` builds the table
for local engines (moto, dynalite, DynamoDB Local) when the store URL says
``create_table=true``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

TTL_ATTRIBUTE = "ttl"
"""The default name of the numeric TTL attribute (epoch seconds) every expiring item carries."""

PK = "pk"
BY_KIND = "by_kind"
"""Sparse index: records by kind sorted by ``at``, pending ledger entries, outbox, dead letters."""
BY_EXPIRY = "by_expiry"
"""Sparse index: every expiring item by its expiry, so ``sweep`` queries instead of scanning."""

ATTRIBUTES: list[dict[str, str]] = [
    {"AttributeName": PK, "AttributeType": "S"},
    {"AttributeName": "gpk", "AttributeType": "S"},
    {"AttributeName": "gsk", "AttributeType": "N"},
    {"AttributeName": "xpk", "AttributeType": "S"},
    {"AttributeName": "xat", "AttributeType": "N"},
]

INDEXES: list[dict[str, Any]] = [
    {
        "IndexName": BY_KIND,
        "KeySchema": [
            {"AttributeName": "gpk", "KeyType": "HASH"},
            {"AttributeName": "gsk", "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "ALL"},
    },
    {
        "IndexName": BY_EXPIRY,
        "KeySchema": [
            {"AttributeName": "xpk", "KeyType": "HASH"},
            {"AttributeName": "xat", "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "KEYS_ONLY"},
    },
]


def create_table(client: DynamoDBClient, name: str, ttl_attribute: str = TTL_ATTRIBUTE) -> None:
    """Create the table (on demand) if missing, wait until ACTIVE, enable TTL where supported."""
    try:
        client.describe_table(TableName=name)
        return
    except client.exceptions.ResourceNotFoundException:
        pass
    client.create_table(
        TableName=name,
        AttributeDefinitions=ATTRIBUTES,  # type: ignore[arg-type]
        KeySchema=[{"AttributeName": PK, "KeyType": "HASH"}],
        GlobalSecondaryIndexes=INDEXES,  # type: ignore[arg-type]
        BillingMode="PAY_PER_REQUEST",
    )
    # dynalite answers CREATING first; a bounded wait keeps a broken engine from hanging us.
    for _ in range(200):
        if client.describe_table(TableName=name)["Table"]["TableStatus"] == "ACTIVE":
            break
        time.sleep(0.05)
    try:
        client.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl_attribute},
        )
    except client.exceptions.ClientError as exc:
        # dynalite has no TTL API; the logic never relies on TTL deletion anyway.
        if exc.response.get("Error", {}).get("Code") != "UnknownOperationException":
            raise
