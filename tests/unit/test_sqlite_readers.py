"""The SQLite store's reads on connections of their own (issue 12): a read never queues
behind a write of the same store object, and still sees every commit made before it began.

Threads meet at events, never at sleeps. A read that waited for the writer would wait for
the test itself to end its write: the bounded wait (``HANG_GUARD_S``) only turns that
deadlock into a failure, and asserts nothing about speed.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from sms_sim.dispatch.errors import StoreError
from sms_sim.dispatch.stores import SqliteStore
from sms_sim.dispatch.stores.sqlite.database import DEFAULT_BUSY_TIMEOUT_S, Database
from tests.conftest import T0, one_message

HANG_GUARD_S = 30.0
_PROBE = "SELECT value FROM sms_sim_meta WHERE key = 'probe'"


def _database(path: Path, *, read_only: bool = False) -> Database:
    return Database(str(path), create=not read_only, read_only=read_only,
                    busy_timeout_s=DEFAULT_BUSY_TIMEOUT_S, max_page_count=None,
                    lock_clock=None)


def _probe(conn: sqlite3.Connection) -> str | None:
    row = conn.execute(_PROBE).fetchone()
    return None if row is None else str(row[0])


def _in_thread(call: Callable[[], object]) -> tuple[threading.Event, list[object]]:
    """Run ``call`` in a thread; the event is set when it has returned (or raised)."""
    done, found = threading.Event(), []

    def run() -> None:
        try:
            found.append(call())
        except Exception as exc:  # handed to the test
            found.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    return done, found


def test_a_read_does_not_wait_for_a_write_transaction_of_the_same_object(
        tmp_path: Path) -> None:
    """It used to: one connection under one lock, so an API submit's key check queued
    behind other submits' commits (fsync included)."""
    db = _database(tmp_path / "x.db")
    assert db.reads_apart
    with db.write() as conn:  # holds the object's write lock in this thread
        conn.execute("INSERT INTO sms_sim_meta (key, value) VALUES ('probe', 'written')")
        done, found = _in_thread(lambda: db.read(_probe))
        assert done.wait(HANG_GUARD_S), "the read waited for the write transaction"
        assert found == [None]  # the write is not committed yet: not seen
    assert db.read(_probe) == "written"  # committed before the read began: seen
    db.close()


def test_a_read_sees_what_another_store_object_committed(tmp_path: Path) -> None:
    ours, theirs = SqliteStore(tmp_path / "x.db"), SqliteStore(tmp_path / "x.db")
    assert ours.messages() == []
    theirs.submit(one_message(), T0)
    assert [view.id for view in ours.messages()] == [1]
    ours.close()
    theirs.close()


def test_a_read_in_flight_at_close_ends_and_later_reads_are_refused(tmp_path: Path) -> None:
    db = _database(tmp_path / "x.db")
    reading, go_on = threading.Event(), threading.Event()

    def slow_read(conn: sqlite3.Connection) -> str | None:
        reading.set()
        go_on.wait(HANG_GUARD_S)
        return _probe(conn)

    done, found = _in_thread(lambda: db.read(slow_read))
    assert reading.wait(HANG_GUARD_S)
    db.close()
    go_on.set()
    assert done.wait(HANG_GUARD_S) and found == [None]
    with pytest.raises(StoreError, match="closed"):
        db.read(_probe)


def test_closing_leaves_no_wal_behind(tmp_path: Path) -> None:
    """The readers close before the writer, which, closing last, checkpoints the WAL into
    the file and removes it."""
    path = tmp_path / "x.db"
    store = SqliteStore(path)
    store.submit(one_message(), T0)
    assert len(store.messages()) == 1
    store.close()
    assert not Path(f"{path}-wal").exists()


def test_a_read_only_store_reads_on_its_one_connection(tmp_path: Path) -> None:
    """A read-only or private database has no writer to wait for: no reader connections
    (a read-only open may have to be ``immutable``, which a second one need not be)."""
    SqliteStore(tmp_path / "x.db").close()
    db = _database(tmp_path / "x.db", read_only=True)
    assert db.read(_probe) is None and not db.reads_apart
    db.close()
    private = Database(":memory:", create=True, read_only=False,
                       busy_timeout_s=DEFAULT_BUSY_TIMEOUT_S, max_page_count=None,
                       lock_clock=None)
    assert private.read(_probe) is None and not private.reads_apart
    private.close()
