"""The SQLite schema of the dispatch store, and its version tag.

Indexes follow the queries: ``deliveries_ready`` serves the per-message claim (retries first,
then by due time and id, so ``LIMIT`` stops early even in a 1,000,000-recipient message);
``deliveries_due`` and ``deliveries_lease`` make ``next_due_at`` and the lease rescue two
index probes. ``UNIQUE (message_id, recipient)`` and ``UNIQUE (tenant, idempotency_key)`` are
the deduplication: stores insert and look at the result, never check first.

A file made by an older version is upgraded in place when opened for writing (``UPGRADES``);
opened read-only, it is refused with a line saying how to upgrade it.
"""

from __future__ import annotations

__all__ = ["SCHEMA_SQL", "SCHEMA_VERSION", "UPGRADES"]

SCHEMA_VERSION = "sms_sim.dispatch/6"

# The deliveries table of version 3, which the upgrade to version 3 builds (version 4 adds a
# column to it, so new files use ``_DELIVERIES_COLUMNS``).
_DELIVERIES_V3_COLUMNS = """(
    id INTEGER PRIMARY KEY,
    message_id INTEGER NOT NULL REFERENCES messages (id),
    recipient TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'leased', 'sent', 'retrying', 'dead', 'cancelled')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    sent_at REAL,
    last_error TEXT,
    lease_losses INTEGER NOT NULL DEFAULT 0,
    UNIQUE (message_id, recipient)
)"""
# leased_at: the claimer's ``now`` when the lease was granted. A live lease is taken back
# only once it ran out by its own terms, or when it was granted so far after a claimer's
# ``now`` that the clock must have jumped back (``stores.common.clock_jumped_back_after_s``).
_DELIVERIES_V4_COLUMNS = _DELIVERIES_V3_COLUMNS.replace(
    "    lease_losses INTEGER NOT NULL DEFAULT 0,\n",
    "    lease_losses INTEGER NOT NULL DEFAULT 0,\n    leased_at REAL,\n")
# Version 6 (issue 14): the statuses an expiry, an opt-out and a delivery receipt reach, and
# dlr_at, the time the receipt applied gives.
_DELIVERIES_COLUMNS = _DELIVERIES_V4_COLUMNS.replace(
    "'dead', 'cancelled')", "'dead', 'cancelled', 'expired', 'suppressed', 'delivered',\n"
    "            'undelivered')").replace(
    "    leased_at REAL,\n", "    leased_at REAL,\n    dlr_at REAL,\n")
# 'loading': a large submit being inserted in chunks, invisible to readers and claims until
# one short final transaction makes it 'scheduled'. uid: globally unique, the root of the
# provider's idempotency keys. request_hash: ``NewMessage.fingerprint``, so a reused
# idempotency key with a different request is told apart. served_at: when a claim last
# took from it, and kept_class: the raised class it was served in, for aging.
_MESSAGES_V4_COLUMNS = """(
    id INTEGER PRIMARY KEY,
    content TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('loading', 'scheduled', 'dispatching', 'completed', 'cancelled')),
    scheduled_at REAL NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    version INTEGER NOT NULL,
    dispatch_started_at REAL,
    completed_at REAL,
    idempotency_key TEXT UNIQUE,
    priority INTEGER NOT NULL DEFAULT 0,
    served_seq INTEGER,
    uid TEXT NOT NULL UNIQUE,
    request_hash TEXT,
    served_at REAL,
    kept_class INTEGER
)"""
# Version 5: every message belongs to a tenant, and idempotency keys are unique per tenant;
# receipt: what an HTTP edge answered when it created the message, replayed to repeats.
_MESSAGES_V5_COLUMNS = _MESSAGES_V4_COLUMNS.replace(
    "    idempotency_key TEXT UNIQUE,\n", "    idempotency_key TEXT,\n").replace(
    "    kept_class INTEGER\n)",
    "    kept_class INTEGER,\n    tenant TEXT NOT NULL DEFAULT 'default',\n"
    "    receipt TEXT,\n    UNIQUE (tenant, idempotency_key)\n)")
# Version 6: the encoding and segment count of the content (NULL in rows from before: the
# reader computes them), and the validity end (NULL: none).
_MESSAGES_V6_ADDED = (("encoding", "TEXT"), ("segments", "INTEGER"), ("valid_until", "REAL"))
_MESSAGES_COLUMNS = _MESSAGES_V5_COLUMNS.replace(
    "    receipt TEXT,\n",
    "    receipt TEXT,\n" + "".join(f"    {name} {kind},\n" for name, kind in _MESSAGES_V6_ADDED))
