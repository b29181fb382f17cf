"""The SQL statements of the PostgreSQL store, one per primitive, in one place.

Every statement takes named parameters: values never enter the SQL text (the
f-strings interpolate only the constants below, hence the S608 waivers).
``%(now)s`` is None to use the database's clock (``NOW``) or an epoch second
from the injected test clock.
"""

from __future__ import annotations

NOW = "coalesce(%(now)s::float8, extract(epoch FROM clock_timestamp())::float8)"
LIVE = f"(expires IS NULL OR expires > {NOW})"

SCHEMA_VERSION = (
    "CREATE TABLE IF NOT EXISTS tg_schema_version "
    "(version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())"
)

# Locks are taken row by row in array order (a plain function scan), i.e. sorted.
LOCK_KEYS = "SELECT count(pg_advisory_xact_lock(h)) FROM unnest(%(ids)s::bigint[]) AS h"

EVENTS = (
    f"WITH t AS (SELECT {NOW} AS now) SELECT t.now, e.key, e.at FROM t LEFT JOIN tg_events e "  # noqa: S608
    "ON e.key = ANY(%(keys)s) AND e.at > t.now - %(horizon)s"
)

ADMIT = (
    "WITH ev AS (INSERT INTO tg_events (key, rid, at, expires) "
    "SELECT k, %(rid)s, %(at)s, %(at)s + h "
    "FROM unnest(%(keys)s::text[], %(h)s::float8[]) AS u(k, h) "
    "ON CONFLICT (key, rid) DO UPDATE SET at = excluded.at, expires = excluded.expires) "
    "INSERT INTO tg_ledger (rid, doc, keys, at, state, expires) "
    "VALUES (%(rid)s, %(doc)s, %(keyset)s, %(at)s, 'pending', %(at)s + %(top)s) "
    "ON CONFLICT (rid) DO UPDATE SET doc = excluded.doc, keys = excluded.keys, at = excluded.at, "
    "state = 'pending', expires = excluded.expires"
)

PENDING = "SELECT rid, doc, at, keys FROM tg_ledger WHERE state = 'pending' AND at < %(t)s ORDER BY at"
RESET = "DELETE FROM tg_events WHERE key = %(key)s"
SETTLE = "UPDATE tg_ledger SET state = 'started' WHERE rid = %(rid)s AND state = 'pending'"
RELEASE = (
    "WITH r AS (UPDATE tg_ledger SET state = 'refunded' WHERE rid = %(rid)s AND state = 'pending' "
    "RETURNING keys) DELETE FROM tg_events WHERE rid = %(rid)s "
    "AND key IN (SELECT jsonb_array_elements_text(keys) FROM r)"
)

UPSERT_RECORD = (
    "INSERT INTO tg_records (kind, id, doc, at, expires) "
    "VALUES (%(kind)s, %(id)s, %(doc)s, %(at)s, %(expires)s) ON CONFLICT (kind, id) DO UPDATE "
    "SET doc = excluded.doc, at = excluded.at, expires = excluded.expires"
)
PUT_NEW = (
    UPSERT_RECORD
    + " WHERE tg_records.expires IS NOT NULL"
    + f" AND tg_records.expires <= {NOW} RETURNING 1 AS written"
)
GET = f"SELECT doc FROM tg_records WHERE kind = %(kind)s AND id = %(id)s AND {LIVE}"  # noqa: S608
DELETE = "DELETE FROM tg_records WHERE kind = %(kind)s AND id = %(id)s"
QUERY = (
    f"SELECT doc FROM tg_records WHERE kind = %(kind)s AND at >= %(since)s AND at < %(until)s "  # noqa: S608
    f"AND {LIVE} ORDER BY at DESC LIMIT %(limit)s"
)

UPSERT_ITEM = (
    "INSERT INTO tg_outbox (id, target, payload, attempts, due, error) "
    "VALUES (%(id)s, %(target)s, %(payload)s, %(attempts)s, %(due)s, %(error)s) "
    "ON CONFLICT (id) DO UPDATE SET target = excluded.target, payload = excluded.payload, "
    "attempts = excluded.attempts, due = excluded.due, error = excluded.error"
)
# SKIP LOCKED: racing claimers take disjoint rows; a row another claimer just
# moved is re-checked against `due` and skipped.
CLAIM = (
    "UPDATE tg_outbox SET due = %(until)s WHERE id IN (SELECT id FROM tg_outbox "
    "WHERE due <= %(at)s ORDER BY due LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
    "RETURNING id, target, payload, attempts, error"
)
ACK = "DELETE FROM tg_outbox WHERE id = %(id)s"
RETRY = "UPDATE tg_outbox SET attempts = %(attempts)s, due = %(due)s, error = %(error)s WHERE id = %(id)s"
BURY = (
    "WITH gone AS (DELETE FROM tg_outbox WHERE id = %(id)s) "
    "INSERT INTO tg_dead (id, target, payload, attempts, error) "
    "VALUES (%(id)s, %(target)s, %(payload)s, %(attempts)s, %(error)s) ON CONFLICT (id) DO UPDATE "
    "SET target = excluded.target, payload = excluded.payload, attempts = excluded.attempts, "
    "error = excluded.error"
)
DEAD = "SELECT id, target, payload, attempts, error FROM tg_dead ORDER BY seq LIMIT %(limit)s"
REVIVE = (
    "WITH moved AS (DELETE FROM tg_dead WHERE %(id)s::text IS NULL OR id = %(id)s "
    "RETURNING id, target, payload, attempts, error) "
    "INSERT INTO tg_outbox (id, target, payload, attempts, due, error) "
    "SELECT id, target, payload, attempts, 0, error FROM moved ON CONFLICT (id) DO UPDATE "
    "SET payload = excluded.payload, attempts = excluded.attempts, due = 0, error = excluded.error"
)


def sweep(table: str) -> str:
    """Delete a small batch of expired rows by ctid (a TID scan): short statement, short locks."""
    return (
        f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} "  # noqa: S608 - fixed names
        f"WHERE expires <= {NOW} LIMIT %(n)s))"
    )
