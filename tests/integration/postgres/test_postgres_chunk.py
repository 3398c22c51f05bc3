"""The PostgreSQL chunk claim (``stores/postgres/chunk.py``): fresh deliveries leased from a
cursor on their message, per-row work around it in the memory store's order, the cursor
through cancel, edit and concurrent submits; issue 14 beside it (suppression at submit and
by an opt-out, the validity sweep, receipts, copy and prune); migration 3 on rows stored
before it, migration 4 on leases held across it, and the chain 1 -> 2 -> 3 -> 4 -> 5.

The contract suite and the state machine check the same promises on every store; these
cases look at what only this store has (the cursor, the ``fresh`` flag, the schema)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg
import pytest

from sms_sim.dispatch.contract import (
    Claim,
    DeliveryStatus,
    DispatchStore,
    DlrOutcome,
    DlrReport,
    MessageStatus,
    SettleKind,
    Settlement,
    provider_key,
)
from sms_sim.dispatch.requests import MessageEdit, NewMessage
from sms_sim.dispatch.stores import migrate_store, open_store
from sms_sim.dispatch.stores.memory import MemoryStore
from sms_sim.dispatch.stores.postgres import schema
from sms_sim.dispatch.stores.postgres.chunk import RANGE_LEASED
from sms_sim.dispatch.stores.postgres.submit import copy_deliveries
from sms_sim.dispatch.stores.transfer import copy_store
from tests.conftest import T0, phones
from tests.pg_cluster import PgCluster

pytestmark = pytest.mark.slow

LEASE_S = 30.0
JOIN_TIMEOUT_S = 60.0


def _rows(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query).fetchall()


def _cursor(url: str, message_id: int) -> tuple[object, ...]:
    (row,) = _rows(url, f"SELECT fresh_next, fresh_left FROM messages WHERE id = {message_id}")
    return row


def _fresh(url: str) -> int:
    """How many deliveries are in a chunk run (fresh, not leased by range), whatever their
    message."""
    (row,) = _rows(url, "SELECT count(*) FROM deliveries AS d JOIN messages AS m "
                        f"ON m.id = d.message_id WHERE d.fresh AND NOT {RANGE_LEASED}")
    return int(str(row[0]))


def _submit(store: DispatchStore, count: int, *, start: int = 0, at: float = T0,
            scheduled_at: float | None = None, valid_for_s: float | None = None) -> int:
    return store.submit(NewMessage.validated(content="alert", recipients=phones(count, start),
                                             scheduled_at=scheduled_at,
                                             valid_for_s=valid_for_s), at).message_id


def _sent(store: DispatchStore, owner: str, claims: list[Claim], now: float) -> None:
    store.settle(owner, [Settlement(c.delivery_id, c.attempts, SettleKind.SENT)
                         for c in claims], now)


def _outcome(store: DispatchStore) -> list[tuple[object, ...]]:
    """Every message as (id, status, counts by status) and every delivery's status."""
    return [(m.id, m.status, sorted(m.counts.items())) for m in store.messages(limit=100)] + [
        (d.id, d.recipient, d.status) for d in store.deliveries(limit=1000)]


def test_a_broadcast_is_leased_by_chunk_from_its_cursor(store: DispatchStore, url: str) -> None:
    message_id = _submit(store, 10)
    assert _cursor(url, message_id) == (1, 10)
    assert [c.delivery_id for c in store.claim("a", 4, LEASE_S, T0)] == [1, 2, 3, 4]
    assert _cursor(url, message_id) == (5, 6)
    assert _fresh(url) == 6
    assert [c.delivery_id for c in store.claim("a", 100, LEASE_S, T0)] == [5, 6, 7, 8, 9, 10]
    assert _cursor(url, message_id)[1] == 0
    assert store.claim("a", 100, LEASE_S, T0) == []


def _row_versions(url: str) -> list[tuple[object, ...]]:
    """Each delivery's id and the transaction that wrote its current version."""
    return _rows(url, "SELECT id, xmin::text FROM deliveries ORDER BY id")


