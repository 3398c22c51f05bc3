"""The SQLite store's own wait for the write lock, on a fake clock (no sleeps).

Another connection holds the write lock (``BEGIN IMMEDIATE``) as a busy worker would. The
store must keep trying at short intervals, take the lock as soon as it is free, and give up
with a one-line ``StoreError`` once its busy timeout has passed, changing nothing.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from sms_sim.clock import VirtualClock
from sms_sim.dispatch.errors import StoreBusyError, StoreError
from sms_sim.dispatch.stores import SqliteStore
from tests.conftest import T0, one_message


class ReleasingClock(VirtualClock):
    """A virtual clock that commits ``holder`` at the ``release_on``-th sleep, recording every
    pause, so a test sees exactly when the lock came free and how long the store waited."""

    def __init__(self, holder: sqlite3.Connection, release_on: int | None) -> None:
        super().__init__()
        self.holder = holder
        self.release_on = release_on
        self.pauses: list[float] = []

    def sleep(self, seconds: float, stop: threading.Event) -> bool:
        self.pauses.append(seconds)
        if len(self.pauses) == self.release_on:
            self.holder.execute("COMMIT")
        return super().sleep(seconds, stop)


def _holder(path: Path) -> sqlite3.Connection:
    SqliteStore(path).close()  # create the schema
    holder = sqlite3.connect(path, isolation_level=None, timeout=0)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_a_held_lock_is_taken_at_the_next_try_after_it_frees(tmp_path: Path) -> None:
    holder = _holder(tmp_path / "db")
    clock = ReleasingClock(holder, release_on=20)
    store = SqliteStore(tmp_path / "db", lock_clock=clock)
    store.submit(one_message(), T0)
    # It tried once after each pause: the 20th pause freed the lock, the try after it won.
    assert len(clock.pauses) == 20
    # Pauses double from 0.1 ms but never exceed 1 ms, so a waiter notices a freed lock
    # within a millisecond (SQLite's own handler sleeps up to 100 ms between tries).
    assert max(clock.pauses) <= 0.001
    assert clock.pauses[0] <= 0.0001
    assert sum(clock.pauses) < 20 * 0.001
    assert store.messages()[0].counts
    store.close()
    holder.close()


def test_a_lock_held_past_the_busy_timeout_is_one_clear_error_and_no_change(
        tmp_path: Path) -> None:
    holder = _holder(tmp_path / "db")
    clock = ReleasingClock(holder, release_on=None)
    store = SqliteStore(tmp_path / "db", lock_clock=clock, busy_timeout_s=2.0)
    began = clock.monotonic()
    with pytest.raises(StoreError, match="database is locked") as caught:
        store.submit(one_message(), T0)
    assert "\n" not in str(caught.value)
    # Judged on the clock the store reads, as the store judges its deadline: the clock
    # starts at an epoch-sized time, where each of the ~2,000 additions rounds (to 1.2e-7
    # s), so the pauses' own sum drifts from it (by -1.8e-6 s in one run). One rounding of
    # the deadline is allowed below.
    waited = clock.monotonic() - began
    assert 2.0 - 1e-6 <= waited <= 2.0 + 0.001
    holder.execute("COMMIT")
    assert store.messages() == []
    store.close()
    holder.close()


def _rollback_journal_db(path: Path) -> sqlite3.Connection:
    """An sms_sim file switched out of WAL, and a connection to hold locks on it: in WAL a
    writer never blocks readers, but an EXCLUSIVE lock here makes every reader meet
    SQLITE_BUSY, which only the store's own wait can get past (it has no busy handler)."""
    SqliteStore(path).close()
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    return sqlite3.connect(path, isolation_level=None, timeout=0)


def test_a_read_that_meets_a_lock_waits_and_is_retried_whole(tmp_path: Path) -> None:
    path = tmp_path / "db"
    holder = _rollback_journal_db(path)
    clock = ReleasingClock(holder, release_on=5)
    store = SqliteStore(path, read_only=True, lock_clock=clock)
    holder.execute("BEGIN EXCLUSIVE")
    assert store.messages() == []
    assert len(clock.pauses) == 5
    store.close()
    holder.close()


def test_a_lock_held_past_the_timeout_while_opening_is_not_called_a_foreign_file(
        tmp_path: Path) -> None:
    path = tmp_path / "db"
    holder = _rollback_journal_db(path)
    holder.execute("BEGIN EXCLUSIVE")
    clock = ReleasingClock(holder, release_on=None)
    with pytest.raises(StoreError, match="database is locked") as caught:
        SqliteStore(path, read_only=True, lock_clock=clock, busy_timeout_s=0.5)
    assert "not an SQLite database" not in str(caught.value)
    holder.execute("COMMIT")
    holder.close()


def test_a_bounded_write_check_gives_up_on_the_file_lock_within_its_bound(
        tmp_path: Path) -> None:
    holder = _holder(tmp_path / "db")
    clock = ReleasingClock(holder, release_on=None)
    store = SqliteStore(tmp_path / "db", lock_clock=clock)
    began = clock.monotonic()
    with pytest.raises(StoreBusyError, match="database is locked"):
        store.check_writable(within_s=0.5)
    assert 0.5 - 1e-6 <= clock.monotonic() - began <= 0.5 + 0.001
    holder.execute("COMMIT")
    store.check_writable(within_s=0.5)
    store.close()
    holder.close()


def test_a_bounded_write_check_gives_up_on_a_write_of_its_own_process(tmp_path: Path) -> None:
    # A readiness probe queued behind a submit of the same server that waits for the file
    # (the store object's lock): it answered when the submit did, 44 s later.
    store = SqliteStore(tmp_path / "db")
    writing, done = threading.Event(), threading.Event()

    def long_write() -> None:
        with store._db.write():  # a write of this store object that takes its time
            writing.set()
            done.wait()

    writer = threading.Thread(target=long_write)
    writer.start()
    writing.wait()
    try:
        with pytest.raises(StoreBusyError, match="a write of this process"):
            store.check_writable(within_s=0.01)
    finally:
        done.set()
        writer.join()
    store.check_writable(within_s=0.01)
    store.close()
