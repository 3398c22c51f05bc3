"""The PostgreSQL lease bookkeeping of schema version 4 (``schema._V4``): leases and settles
write only the delivery row, as HOT updates; what is leased is found through ``leases``;
two settles of a message's last leases side by side still complete it.

The contract suite and the state machine check the promises on every store; these cases
look at what only this store has."""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest

from sms_sim.dispatch.contract import DispatchStore, MessageStatus, SettleKind, Settlement
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.stores.postgres import rows
from sms_sim.dispatch.stores.postgres.rows import settle_rows
from sms_sim.dispatch.stores.postgres.schema import id_array, time_array
from tests.conftest import T0, phones

pytestmark = pytest.mark.slow

LEASE_S = 30.0
BLOCKED_WITHIN_S = 30.0


def _index_pages(url: str) -> dict[str, int]:
    """Pages of every index of ``deliveries``, by name."""
    with psycopg.connect(url, autocommit=True) as conn:
        return {name: int(pages) for name, pages in conn.execute(
            "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) / 8192 "
            "FROM pg_index WHERE indrelid = 'deliveries'::regclass").fetchall()}


def test_a_drain_writes_no_index_entry(store: DispatchStore, url: str) -> None:
    """Leasing and settling 5,000 fresh deliveries adds nothing to any index: every update
    was HOT. Before version 4 each lease added an entry to the four indexes holding the row
    and each settle to three: the primary key grew from 16 pages to 31 in this drain, the
    (message, recipient) key from 27 to 51, the lease index from 1 to 23 (both tests here
    fail on that code)."""
    message_id = store.submit(NewMessage.validated(content="alert", recipients=phones(5000)),
                              T0).message_id
    before = _index_pages(url)
    now = T0
    while claims := store.claim("w", 500, LEASE_S, now):
        now += 1
        result = store.settle("w", [Settlement(c.delivery_id, c.attempts, SettleKind.SENT)
                                    for c in claims], now)
        assert result.accepted == len(claims)
    assert store.messages(message_id=message_id)[0].status is MessageStatus.COMPLETED
    assert _index_pages(url) == before


def _waiting_for_a_lock(url: str, pid: int) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                           (pid,)).fetchone()
    return row is not None and row[0] == "Lock"


def test_two_settles_of_the_last_leases_side_by_side_complete_the_message(
        store: DispatchStore, url: str) -> None:
    """Each settle's completion test runs while the other has not committed. Before version
    4 each saw the other's rows as still leased and neither completed the message, which
    stayed ``dispatching`` with nothing open; now the second waits for the first's lock on
    the message and then sees its rows settled."""
    message_id = store.submit(NewMessage.validated(content="alert", recipients=phones(2)),
                              T0).message_id
    (first,) = store.claim("a", 1, LEASE_S, T0)
    (second,) = store.claim("b", 1, LEASE_S, T0)
    with psycopg.connect(url) as one, psycopg.connect(url) as other:
        settle_rows(one, "a", [Settlement(first.delivery_id, first.attempts,
                                          SettleKind.SENT)], T0 + 1)
        done = threading.Event()

        def settle_other() -> None:
            settle_rows(other, "b", [Settlement(second.delivery_id, second.attempts,
                                                SettleKind.SENT)], T0 + 1)
            other.commit()
            done.set()

        thread = threading.Thread(target=settle_other, daemon=True)
        thread.start()
        pid = other.info.backend_pid
        deadline = time.monotonic() + BLOCKED_WITHIN_S
        # The old code never blocks (the other settle commits on its own); the new one
        # blocks until ours commits.
        while not done.is_set() and not _waiting_for_a_lock(url, pid):
            assert time.monotonic() < deadline, "the second settle neither ended nor waited"
            time.sleep(0.01)
        one.commit()
        thread.join(BLOCKED_WITHIN_S)
        assert done.is_set()
    assert store.messages(message_id=message_id)[0].status is MessageStatus.COMPLETED


def _deliveries_scans(plan: object) -> list[tuple[str, int]]:
    """Each scan of ``deliveries`` in an ``EXPLAIN (ANALYZE, FORMAT JSON)`` plan (its index's
    name, or its node type) and how many times it ran."""
    found: list[tuple[str, int]] = []
    if isinstance(plan, dict):
        index = str(plan.get("Index Name", ""))
        if index.startswith("deliveries") or (plan.get("Relation Name") == "deliveries"
                                              and plan["Node Type"] != "ModifyTable"):
            found.append((index or str(plan["Node Type"]), int(plan["Actual Loops"])))
        for value in plan.values():
            found += _deliveries_scans(value)
    elif isinstance(plan, list):
        for item in plan:
            found += _deliveries_scans(item)
    return found


@pytest.mark.parametrize("dense", [False, True], ids=["by-ids", "by-range"])
@pytest.mark.parametrize("statement", ["sent", "general"])
def test_a_settle_reads_its_rows_by_id_whatever_the_leases_open(
        store: DispatchStore, url: str, statement: str, dense: bool) -> None:
    """With a broadcast and 30 small messages leased, the settle reads the rows reported
    once, whatever the leases, and writes them by address: a first version joined the
    owner's open leases to the rows and the planner drove the join from the leases,
    scanning the broadcast's rows once per lease (247 ms a settle of 1,000 with 33 leases
    open, against 8 ms). Both ways of reading them (by id, by range)."""
    store.submit(NewMessage.validated(content="alert", recipients=phones(3000)), T0)
    for k in range(30):
        store.submit(NewMessage.validated(content="small", recipients=phones(1, 10_000 + k)),
                     T0)
    claims = [c for i in range(3) for c in store.claim("w", 1000, LEASE_S, T0 + i)]
    ids = sorted(c.delivery_id for c in claims[:1000])
    params: dict[str, object] = {"ids": id_array(ids), "least": ids[0],
                                 "greatest": ids[-1], "owner": "w", "now": T0 + 3}
    if statement == "sent":
        query, params["attempts"] = rows._SENT_BY[dense], 1
        params["ats"] = time_array([T0 + 2.5] * len(ids))
    else:
        query = rows._SETTLE_BY[dense]
        params["reports"] = json.dumps({f"{i}:1": ["dead", "no", None] for i in ids})
    with psycopg.connect(url, autocommit=True) as conn:
        (plan,) = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query, params,
                               prepare=False).fetchone() or (None,)
    scans = _deliveries_scans(plan)
    # Read once, by id; then each row written by its address, once.
    assert [loops for name, loops in scans if name != "Tid Scan"] == [1] * (len(scans) - 1)
    assert ("Tid Scan", 1000) in scans
