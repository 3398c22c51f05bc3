"""The SQLite schema of the dispatch store, and its version tag.

Indexes follow the queries: ``deliveries_ready`` serves the per-message claim (ordered by due
time, then id, so ``LIMIT`` stops early even in a 1,000,000-recipient message);
``deliveries_due`` and ``deliveries_lease`` make ``next_due_at`` and the lease rescue two
index probes. ``UNIQUE (message_id, recipient)`` and the unique ``idempotency_key`` are the
deduplication: stores insert and look at the result, never check first.

A file made by an older version is upgraded in place when opened for writing (``UPGRADES``);
opened read-only, it is refused with a line saying how to upgrade it.
"""

from __future__ import annotations

__all__ = ["SCHEMA_SQL", "SCHEMA_VERSION", "UPGRADES"]

SCHEMA_VERSION = "sms_sim.dispatch/2"

SCHEMA_SQL = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS sms_sim_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO sms_sim_meta (key, value) VALUES ('schema', {SCHEMA_VERSION!r});
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    content TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('scheduled', 'dispatching', 'completed', 'cancelled')),
    scheduled_at REAL NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    version INTEGER NOT NULL,
    dispatch_started_at REAL,
    completed_at REAL,
    idempotency_key TEXT UNIQUE,
    priority INTEGER NOT NULL DEFAULT 0,
    served_seq INTEGER
);
CREATE INDEX IF NOT EXISTS messages_due ON messages (status, scheduled_at);
CREATE INDEX IF NOT EXISTS messages_served ON messages (served_seq);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    message_id INTEGER NOT NULL REFERENCES messages (id),
    recipient TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'leased', 'sent', 'failed', 'dead', 'cancelled')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    sent_at REAL,
    last_error TEXT,
    lease_losses INTEGER NOT NULL DEFAULT 0,
    UNIQUE (message_id, recipient)
);
CREATE INDEX IF NOT EXISTS deliveries_ready
    ON deliveries (message_id, status, next_attempt_at, id);
CREATE INDEX IF NOT EXISTS deliveries_due
    ON deliveries (next_attempt_at) WHERE status IN ('pending', 'failed');
CREATE INDEX IF NOT EXISTS deliveries_lease
    ON deliveries (lease_until) WHERE status = 'leased';
COMMIT;
"""

# Each older version's upgrade to the next, run inside the opener's BEGIN IMMEDIATE.
UPGRADES: dict[str, tuple[str, str]] = {
    "sms_sim.dispatch/1": (
        "sms_sim.dispatch/2",
        "ALTER TABLE deliveries ADD COLUMN lease_losses INTEGER NOT NULL DEFAULT 0",
    ),
}
