"""Opening a database: an older schema is upgraded in place, and processes creating one new
file at the same moment all succeed (``journal_mode = WAL`` answers "busy" at once, without
SQLite's busy handler, so the store must wait for it itself)."""

from __future__ import annotations

import multiprocessing
import sqlite3
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from sms_sim.dispatch.contract import NewMessage, StoreError
from sms_sim.dispatch.stores import SqliteStore
from sms_sim.dispatch.stores.sqlite.schema import SCHEMA_SQL, SCHEMA_VERSION

T0 = 1_000_000_000.125
V1 = "sms_sim.dispatch/1"


def _make_v1(path: Path) -> None:
    """A file as version 1 wrote it: no ``lease_losses`` column, one message."""
    script = SCHEMA_SQL.replace("    lease_losses INTEGER NOT NULL DEFAULT 0,\n", "")
    script = script.replace(repr(SCHEMA_VERSION), repr(V1))
    assert script != SCHEMA_SQL
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.executescript(script)
        conn.execute("INSERT INTO messages (content, status, scheduled_at, created_at, "
                     "updated_at, version) VALUES ('old', 'scheduled', 1, 1, 1, 1)")
        conn.execute("INSERT INTO deliveries (message_id, recipient, status, attempts, "
                     "next_attempt_at) VALUES (1, '555-000-0001', 'pending', 0, 1)")
    conn.close()


def test_a_version_1_file_is_upgraded_when_opened_for_writing(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _make_v1(path)
    with pytest.raises(StoreError, match="older than .*open it once for writing"):
        SqliteStore(path, read_only=True)
    store = SqliteStore(path)
    (delivery,) = store.deliveries()
    assert (delivery.recipient, delivery.lease_losses) == ("555-000-0001", 0)
    (claim,) = store.claim("w", 5, 30.0, T0)
    assert (claim.content, claim.lease_losses) == ("old", 0)
    store.close()
    SqliteStore(path).close()  # a second open finds nothing to upgrade
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM sms_sim_meta").fetchone() == (SCHEMA_VERSION,)
    conn.close()


def test_a_schema_from_the_future_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE sms_sim_meta SET value = 'sms_sim.dispatch/99'")
    conn.close()
    with pytest.raises(StoreError, match="has schema 'sms_sim.dispatch/99'; this version needs"):
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
