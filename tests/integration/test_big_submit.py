"""A large submit loads in short transactions and is seen whole or not at all (issue 11,
item 11: a 1,000,000-recipient submit held SQLite's write lock for 15-28 s and a waiting
worker gave up). ``LOAD_CHUNK`` is made small so a few dozen recipients exercise the chunks."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from sms_sim.dispatch.errors import ConflictError, StoreError
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.stores import SqliteStore
from sms_sim.dispatch.stores.sqlite import submit as loader
from tests.conftest import T0, phones

CHUNK = 4


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "LOAD_CHUNK", CHUNK)


def _big(count: int = 10, key: str | None = None) -> NewMessage:
    return NewMessage.validated(content="big", recipients=phones(count), idempotency_key=key)


def test_a_big_submit_commits_in_chunks_and_is_invisible_until_the_last(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    store, other = SqliteStore(path), SqliteStore(path)
    seen: list[tuple[int, int, int, float | None]] = []
    write = store._write  # noqa: SLF001 - the loader's transactions, observed between

    @contextmanager
    def observed() -> Iterator[sqlite3.Connection]:
        with write() as conn:
            yield conn
        # Another connection between two of the loader's transactions sees nothing.
        seen.append((len(other.messages()), len(other.deliveries()),
                     len(other.claim("w", 100, 30.0, T0)), other.next_due_at(T0)))

    result = loader.submit_message(observed, _big(10), T0)
    assert len(seen) == 4  # first chunk with the message, two more chunks, the switch
    assert seen[:-1] == [(0, 0, 0, None)] * 3
    assert seen[-1][:2] == (1, 10)
    (view,) = other.messages()
    assert view.id == result.message_id and sum(view.counts.values()) == 10
    store.close()
    other.close()


def test_a_load_cut_short_in_this_process_leaves_nothing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "cut.db")
    calls = 0
    write = store._write  # noqa: SLF001

    def failing() -> AbstractContextManager[sqlite3.Connection]:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise StoreError("disk full")
        return write()

    with pytest.raises(StoreError, match="disk full"):
        loader.submit_message(failing, _big(10, key="k"), T0)
    assert store.messages() == [] and store.deliveries() == []
    assert store.submit(_big(10, key="k"), T0).created  # the key is free again
    store.close()


def test_a_load_abandoned_by_a_killed_process_is_cleared_by_a_later_submit(
        tmp_path: Path) -> None:
    path = tmp_path / "abandoned.db"
    store = SqliteStore(path)
    # What a loader killed after its second chunk leaves behind.
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO messages (id, content, status, scheduled_at, created_at, "
                     "updated_at, version, idempotency_key, uid) VALUES "
                     "(7, 'big', 'loading', ?, ?, ?, 1, 'k', 'x')", (T0, T0, T0))
        conn.executemany("INSERT INTO deliveries (message_id, recipient, status, "
                         "next_attempt_at) VALUES (7, ?, 'pending', ?)",
                         [(p, T0) for p in phones(2 * CHUNK)])
    conn.close()
    assert store.messages() == [] and store.claim("w", 10, 30.0, T0) == []
    assert store.next_due_at(T0) is None
    with pytest.raises(ConflictError, match="still being submitted"):
        store.submit(_big(10, key="k"), T0 + 1)
    # A load in progress holds its key; one abandoned is no message (it made a new request
    # with a long-past time pass for a repeat of it: ``DispatchService.is_repeat``).
    assert store.keyed("k", tenant="default", now=T0 + 1) == 7
    later = T0 + loader.ABANDONED_LOAD_S + 1
    assert store.keyed("k", tenant="default", now=later) is None
    again = store.submit(_big(10, key="k"), later)
    assert again.created
    assert len(store.deliveries()) == 10  # the abandoned rows are gone
    store.close()