def _range_lease_life(store: DispatchStore) -> list[object]:
    """A chunk leased, seen leased, a cancel beside it, two settled, two rescued."""
    message_id = _submit(store, 10)
    claims = store.claim("a", 4, LEASE_S, T0)
    seen: list[object] = [[(c.delivery_id, c.attempts, c.lease_until) for c in claims]]
    seen.append(store.deliveries(message_id=message_id, limit=100))
    seen.append(store.deliveries(status=DeliveryStatus.LEASED, limit=100))
    seen.append(store.messages(message_id=message_id)[0].counts)
    seen.append(store.cancel(message_id, T0 + 1))
    _sent(store, "a", claims[:2], T0 + 2)
    _sent(store, "a", claims[2:], T0 + LEASE_S + 1)  # too late: refused
    seen.append(store.claim("b", 10, LEASE_S, T0 + LEASE_S + 2))  # rescues 3 and 4
    seen.append(store.deliveries(message_id=message_id, limit=100))
    seen.append(store.messages(message_id=message_id)[0].status)
    return seen


def test_a_chunk_is_leased_as_a_range_and_its_rows_are_written_once(
        store: DispatchStore, url: str) -> None:
    """The claim writes none of a fresh chunk's rows (schema version 5): it enters the
    range in ``leases``, and the settle is each row's one write."""
    _submit(store, 10)
    stored = _row_versions(url)
    claims = store.claim("a", 4, LEASE_S, T0)
    assert _row_versions(url) == stored
    assert _rows(url, "SELECT first_id, last_id, open FROM leases") == [(1, 4, 4)]
    _sent(store, "a", claims, T0 + 1)
    assert [row[1] != old[1] for row, old in zip(_row_versions(url), stored, strict=True)] \
        == [True] * 4 + [False] * 6


def test_a_range_lease_is_a_lease_to_every_reader_and_writer(store: DispatchStore) -> None:
    """As in the memory store: listings and counts, the cancel (which leaves the range to
    its settles), the settle's fence, the rescue."""
    assert _range_lease_life(store) == _range_lease_life(MemoryStore())


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
    assert _cursor(url, message_id) == (None, 0) and _fresh(url) == 0
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
    assert _fresh(url) == 0
    assert store.deliveries(limit=10**6) and all(
        d.status is DeliveryStatus.LEASED for d in store.deliveries(limit=10**6))


# --- issue 14 beside the cursor ------------------------------------------------------------

Probe = Callable[[str], None]


def _suppression_scenario(store: DispatchStore, probe: Probe) -> list[object]:
    """Suppressed at submit, then by an opt-out while the run is half leased; each claim
    splits between messages by their counts, so a count that kept a suppressed delivery
    would change a split (and a message left with one would never complete)."""
    seen: list[object] = []

    def claim(limit: int, now: float) -> list[Claim]:
        got = store.claim("a", limit, LEASE_S, now)
        seen.append([(c.delivery_id, c.message_id, c.recipient) for c in got])
        return got

    store.add_opt_outs("default", phones(2, 1), T0)
    small = _submit(store, 4)  # 555-000-0001 and -0002 suppressed: 2 fresh
    _submit(store, 10, start=100)
    probe("submitted")
    leased = claim(6, T0)  # small: its 2; big: 4
    store.add_opt_outs("default", phones(3, 105), T0 + 1)  # big's -0105..-0107: fresh
    probe("opted out")
    _submit(store, 5, start=200, at=T0 + 1)
    store.add_opt_outs("default", phones(2, 300), T0 + 1)
    solo = _submit(store, 2, start=300, at=T0 + 1)  # every recipient listed: done at once
    leased += claim(8, T0 + 1)  # big: its 3 left (past the suppressed), the third: 5
    probe("leased")
    _sent(store, "a", leased, T0 + 2)
    seen.append(claim(100, T0 + 3))
    seen.append(_outcome(store))
    seen.append([store.messages(message_id=m)[0].status for m in (small, solo)])
    return seen


