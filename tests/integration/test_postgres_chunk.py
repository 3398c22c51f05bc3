"""The PostgreSQL chunk claim (``stores/postgres/chunk.py``): fresh deliveries leased from a
cursor on their message, per-row work around it in the memory store's order, the cursor
through cancel, edit and concurrent submits, and migration 2 on rows stored before it.

The contract suite and the state machine check the same promises on every store; these
cases look at what only this store has (the cursor, the ``fresh`` flag, the schema)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest

from sms_sim.dispatch.contract import DeliveryStatus, DispatchStore, SettleKind, Settlement
from sms_sim.dispatch.requests import MessageEdit, NewMessage
from sms_sim.dispatch.stores import migrate_store, open_store
from sms_sim.dispatch.stores.memory import MemoryStore
from sms_sim.dispatch.stores.postgres import schema
from tests.conftest import T0, phones
from tests.pg_cluster import PgCluster

pytestmark = pytest.mark.slow

LEASE_S = 30.0
JOIN_TIMEOUT_S = 60.0


@pytest.fixture
def url(pg_cluster: PgCluster) -> str:
    return pg_cluster.fresh_url()


@pytest.fixture
def store(url: str) -> Iterator[DispatchStore]:
    opened = open_store(url, create=True)
    yield opened
    opened.close()


def _rows(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query).fetchall()


def _cursor(url: str, message_id: int) -> tuple[object, ...]:
    (row,) = _rows(url, f"SELECT fresh_next, fresh_left FROM messages WHERE id = {message_id}")
    return row


def _submit(store: DispatchStore, count: int, *, start: int = 0, at: float = T0,
            scheduled_at: float | None = None) -> int:
    return store.submit(NewMessage.validated(content="alert", recipients=phones(count, start),
                                             scheduled_at=scheduled_at), at).message_id


def test_a_broadcast_is_leased_by_chunk_from_its_cursor(store: DispatchStore, url: str) -> None:
    message_id = _submit(store, 10)
    assert _cursor(url, message_id) == (1, 10)
    assert [c.delivery_id for c in store.claim("a", 4, LEASE_S, T0)] == [1, 2, 3, 4]
    assert _cursor(url, message_id) == (5, 6)
    assert _rows(url, "SELECT count(*) FROM deliveries WHERE fresh") == [(6,)]
    assert [c.delivery_id for c in store.claim("a", 100, LEASE_S, T0)] == [5, 6, 7, 8, 9, 10]
    assert _cursor(url, message_id)[1] == 0
    assert store.claim("a", 100, LEASE_S, T0) == []


def _scenario(store: DispatchStore) -> list[list[tuple[int, int, str]]]:
    """Releases, retries, requeues and a rescued lease around a fresh run; every claim as
    (delivery id, attempts, recipient)."""
    seen: list[list[tuple[int, int, str]]] = []

    def claim(limit: int, now: float) -> list[tuple[int, int]]:
        got = store.claim("a", limit, LEASE_S, now)
        seen.append([(c.delivery_id, c.attempts, c.recipient) for c in got])
        return [(c.delivery_id, c.attempts) for c in got]

    _submit(store, 12)
    first = claim(4, T0)  # 1-4
    store.settle("a", [
        Settlement(first[0][0], first[0][1], SettleKind.RELEASE),
        Settlement(first[1][0], first[1][1], SettleKind.RETRY, "busy", T0 + 5),
        Settlement(first[2][0], first[2][1], SettleKind.DEAD, "no"),
    ], T0 + 1)  # 4 stays leased: rescued once its lease is over
    store.requeue_dead(None, T0 + 1.5)  # due after the fresh run
    claim(4, T0 + 2)  # the release, then fresh
    claim(3, T0 + 6)  # the retry first
    claim(20, T0 + 40)  # the rescued lease, the rest of the run, then the requeued one
    claim(20, T0 + 80)
    return seen


def test_per_row_work_goes_around_the_fresh_run_in_the_memory_store_order(
        store: DispatchStore) -> None:
    assert _scenario(store) == _scenario(MemoryStore())


def test_cancel_stops_the_rest_of_the_run(store: DispatchStore, url: str) -> None:
    message_id = _submit(store, 100)
    assert len(store.claim("a", 10, LEASE_S, T0)) == 10
    store.cancel(message_id, T0 + 1)
    counts = store.delivery_counts()
    assert counts[DeliveryStatus.LEASED] == 10 and counts[DeliveryStatus.CANCELLED] == 90
    assert store.claim("a", 100, LEASE_S, T0 + 2) == []
    assert store.claim("a", 100, LEASE_S, T0 + 2 * LEASE_S) == []  # leases end cancelled
    assert store.delivery_counts()[DeliveryStatus.CANCELLED] == 100


def test_an_edit_of_the_recipients_moves_the_cursor_to_the_new_rows(
        store: DispatchStore, url: str) -> None:
    message_id = _submit(store, 5, scheduled_at=T0 + 100)
    view = store.edit(message_id, 1, MessageEdit.validated(recipients=phones(3, 50)), T0)
    assert _cursor(url, message_id) == (6, 3)
    got = store.claim("a", 10, LEASE_S, T0 + 100)
    assert [c.recipient for c in got] == phones(3, 50) and view.version == 2


def test_submits_whose_ids_interleave_are_each_claimed_whole(store: DispatchStore,
                                                             url: str) -> None:
    """Concurrent COPYs draw ids from one sequence, so a message's ids need not be one run:
    the cursor still gives every delivery once, and no more than a claim's limit."""
    sizes = [3000, 2500, 2000, 1500]
    barrier = threading.Barrier(len(sizes))

    def submit(index: int) -> None:
        barrier.wait(timeout=JOIN_TIMEOUT_S)
        _submit(store, sizes[index], start=10_000 * index)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(sizes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
        assert not thread.is_alive()
    leased: dict[int, list[int]] = {}
    while batch := store.claim("a", 700, LEASE_S, T0):
        assert len(batch) <= 700
        for claim in batch:
            leased.setdefault(claim.message_id, []).append(claim.delivery_id)
    owned = {row[0]: row[1] for row in _rows(
        url, "SELECT message_id, array_agg(id ORDER BY id) FROM deliveries GROUP BY message_id")}
    assert {m: sorted(ids) for m, ids in leased.items()} == owned
    assert sorted(len(ids) for ids in leased.values()) == sorted(sizes)
    assert _rows(url, "SELECT count(*) FROM deliveries WHERE fresh OR status != 'leased'") \
        == [(0,)]


def test_migration_2_leaves_rows_stored_before_it_to_the_per_row_claim(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:  # a database at version 1, as it was released
        patch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
        patch.setattr(schema, "SCHEMA_VERSION", 1)
        assert "version 1" in migrate_store(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO messages (tenant, content, status, scheduled_at, created_at, "
                     "updated_at, version, priority, uid) VALUES ('default', 'old', "
                     f"'dispatching', {T0}, {T0}, {T0}, 1, 0, 'u1')")
        conn.execute(
            "INSERT INTO deliveries (message_id, recipient, status, next_attempt_at, "
            "lease_owner, lease_until) VALUES (1, '555-000-0001', 'pending', %(t)s, NULL, NULL), "
            "(1, '555-000-0002', 'pending', %(t)s, NULL, NULL), "
            "(1, '555-000-0003', 'retrying', %(t)s, NULL, NULL), "
            "(1, '555-000-0004', 'sent', %(t)s, NULL, NULL), "
            "(1, '555-000-0005', 'leased', %(t)s, 'gone', %(until)s)",
            {"t": T0, "until": T0 + 1})
    assert "from version 1 to 2" in migrate_store(url)
    opened = open_store(url)
    try:
        got = opened.claim("a", 10, LEASE_S, T0 + 5)
        assert sorted(c.delivery_id for c in got) == [1, 2, 3, 5]
        opened.settle("a", [Settlement(c.delivery_id, c.attempts, SettleKind.SENT)
                            for c in got], T0 + 6)
        assert opened.messages(message_id=1)[0].status == "completed"
    finally:
        opened.close()
