"""Opening a database: an older schema is upgraded in place, and processes creating one new
file at the same moment all succeed (``journal_mode = WAL`` answers "busy" at once, without
SQLite's busy handler, so the store must wait for it itself)."""

from __future__ import annotations

import multiprocessing
import sqlite3
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from sms_sim.dispatch.errors import StoreError
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.stores import SqliteStore, migrate_store
from sms_sim.dispatch.stores.sqlite.rows import LEASE_SQL
from sms_sim.dispatch.stores.sqlite.schema import SCHEMA_SQL, SCHEMA_VERSION, UPGRADES
from sms_sim.dispatch.tenants import DEFAULT_TENANT
from tests.conftest import T0

V1 = "sms_sim.dispatch/1"
V2 = "sms_sim.dispatch/2"
V3 = "sms_sim.dispatch/3"

# The messages table as versions 1 to 3 made it (frozen: version 4 rebuilt it).
OLD_MESSAGES = """
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
"""

# The deliveries table and its indexes exactly as version 2 made them (frozen here: the
# current SCHEMA_SQL moves on). The retry-due status was stored as 'failed'.
V2_DELIVERIES = """
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
"""


def _old_script(version: str) -> str:
    """SCHEMA_SQL with the old messages table and the version-2 deliveries table (version
    3's, with 'retrying', for ``V3``), tagged ``version``."""
    start = SCHEMA_SQL.index("CREATE TABLE IF NOT EXISTS messages")
    end = SCHEMA_SQL.index("COMMIT;")
    deliveries = V2_DELIVERIES
    if version == V3:
        deliveries = deliveries.replace("'failed'", "'retrying'").replace(
            "(message_id, status, next_attempt_at, id)",
            "(message_id, status DESC, next_attempt_at, id)")
    script = SCHEMA_SQL[:start] + OLD_MESSAGES.lstrip() + deliveries.lstrip() + SCHEMA_SQL[end:]
    script = script.replace(repr(SCHEMA_VERSION), repr(version))
    assert repr(version) in script and "uid" not in script
    assert ("'retrying'" in script) == (version == V3)
    if version == V1:
        script = script.replace("    lease_losses INTEGER NOT NULL DEFAULT 0,\n", "")
        assert "lease_losses" not in script
    return script


def _make_old(path: Path, version: str,
              deliveries: list[tuple[str, str, float]] | None = None) -> None:
    """A file as ``version`` wrote it, one message due at 1 holding ``deliveries``
    (recipient, status, next_attempt_at), by default one pending delivery."""
    rows = deliveries or [("555-000-0001", "pending", 1.0)]
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.executescript(_old_script(version))
        conn.execute("INSERT INTO messages (content, status, scheduled_at, created_at, "
                     "updated_at, version, idempotency_key) "
                     "VALUES ('old', 'dispatching', 1, 1, 1, 1, 'k')")
        conn.executemany(
            "INSERT INTO deliveries (message_id, recipient, status, attempts, next_attempt_at, "
            "last_error) VALUES (1, ?, ?, ?, ?, ?)",
            [(recipient, status, int(status == "failed"), due,
              "timeout" if status == "failed" else None) for recipient, status, due in rows])
    conn.close()