def test_a_suppressed_fresh_delivery_leaves_the_run_and_the_message_still_completes(
        store: DispatchStore, url: str) -> None:
    cursors: list[object] = []

    def probe(label: str) -> None:
        cursors.append((label, _rows(url, "SELECT id, fresh_next, fresh_left FROM messages "
                                          "ORDER BY id"), _fresh(url)))

    assert _suppression_scenario(store, probe) == _suppression_scenario(MemoryStore(),
                                                                        lambda label: None)
    assert cursors == [
        ("submitted", [(1, 1, 2), (2, 5, 10)], 12),
        ("opted out", [(1, 5, 0), (2, 9, 3)], 3),  # -0105..-0107 were fresh: 6 - 3
        ("leased", [(1, 5, 0), (2, 15, 0), (3, 20, 0), (4, 20, 0)], 0),
    ]
    statuses = [m.status for m in store.messages(limit=10)]
    assert statuses == [MessageStatus.COMPLETED] * 4


def _expiry_scenario(store: DispatchStore, probe: Probe) -> list[object]:
    """A message past its validity with work on both paths (a due retry, a release, the
    rest of its fresh run), one never started, and one without an end claimed beside them."""
    seen: list[object] = []
    lapsing = _submit(store, 10, valid_for_s=10.0)
    never = _submit(store, 4, start=100, valid_for_s=5.0, scheduled_at=T0 + 1)
    first = store.claim("a", 3, LEASE_S, T0)
    store.settle("a", [Settlement(first[0].delivery_id, first[0].attempts, SettleKind.RETRY,
                                  "busy", T0 + 2),
                       Settlement(first[1].delivery_id, first[1].attempts,
                                  SettleKind.RELEASE)], T0 + 1)  # the third stays leased
    probe("before")
    steady = _submit(store, 3, start=200, at=T0 + 9)
    got = store.claim("a", 100, LEASE_S, T0 + 10)  # the end of ``lapsing``: exactly now
    seen.append([(c.message_id, c.recipient) for c in got])
    probe("after")
    seen.append(_outcome(store))
    _sent(store, "a", [first[2], *got], T0 + 11)
    seen.append([store.messages(message_id=m)[0].status for m in (lapsing, never, steady)])
    # Every fresh delivery leased, then all retried past the end: the end is the next due.
    short = _submit(store, 2, start=300, at=T0 + 20, valid_for_s=10.0)
    retried = store.claim("a", 10, LEASE_S, T0 + 20)
    store.settle("a", [Settlement(c.delivery_id, c.attempts, SettleKind.RETRY, "busy",
                                  T0 + 50) for c in retried], T0 + 21)
    seen.append((store.next_due_at(T0 + 21), store.claim("a", 10, LEASE_S, T0 + 30),
                 store.messages(message_id=short)[0].status))
    return seen


def test_no_claim_leases_past_the_validity_end_on_either_path(store: DispatchStore,
                                                              url: str) -> None:
    cursors: list[object] = []

    def probe(label: str) -> None:
        cursors.append((label, _rows(url, "SELECT id, fresh_left FROM messages ORDER BY id"),
                        _fresh(url)))

    seen = _expiry_scenario(store, probe)
    assert seen == _expiry_scenario(MemoryStore(), lambda label: None)
    assert seen[0] == [(3, r) for r in phones(3, 200)]  # only the message still valid
    assert cursors == [("before", [(1, 7), (2, 4)], 11), ("after", [(1, 0), (2, 0), (3, 0)], 0)]
    assert seen[2] == [MessageStatus.COMPLETED] * 3
    assert seen[3] == (T0 + 30, [], MessageStatus.COMPLETED)
    counts = store.delivery_counts()
    assert counts[DeliveryStatus.EXPIRED] == 9 + 4 + 2 and counts[DeliveryStatus.PENDING] == 0