_MESSAGES_V4_INDEXES = (
    "CREATE INDEX IF NOT EXISTS messages_due ON messages (status, scheduled_at)",
    "CREATE INDEX IF NOT EXISTS messages_served ON messages (served_seq)",
)
_MESSAGES_V5_INDEXES = (
    *_MESSAGES_V4_INDEXES,
    "CREATE INDEX IF NOT EXISTS messages_tenant ON messages (tenant, id)",
)
# The claim's expiry sweep looks only at open messages with a validity.
_MESSAGES_V6_INDEXES = (
    "CREATE INDEX IF NOT EXISTS messages_valid ON messages (valid_until) "
    "WHERE valid_until IS NOT NULL AND status IN ('scheduled', 'dispatching')",
)
_MESSAGES_INDEXES = (*_MESSAGES_V5_INDEXES, *_MESSAGES_V6_INDEXES)
# tenants: each tenant's last serve, so claims go first to the tenants left out longest
# (the messages' own serve order cannot say that: a tenant's served messages may be done).
# api_keys: the hash of each key's secret, never the secret (``dispatch.keys``).
# delivery_counts: each message's deliveries by status, kept by every statement that adds,
# removes or moves deliveries (``rows.add_counts``): a message's progress is then a read of
# six rows, not a count of its deliveries (a GET of a 200,000-recipient message's progress
# took 26 ms by counting, and grew with the message).
_TENANT_V5_TABLES = (
    "CREATE TABLE IF NOT EXISTS tenants (name TEXT PRIMARY KEY, served_seq INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
)""",
    """CREATE TABLE IF NOT EXISTS delivery_counts (
    message_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (message_id, status)
) WITHOUT ROWID""",
)
# status DESC: the claim takes 'retrying' before 'pending', and 'pending' sorts first.
_DELIVERIES_INDEXES = (
    """CREATE INDEX IF NOT EXISTS deliveries_ready
    ON deliveries (message_id, status DESC, next_attempt_at, id)""",
    """CREATE INDEX IF NOT EXISTS deliveries_due
    ON deliveries (next_attempt_at) WHERE status IN ('pending', 'retrying')""",
    """CREATE INDEX IF NOT EXISTS deliveries_lease
    ON deliveries (lease_until) WHERE status = 'leased'""",
)
# Version 6: each tenant's opt-out list; delivery receipts held for deliveries whose send is
# not recorded yet (``dlrs``), by the provider key's parts; and each API key's role.
_LIST_TABLES = (
    """CREATE TABLE IF NOT EXISTS opt_outs (
    tenant TEXT NOT NULL,
    phone TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (tenant, phone)
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS held_dlrs (
    uid TEXT NOT NULL,
    recipient TEXT NOT NULL,
    status TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (uid, recipient)
) WITHOUT ROWID""",
)
_TENANT_TABLES = (
    *(statement.replace("    revoked_at REAL\n)",
                        "    revoked_at REAL,\n    role TEXT NOT NULL DEFAULT 'tenant'\n)")
      for statement in _TENANT_V5_TABLES),
    *_LIST_TABLES,
)
_INDEXES_SQL = "".join(f"{statement};\n" for statement in _DELIVERIES_INDEXES)
_MESSAGES_INDEXES_SQL = "".join(f"{statement};\n" for statement in _MESSAGES_INDEXES)
_TENANT_TABLES_SQL = "".join(f"{statement};\n" for statement in _TENANT_TABLES)

SCHEMA_SQL = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS sms_sim_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO sms_sim_meta (key, value) VALUES ('schema', {SCHEMA_VERSION!r});
CREATE TABLE IF NOT EXISTS messages {_MESSAGES_COLUMNS};
{_MESSAGES_INDEXES_SQL}CREATE TABLE IF NOT EXISTS deliveries {_DELIVERIES_COLUMNS};
{_INDEXES_SQL}{_TENANT_TABLES_SQL}COMMIT;
"""

# Version 3 renames the delivery status 'failed' (a retry is due) to 'retrying'. SQLite
# cannot alter a CHECK constraint, and the old one refuses 'retrying', so the table is
# rebuilt by SQLite's documented procedure (make the new table, copy, drop the old, rename
# the new; nothing refers to deliveries, so no trigger, view or foreign key needs care).
# The copy is where 'failed' becomes 'retrying'. Dropping the old table drops its indexes;
# the new ones have status DESC in deliveries_ready, for the claim's order.
_TO_V3 = (
    f"CREATE TABLE deliveries_v3 {_DELIVERIES_V3_COLUMNS}",
    """INSERT INTO deliveries_v3 (id, message_id, recipient, status, attempts, next_attempt_at,
    lease_owner, lease_until, sent_at, last_error, lease_losses)
SELECT id, message_id, recipient, CASE status WHEN 'failed' THEN 'retrying' ELSE status END,
    attempts, next_attempt_at, lease_owner, lease_until, sent_at, last_error, lease_losses
FROM deliveries""",
    "DROP TABLE deliveries",
    "ALTER TABLE deliveries_v3 RENAME TO deliveries",
    *_DELIVERIES_INDEXES,
)

# Version 4 widens the messages CHECK (the 'loading' status) and adds columns, so messages is
# rebuilt the same way. A message that has started dispatching keeps its id as its uid, so
# its provider key stays the "id:recipient" its earlier attempts used (a delivery leased at
# the upgrade may already have reached the provider; a new key would send it twice); so
# those keep the old key's risk of meeting another database's. A still-scheduled message
# (nothing sent yet) and every new one get 32 random hex digits, which never equal an id.
# Existing messages have no request hash: a reused key then counts as the same request, as
# it did. Deliveries gain leased_at; a lease held at the upgrade has none, and its grant
# time is taken as its end less the claimer's length.
_TO_V4 = (
    f"CREATE TABLE messages_v4 {_MESSAGES_V4_COLUMNS}",
    """INSERT INTO messages_v4 (id, content, status, scheduled_at, created_at, updated_at,
    version, dispatch_started_at, completed_at, idempotency_key, priority, served_seq, uid)
SELECT id, content, status, scheduled_at, created_at, updated_at, version,
    dispatch_started_at, completed_at, idempotency_key, priority, served_seq,
    CASE status WHEN 'scheduled' THEN lower(hex(randomblob(16))) ELSE CAST(id AS TEXT) END
FROM messages""",
    "DROP TABLE messages",
    "ALTER TABLE messages_v4 RENAME TO messages",
    *_MESSAGES_V4_INDEXES,
    "ALTER TABLE deliveries ADD COLUMN leased_at REAL",
)

# Version 5 scopes idempotency keys to tenants, a change of a UNIQUE constraint, so messages
# is rebuilt once more. Every existing message belongs to the default tenant, which is the
# one the command line uses; the tenant and key tables start empty, and the counts are
# counted once.
_TO_V5 = (
    f"CREATE TABLE messages_v5 {_MESSAGES_V5_COLUMNS}",
    """INSERT INTO messages_v5 (id, content, status, scheduled_at, created_at, updated_at,
    version, dispatch_started_at, completed_at, idempotency_key, priority, served_seq, uid,
    request_hash, served_at, kept_class)
SELECT id, content, status, scheduled_at, created_at, updated_at, version,
    dispatch_started_at, completed_at, idempotency_key, priority, served_seq, uid,
    request_hash, served_at, kept_class
FROM messages""",
    "DROP TABLE messages",
    "ALTER TABLE messages_v5 RENAME TO messages",
    *_MESSAGES_V5_INDEXES,
    *_TENANT_V5_TABLES,
    "INSERT INTO delivery_counts (message_id, status, n) "
    "SELECT message_id, status, COUNT(*) FROM deliveries GROUP BY message_id, status",
)

# Version 6 widens the deliveries CHECK (SQLite cannot alter one: rebuilt as for version 3,
# every row copied as it is, dlr_at NULL) and adds columns and tables. Nothing existing
# changes status, so the kept counts stay right without a recount.
_TO_V6 = (
    f"CREATE TABLE deliveries_v6 {_DELIVERIES_COLUMNS}",
    """INSERT INTO deliveries_v6 (id, message_id, recipient, status, attempts, next_attempt_at,
    lease_owner, lease_until, leased_at, sent_at, last_error, lease_losses)
SELECT id, message_id, recipient, status, attempts, next_attempt_at, lease_owner,
    lease_until, leased_at, sent_at, last_error, lease_losses
FROM deliveries""",
    "DROP TABLE deliveries",
    "ALTER TABLE deliveries_v6 RENAME TO deliveries",
    *_DELIVERIES_INDEXES,
    *(f"ALTER TABLE messages ADD COLUMN {name} {kind}" for name, kind in _MESSAGES_V6_ADDED),
    *_MESSAGES_V6_INDEXES,
    "ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'tenant'",
    *_LIST_TABLES,
)

# Each older version's upgrade to the next: statements run in order inside the opener's
# BEGIN IMMEDIATE, so a file is upgraded whole or not at all.
UPGRADES: dict[str, tuple[str, tuple[str, ...]]] = {
    "sms_sim.dispatch/1": (
        "sms_sim.dispatch/2",
        ("ALTER TABLE deliveries ADD COLUMN lease_losses INTEGER NOT NULL DEFAULT 0",),
    ),
    "sms_sim.dispatch/2": ("sms_sim.dispatch/3", _TO_V3),
    "sms_sim.dispatch/3": ("sms_sim.dispatch/4", _TO_V4),
    "sms_sim.dispatch/4": ("sms_sim.dispatch/5", _TO_V5),
    "sms_sim.dispatch/5": ("sms_sim.dispatch/6", _TO_V6),
}
