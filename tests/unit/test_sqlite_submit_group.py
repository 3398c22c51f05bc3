"""Group commit of concurrent submits (``sqlite.submit_group``): one transaction for the
submits queued together, each outcome its own, nothing lost or written twice.

The test holds the store object's write lock while submits queue behind it, so which
submits form a group is decided by the test, not by timing: threads meet at events
(``_enqueue`` is the group's hook for this), and a bounded wait only turns a hang into a
failure.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from sms_sim.dispatch.contract import SubmitResult
from sms_sim.dispatch.errors import KeyReusedError, StoreError
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.stores import SqliteStore
from sms_sim.dispatch.stores.sqlite.database import DEFAULT_BUSY_TIMEOUT_S, Database
from sms_sim.dispatch.stores.sqlite.submit import insert_message
from sms_sim.dispatch.stores.sqlite.database import Write
from sms_sim.dispatch.stores.sqlite.submit_group import Insert, SubmitGroup
from tests.conftest import T0, phones

HANG_GUARD_S = 30.0
Outcome = SubmitResult | Exception


class WatchedGroup(SubmitGroup):
    """A ``SubmitGroup`` that counts its transactions and says when each submit queued."""

    def __init__(self, db: Database, insert: Insert = insert_message,
                 write: Write | None = None) -> None:
        super().__init__(write or self._counted, insert)
        self.db = db
        self.transactions = 0
        self.queued = 0
        self.arrived = [threading.Event() for _ in range(10)]

    def _counted(self) -> AbstractContextManager[sqlite3.Connection]:
        self.transactions += 1
        return self.db.write()

    def _queued(self) -> None:
        self.queued += 1
        self.arrived[self.queued].set()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    opened = Database(str(tmp_path / "x.db"), create=True, read_only=False,
                      busy_timeout_s=DEFAULT_BUSY_TIMEOUT_S, max_page_count=None,
                      lock_clock=None)
    yield opened
    opened.close()


def _message(content: str = "hi", key: str | None = None, start: int = 0) -> NewMessage:
    return NewMessage.validated(content=content, recipients=phones(2, start),
                                idempotency_key=key)


def _in_a_group(group: WatchedGroup, messages: list[NewMessage],
                holding: Callable[[], AbstractContextManager[object]]) -> list[Outcome]:
    """Submit ``messages`` from threads, in this order, while ``holding`` holds the write
    lock: the first leads and waits for the lock, the rest queue behind it, and all of
    them form one group when the lock is let go."""
    outcomes: list[Outcome | None] = [None] * len(messages)
    threads = []

    def run(index: int) -> None:
        try:
            outcomes[index] = group.submit(messages[index], T0)
        except Exception as exc:  # the submit's own outcome
            outcomes[index] = exc

    with holding():
        for index in range(len(messages)):
            threads.append(threading.Thread(target=run, args=(index,), daemon=True))
            threads[-1].start()
            assert group.arrived[index + 1].wait(HANG_GUARD_S)
    for thread in threads:
        thread.join(HANG_GUARD_S)
        assert not thread.is_alive(), "a submit never got its outcome"
    assert all(outcome is not None for outcome in outcomes)
    return [outcome for outcome in outcomes if outcome is not None]


def _stored(db: Database) -> list[tuple[int, str]]:
    return db.read(lambda conn: conn.execute(
        "SELECT id, content FROM messages ORDER BY id").fetchall())


def test_submits_queued_together_commit_in_one_transaction(db: Database) -> None:
    group = WatchedGroup(db)
    outcomes = _in_a_group(group, [_message(f"m{i}", start=2 * i) for i in range(4)],
                           db.write)
    assert group.transactions == 1
    assert [o.message_id for o in outcomes if isinstance(o, SubmitResult)] == [1, 2, 3, 4]
    assert _stored(db) == [(1, "m0"), (2, "m1"), (3, "m2"), (4, "m3")]
    store = SqliteStore(db.path)
    for outcome in outcomes:  # each view is the message as committed
        assert isinstance(outcome, SubmitResult) and outcome.view is not None
        assert store.messages(message_id=outcome.message_id) == [outcome.view]
    store.close()


def test_a_submit_refused_for_itself_leaves_the_rest_of_its_group(db: Database) -> None:
    """A reused key is refused alone; a repeat of a request earlier in the same group sees
    its message, not created, as after that commit."""
    group = WatchedGroup(db)
    first, reused, repeat, other = _in_a_group(group, [
        _message("A", key="k"), _message("B", key="k"), _message("A", key="k"),
        _message("C", start=10)], db.write)
    assert group.transactions == 1
    assert isinstance(first, SubmitResult) and first.created
    assert isinstance(reused, KeyReusedError)
    assert isinstance(repeat, SubmitResult) and not repeat.created
    assert repeat.message_id == first.message_id
    assert isinstance(other, SubmitResult) and other.created
    assert _stored(db) == [(1, "A"), (2, "C")]


def _failing(contents: set[str], times: int) -> Insert:
    """``insert_message``, except that a message with one of ``contents`` meets an SQLite
    error ``times`` times (a disk that was full, say)."""
    failures = {content: times for content in contents}

    def insert(conn: sqlite3.Connection, message: NewMessage, now: float) -> SubmitResult:
        found = insert_message(conn, message, now)  # written: the failure comes after
        if failures.get(message.content, 0) > 0:
            failures[message.content] -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return found

    return insert


def test_a_store_failure_in_a_group_runs_each_submit_again_alone(db: Database) -> None:
    group = WatchedGroup(db, _failing({"m1"}, times=1))
    outcomes = _in_a_group(group, [_message(f"m{i}", start=2 * i) for i in range(3)],
                           db.write)
    assert group.transactions == 1 + 3  # the group, rolled back whole; then each alone
    assert all(isinstance(o, SubmitResult) and o.created for o in outcomes)
    assert [content for _, content in _stored(db)] == ["m0", "m1", "m2"]  # once each


def test_a_submit_that_keeps_failing_alone_fails_alone(db: Database) -> None:
    group = WatchedGroup(db, _failing({"m1"}, times=2))
    first, failed, last = _in_a_group(
        group, [_message(f"m{i}", start=2 * i) for i in range(3)], db.write)
    assert isinstance(first, SubmitResult) and isinstance(last, SubmitResult)
    assert isinstance(failed, StoreError) and "disk is full" in str(failed)
    assert [content for _, content in _stored(db)] == ["m0", "m2"]


def test_a_failed_commit_is_every_members_error_and_is_not_run_again(db: Database) -> None:
    """The group's outcome is unknown to nobody: the COMMIT failed, so nothing was stored,
    and each submit says so (as it would alone); none is tried again behind its back."""
    @contextmanager
    def commit_fails() -> Iterator[sqlite3.Connection]:
        with db.write() as conn:
            yield conn
            raise StoreError("cannot commit: disk I/O error")  # rolled back by write()

    group = WatchedGroup(db, write=commit_fails)
    outcomes = _in_a_group(group, [_message(f"m{i}", start=2 * i) for i in range(3)],
                           db.write)
    assert all(isinstance(o, StoreError) and "cannot commit" in str(o) for o in outcomes)
    assert len({id(o) for o in outcomes}) == 3  # each raised its own copy
    assert _stored(db) == []