def test_an_edit_committed_while_the_sweep_waits_for_its_message_expires_the_new_run(
        store: DispatchStore, url: str) -> None:
    """The sweep locks a lapsed message before it reads its deliveries: the rows an edit of
    the recipients stored meanwhile (a scheduled message past its end may still be edited)
    expire with it, so its count of 0 is true and it completes with nothing pending."""
    message_id = _submit(store, 5, scheduled_at=T0 + 1, valid_for_s=10.0)
    got: list[list[Claim]] = []
    with psycopg.connect(url) as editor:  # the store's edit, held open at its row lock
        editor.execute("SELECT 1 FROM messages WHERE id = %s FOR UPDATE", (message_id,))
        claimer = threading.Thread(target=lambda: got.append(
            store.claim("a", 10, LEASE_S, T0 + 20)))
        claimer.start()
        for _ in range(100_000):  # until the claim waits for a lock
            if _rows(url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                          "'Lock' AND backend_type = 'client backend'") == [(1,)]:
                break
        else:
            pytest.fail("the claim never waited for the edit")
        editor.execute("DELETE FROM deliveries WHERE message_id = %s", (message_id,))
        copy_deliveries(editor, message_id, "default", phones(3, 50), T0 + 1)
        editor.commit()
    claimer.join(JOIN_TIMEOUT_S)
    assert not claimer.is_alive() and got == [[]]
    assert _cursor(url, message_id) == (None, 0) and _fresh(url) == 0
    (view,) = store.messages(message_id=message_id)
    assert view.status is MessageStatus.COMPLETED
    assert [d.status for d in store.deliveries(message_id=message_id)] == [
        DeliveryStatus.EXPIRED] * 3


def test_receipts_and_held_receipts_pass_the_fresh_flag_by(store: DispatchStore,
                                                           url: str) -> None:
    message_id = _submit(store, 3)
    uid = store.messages(message_id=message_id)[0].uid
    early, late = (provider_key(uid, phone) for phone in phones(3)[2:0:-1])
    assert store.record_dlrs([DlrReport(early, "delivered", T0 + 1)], T0 + 1).outcomes == (
        DlrOutcome.HELD,)  # its delivery is fresh, never leased: held
    assert _cursor(url, message_id) == (1, 3) and _fresh(url) == 3
    got = store.claim("a", 10, LEASE_S, T0 + 2)
    assert [c.delivery_id for c in got] == [1, 2, 3]
    _sent(store, "a", got, T0 + 3)
    assert store.record_dlrs([DlrReport(late, "undelivered", T0 + 4)] * 2, T0 + 4).outcomes \
        == (DlrOutcome.APPLIED, DlrOutcome.REPEAT)
    assert [(d.status, d.dlr_at) for d in store.deliveries(message_id=message_id)] == [
        (DeliveryStatus.SENT, None), (DeliveryStatus.UNDELIVERED, T0 + 4),
        (DeliveryStatus.DELIVERED, T0 + 1)]
    assert store.messages(message_id=message_id)[0].status is MessageStatus.COMPLETED
    assert _rows(url, "SELECT count(*) FROM held_dlrs") == [(0,)]


def test_a_copy_carries_no_cursor_and_the_target_claims_the_rest_per_row(
        store: DispatchStore, url: str, pg_cluster: PgCluster) -> None:
    store.add_opt_outs("default", phones(1, 3), T0)
    message_id = _submit(store, 10)
    _sent(store, "a", store.claim("a", 4, LEASE_S, T0), T0 + 1)  # 1, 2, 3, 5
    target_url = pg_cluster.fresh_url()
    target = open_store(target_url, create=True)
    try:
        result = copy_store(store, target)
        assert (result.messages, result.deliveries) == (1, 10)
        assert _fresh(target_url) == 0 and _cursor(target_url, message_id) == (None, 0)
        assert _outcome(target) == _outcome(store)
        rest = target.claim("a", 100, LEASE_S, T0 + 2)
        assert [c.delivery_id for c in rest] == [6, 7, 8, 9, 10]
        assert [c.delivery_id for c in store.claim("a", 100, LEASE_S, T0 + 2)] == [
            6, 7, 8, 9, 10]  # the source goes on from its cursor
        _sent(target, "a", rest, T0 + 3)
        (copied,) = target.messages()
        assert copied.status is MessageStatus.COMPLETED
        assert (copied.counts[DeliveryStatus.SENT], copied.counts[DeliveryStatus.SUPPRESSED]) \
            == (9, 1)
    finally:
        target.close()


