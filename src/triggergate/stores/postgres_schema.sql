-- triggergate PostgreSQL schema, version 1. Applied by PostgresStore.migrate()
-- (on open, or `triggergate migrate`) inside one transaction; later versions
-- are new files appended to MIGRATIONS in postgres.py, never edits of this one.

-- One row per (key, accepted reservation); `expires` = at + the key's longest
-- window: after it the row can never count again and sweep() deletes it.
CREATE TABLE tg_events (
    key text NOT NULL,
    rid text NOT NULL,
    at double precision NOT NULL,
    expires double precision NOT NULL,
    PRIMARY KEY (key, rid)
);
CREATE INDEX tg_events_expires ON tg_events (expires);

CREATE TABLE tg_ledger (
    rid text PRIMARY KEY,
    doc jsonb NOT NULL,
    keys jsonb NOT NULL,
    at double precision NOT NULL,
    state text NOT NULL,
    expires double precision NOT NULL
);
CREATE INDEX tg_ledger_pending ON tg_ledger (at) WHERE state = 'pending';
CREATE INDEX tg_ledger_expires ON tg_ledger (expires);

-- Audit entries, runs, idempotency entries, flags: `at` is doc->at, for query().
CREATE TABLE tg_records (
    kind text NOT NULL,
    id text NOT NULL,
    doc jsonb NOT NULL,
    at double precision NOT NULL,
    expires double precision,
    PRIMARY KEY (kind, id)
);
CREATE INDEX tg_records_at ON tg_records (kind, at);
CREATE INDEX tg_records_expires ON tg_records (expires) WHERE expires IS NOT NULL;

CREATE TABLE tg_outbox (
    id text PRIMARY KEY,
    target text NOT NULL,
    payload jsonb NOT NULL,
    attempts integer NOT NULL,
    due double precision NOT NULL,
    error text NOT NULL
);
CREATE INDEX tg_outbox_due ON tg_outbox (due);

CREATE TABLE tg_dead (
    id text PRIMARY KEY,
    target text NOT NULL,
    payload jsonb NOT NULL,
    attempts integer NOT NULL,
    error text NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY
);