def _meta_version(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        (value,) = conn.execute("SELECT value FROM sms_sim_meta WHERE key = 'schema'").fetchone()
    conn.close()
    return str(value)


def test_a_version_1_file_is_upgraded_when_opened_for_writing(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _make_old(path, V1)
    with pytest.raises(StoreError, match="older than .*run 'migrate' on it"):
        SqliteStore(path, read_only=True)
    store = SqliteStore(path)
    (delivery,) = store.deliveries()
    assert (delivery.recipient, delivery.lease_losses) == ("555-000-0001", 0)
    (claim,) = store.claim("w", 5, 30.0, T0)
    assert (claim.content, claim.lease_losses) == ("old", 0)
    store.close()
    SqliteStore(path).close()  # a second open finds nothing to upgrade
    assert _meta_version(path) == SCHEMA_VERSION


def test_a_version_2_file_has_its_retries_renamed_and_still_claimed_first(
        tmp_path: Path) -> None:
    """Version 2 stored a due retry as 'failed' and claimed retries first ('failed' sorted
    before 'pending'); after the upgrade they are 'retrying' and still come first, though
    'retrying' sorts after 'pending'. The pending deliveries have the lower ids, so an
    order by status ascending or by id would put them first."""
    path = tmp_path / "v2.db"
    _make_old(path, V2, [("555-000-0001", "pending", 1.0), ("555-000-0002", "pending", 1.0),
                         ("555-000-0003", "failed", 5.0), ("555-000-0004", "failed", 2.0),
                         ("555-000-0005", "failed", T0 + 60), ("555-000-0006", "sent", 1.0)])
    with pytest.raises(StoreError, match="'sms_sim.dispatch/2', older than"):
        SqliteStore(path, read_only=True)
    store = SqliteStore(path)
    assert _meta_version(path) == SCHEMA_VERSION != V2
    statuses = [(d.id, d.status, d.attempts, d.last_error) for d in store.deliveries()]
    assert statuses == [(1, "pending", 0, None), (2, "pending", 0, None),
                        (3, "retrying", 1, "timeout"), (4, "retrying", 1, "timeout"),
                        (5, "retrying", 1, "timeout"), (6, "sent", 0, None)]
    order = [store.claim("w", 1, 30.0, T0)[0].recipient for _ in range(4)]
    assert order == ["555-000-0004", "555-000-0003", "555-000-0001", "555-000-0002"]
    assert store.claim("w", 1, 30.0, T0) == []  # the last retry is not due yet
    assert store.next_due_at(T0) == T0 + 30.0  # the leases' end, before the retry
    assert store.integrity_check() == "ok"
    store.close()
    with sqlite3.connect(path) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            conn.execute("UPDATE deliveries SET status = 'failed' WHERE id = 5")
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + LEASE_SQL,
                                               ("w", T0, 30.0, 1, T0, 5))]
        descending = [row[3] for row in conn.execute("PRAGMA index_xinfo(deliveries_ready)")]
    conn.close()
    assert any("COVERING INDEX deliveries_ready" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan
    assert descending[:2] == [0, 1]  # message_id ascending, status descending
    SqliteStore(path).close()  # a second open finds nothing to upgrade
    assert _meta_version(path) == SCHEMA_VERSION


def test_a_version_3_file_keeps_its_provider_keys_and_old_leases(tmp_path: Path) -> None:
    """Version 4 adds message uids, request hashes and per-lease lengths. An old message's
    uid is its id, so an attempt in flight at the upgrade keeps the key it was sent under;
    a lease from before the upgrade has no length and is judged by the claimer's."""
    path = tmp_path / "v3.db"
    _make_old(path, V3, [("555-000-0001", "pending", 1.0), ("555-000-0002", "pending", 1.0)])
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("UPDATE deliveries SET status = 'leased', lease_owner = 'old', "
                     "lease_until = ?, attempts = 1 WHERE id = 1", (T0 + 30.0,))
    conn.close()
    store = SqliteStore(path)
    assert _meta_version(path) == SCHEMA_VERSION
    (old,) = store.messages()
    assert old.uid == "1"  # dispatching: its attempts' key is kept
    (claim,) = store.claim("w", 5, 30.0, T0)  # the old lease is still live by our length
    assert claim.idempotency_key == "1:555-000-0002"
    # 100 s back, both leases ended too far ahead: the old one by the claimer's 10 s
    rescued = store.claim("w", 5, 10.0, T0 - 100.0)
    assert {c.idempotency_key for c in rescued} == {"1:555-000-0001", "1:555-000-0002"}
    assert [c.lease_losses for c in rescued] == [1, 1]
    # An old key has no request hash: repeating it counts as the same request, as it did.
    again = store.submit(NewMessage.validated(content="new", recipients=["555-000-0009"],
                                              idempotency_key="k"), T0)
    assert (again.message_id, again.created) == (1, False)
    fresh = store.submit(NewMessage.validated(content="new", recipients=["555-000-0009"]), T0)
    assert len(store.messages(message_id=fresh.message_id)[0].uid) == 32
    assert store.integrity_check() == "ok"
    store.close()


def test_a_schema_from_the_future_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE sms_sim_meta SET value = 'sms_sim.dispatch/99'")
    conn.close()
    # It said "this version needs ...", not that a newer sms_sim made the file.
    with pytest.raises(StoreError, match="has schema 'sms_sim.dispatch/99', which this "
                                         r"sms_sim \(.*\) does not know: a newer sms_sim"):
        SqliteStore(path)


def _open_and_submit(path: str, barrier: Barrier, index: int) -> None:
    barrier.wait()
    store = SqliteStore(path)
    store.submit(NewMessage.validated(content="x", recipients=[f"555-000-{index:04d}"]), T0)
    store.close()


@pytest.mark.slow
def test_processes_creating_one_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    processes_per_file = 6
    for trial in range(10):
        path = str(tmp_path / f"race-{trial}.db")
        barrier = context.Barrier(processes_per_file)
        children = [context.Process(target=_open_and_submit, args=(path, barrier, i))
                    for i in range(processes_per_file)]
        for child in children:
            child.start()
        for child in children:
            child.join(60)
        assert [child.exitcode for child in children] == [0] * processes_per_file, trial
        store = SqliteStore(path)
        assert len(store.messages()) == processes_per_file
        store.close()


def test_a_version_3_message_not_yet_dispatching_gets_a_fresh_uid(tmp_path: Path) -> None:
    """Nothing of it was sent, so it can take a key no other database shares."""
    path = tmp_path / "v3-scheduled.db"
    _make_old(path, V3)
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("UPDATE messages SET status = 'scheduled'")
    conn.close()
    store = SqliteStore(path)
    (message,) = store.messages()
    assert len(message.uid) == 32 and int(message.uid, 16) >= 0
    store.close()


def test_a_version_4_file_puts_its_messages_in_the_default_tenant(tmp_path: Path) -> None:
    """Version 5 scopes idempotency keys to tenants (a rebuilt UNIQUE) and adds the tenant
    and API key tables. Existing messages belong to the default tenant, the command line's:
    their keys still find them there, and another tenant may use the same key."""
    path = tmp_path / "v4.db"
    _make_old(path, V3)
    with sqlite3.connect(path, isolation_level=None) as conn:  # as version 4 left it
        conn.execute("BEGIN")
        for statement in UPGRADES[V3][1]:
            conn.execute(statement)
        conn.execute("UPDATE sms_sim_meta SET value = ?", (UPGRADES[V3][0],))
        conn.execute("COMMIT")
    conn.close()
    assert _meta_version(path) == "sms_sim.dispatch/4"
    store = SqliteStore(path)
    assert _meta_version(path) == SCHEMA_VERSION
    (old,) = store.messages()
    assert (old.tenant, old.uid, old.idempotency_key) == (DEFAULT_TENANT, "1", "k")
    again = store.submit(NewMessage.validated(content="new", recipients=["555-000-0009"],
                                              idempotency_key="k"), T0)
    assert (again.message_id, again.created) == (1, False)
    theirs = store.submit(NewMessage.validated(content="new", recipients=["555-000-0009"],
                                               idempotency_key="k", tenant="acme"), T0)
    assert theirs.created and store.messages(tenant="acme")[0].id == theirs.message_id
    assert store.api_keys() == [] and store.integrity_check() == "ok"
    store.close()


def test_a_version_5_file_keeps_its_deliveries_and_gains_issue_14s_statuses(
        tmp_path: Path) -> None:
    """Version 6 rebuilds deliveries for the statuses of expiry, opt-outs and receipts, and
    adds columns and tables. Every delivery keeps its status, attempts and lease; the kept
    counts still agree; older messages get their segments computed from their content."""
    from sms_sim.dispatch.contract import DeliveryStatus, DlrOutcome, DlrReport
    from sms_sim.segments import Encoding

    path = tmp_path / "v5.db"
    _make_old(path, V3, [("555-000-0001", "retrying", 1.0), ("555-000-0002", "pending", 1.0)])
    with sqlite3.connect(path, isolation_level=None) as conn:  # as version 5 left it
        conn.execute("BEGIN")
        for version in (V3, "sms_sim.dispatch/4"):
            for statement in UPGRADES[version][1]:
                conn.execute(statement)
        conn.execute("UPDATE sms_sim_meta SET value = 'sms_sim.dispatch/5'")
        conn.execute("UPDATE messages SET content = ?", ("ж" * 71,))
        conn.execute("UPDATE deliveries SET status = 'sent', sent_at = 2 WHERE id = 1")
        conn.execute("UPDATE delivery_counts SET status = 'sent' WHERE status = 'retrying'")
        conn.execute("COMMIT")
    conn.close()
    assert _meta_version(path) == "sms_sim.dispatch/5"
    store = SqliteStore(path)
    assert _meta_version(path) == SCHEMA_VERSION == "sms_sim.dispatch/6"
    assert store.integrity_check() == "ok"
    (old,) = store.messages()
    assert (old.encoding, old.segments, old.valid_until) == (Encoding.UCS2, 2, None)
    assert [(d.status, d.sent_at, d.dlr_at) for d in store.deliveries()] == [
        (DeliveryStatus.SENT, 2.0, None), (DeliveryStatus.PENDING, None, None)]
    assert store.record_dlrs([DlrReport("1:555-000-0001", "undelivered", 3.0)],
                             4.0).outcomes == (DlrOutcome.APPLIED,)
    assert store.add_opt_outs(DEFAULT_TENANT, ["555-000-0002"], 5.0).suppressed == 1
    (old,) = store.messages()
    assert old.status.value == "completed" and old.outcome is not None
    assert old.counts[DeliveryStatus.UNDELIVERED] == old.counts[DeliveryStatus.SUPPRESSED] == 1
    issued = store.api_keys()
    assert issued == [] and store.integrity_check() == "ok"
    store.close()


def test_migrate_says_what_it_did_and_never_makes_a_file(tmp_path: Path) -> None:
    # It made a new empty file at a mistyped path and said its schema was current, and
    # said "current" after upgrading a file too.
    old = tmp_path / "old.db"
    _make_old(old, V1)
    assert migrate_store(old) == f"{str(old)!r}: upgraded schema {V1} to {SCHEMA_VERSION}"
    assert migrate_store(old) == f"{str(old)!r}: schema {SCHEMA_VERSION} is current"
    with pytest.raises(StoreError, match="no database at"):
        migrate_store(tmp_path / "typo.db")
    assert not (tmp_path / "typo.db").exists()