def test_prune_removes_finished_messages_and_leaves_a_live_run_alone(store: DispatchStore,
                                                                     url: str) -> None:
    store.add_opt_outs("default", phones(1, 4), T0)
    done = _submit(store, 5)
    live = _submit(store, 8, start=100)
    _sent(store, "a", store.claim("a", 7, LEASE_S, T0), T0 + 1)  # 4 of done's, 3 of live's
    assert store.messages(message_id=done)[0].status is MessageStatus.COMPLETED
    pruned = store.prune(T0 + 2)
    assert (pruned.messages, pruned.deliveries) == (1, 5)
    assert _cursor(url, live) == (9, 5) and _fresh(url) == 5
    rest = store.claim("a", 100, LEASE_S, T0 + 3)
    assert [c.recipient for c in rest] == phones(5, 103)
    _sent(store, "a", rest, T0 + 4)
    pruned = store.prune(T0 + 5)
    assert (pruned.messages, pruned.deliveries) == (1, 8)
    assert store.messages() == []


# --- migrations ---------------------------------------------------------------------------


def _at_version(url: str, version: int, monkeypatch: pytest.MonkeyPatch) -> str:
    """Migrate ``url`` as an sms_sim that knew migrations up to ``version`` would."""
    with monkeypatch.context() as patch:
        patch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:version])
        patch.setattr(schema, "SCHEMA_VERSION", version)
        return migrate_store(url)


_OLD_DELIVERIES = ("INSERT INTO deliveries (message_id, recipient, status, next_attempt_at, "
                   "lease_owner, lease_until) VALUES "
                   "(1, '555-000-0001', 'pending', %(t)s, NULL, NULL), "
                   "(1, '555-000-0002', 'pending', %(t)s, NULL, NULL), "
                   "(1, '555-000-0003', 'retrying', %(t)s, NULL, NULL), "
                   "(1, '555-000-0004', 'sent', %(t)s, NULL, NULL), "
                   "(1, '555-000-0005', 'leased', %(t)s, 'gone', %(until)s)")
_OLD_MESSAGE = ("INSERT INTO messages (tenant, content, status, scheduled_at, created_at, "
                "updated_at, version, priority, uid) VALUES ('default', 'old', "
                f"'dispatching', {T0}, {T0}, {T0}, 1, 0, 'u1')")


def _drain_old_rows(url: str) -> None:
    """The rows stored before migration 3 are claimed per row, and their message completes."""
    opened = open_store(url)
    try:
        got = opened.claim("a", 10, LEASE_S, T0 + 5)
        assert sorted(c.delivery_id for c in got) == [1, 2, 3, 5]
        _sent(opened, "a", got, T0 + 6)
        assert opened.messages(message_id=1)[0].status is MessageStatus.COMPLETED
        assert opened.messages(message_id=2)[0].counts[DeliveryStatus.EXPIRED] == 2
    finally:
        opened.close()


def test_migration_3_leaves_rows_stored_before_it_to_the_per_row_claim(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "version 2" in _at_version(url, 2, monkeypatch)  # as issue 14 released it
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_OLD_MESSAGE)
        conn.execute(_OLD_DELIVERIES, {"t": T0, "until": T0 + 1})
        # Issue 14's rows: a message past its validity, a suppressed delivery.
        conn.execute("INSERT INTO messages (tenant, content, status, scheduled_at, created_at, "
                     "updated_at, version, priority, uid, valid_until) VALUES ('default', "
                     f"'old', 'scheduled', {T0}, {T0}, {T0}, 1, 0, 'u2', {T0 + 1})")
        conn.execute("INSERT INTO deliveries (message_id, recipient, status, next_attempt_at) "
                     "VALUES (2, '555-000-0001', 'pending', %(t)s), (2, '555-000-0002', "
                     "'retrying', %(t)s), (1, '555-000-0006', 'suppressed', %(t)s)", {"t": T0})
    assert "from version 2 to 3" in _at_version(url, 3, monkeypatch)
    assert _fresh(url) == 0 and _rows(url, "SELECT DISTINCT fresh_left FROM messages") == [(0,)]
    assert "from version 3 to 6" in migrate_store(url)
    _drain_old_rows(url)


def test_the_chain_1_to_6_keeps_version_1_rows(url: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    assert "version 1" in _at_version(url, 1, monkeypatch)  # as it was first released
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_OLD_MESSAGE)
        conn.execute(_OLD_DELIVERIES, {"t": T0, "until": T0 + 1})
        conn.execute(_OLD_MESSAGE.replace("'u1'", "'u2'"))
        conn.execute("INSERT INTO deliveries (message_id, recipient, status, next_attempt_at) "
                     "VALUES (2, '555-000-0001', 'pending', %(t)s), (2, '555-000-0002', "
                     "'retrying', %(t)s)", {"t": T0})
    assert "from version 1 to 2" in _at_version(url, 2, monkeypatch)
    with psycopg.connect(url, autocommit=True) as conn:  # issue 14 in use at version 2
        conn.execute(f"UPDATE messages SET valid_until = {T0 + 1} WHERE id = 2")
    assert "from version 2 to 6" in migrate_store(url)
    indexes = {row[0] for row in _rows(url, "SELECT indexname FROM pg_indexes WHERE "
                                            "tablename = 'deliveries'")}
    assert {"deliveries_waiting", "deliveries_due"} <= indexes
    assert not {"deliveries_ready", "deliveries_leased_at", "deliveries_lease"} & indexes
    _drain_old_rows(url)


def test_migration_4_keeps_the_leases_held_across_it(url: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that leased before the upgrade settles after it, and its message completes;
    a lease that ran out meanwhile is rescued (``leases`` is filled from the leased
    rows)."""
    assert "version 3" in _at_version(url, 3, monkeypatch)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_OLD_MESSAGE)
        conn.execute("INSERT INTO deliveries (message_id, recipient, status, attempts, "
                     "next_attempt_at, lease_owner, lease_until, leased_at) VALUES "
                     "(1, '555-000-0001', 'leased', 1, %(t)s, 'w', %(live)s, %(t)s), "
                     "(1, '555-000-0002', 'leased', 1, %(t)s, 'w', %(live)s, %(t)s), "
                     "(1, '555-000-0003', 'leased', 1, %(t)s, 'gone', %(ended)s, %(t)s)",
                     {"t": T0, "live": T0 + 100, "ended": T0 + 1})
    assert "from version 3 to 6" in migrate_store(url)
    assert sorted(_rows(url, "SELECT owner, cardinality(ids), open FROM leases")) == [
        ("gone", 1, 1), ("w", 2, 2)]
    opened = open_store(url)
    try:
        again = opened.claim("b", 10, LEASE_S, T0 + 5)  # the ended lease comes back
        assert [c.delivery_id for c in again] == [3]
        done = opened.settle("w", [Settlement(1, 1, SettleKind.SENT),
                                   Settlement(2, 1, SettleKind.SENT)], T0 + 6)
        assert done.accepted == 2
        assert opened.messages(message_id=1)[0].status is MessageStatus.DISPATCHING
        _sent(opened, "b", again, T0 + 7)
        assert opened.messages(message_id=1)[0].status is MessageStatus.COMPLETED
        assert _rows(url, "SELECT count(*) FROM leases WHERE open > 0") == [(0,)]
    finally:
        opened.close()
