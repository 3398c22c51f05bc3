"""The lease step of ``PostgresStore.claim``: fresh deliveries by chunk, the rest per row.

Why: a broadcast's deliveries are stored by one ``COPY`` (``submit.copy_deliveries``), so
their ids ascend in the recipients' order (one run, unless a submit beside it drew ids
in between), and until a claim reaches them only a few writers touch them (below), each
locked out of a running claim. A claim can then take a broadcast's share as its next
ids: a range scan of the ``(message_id, id)`` index from the message's cursor, then one
``UPDATE`` of those rows by primary key. A per-row claim index would have to be kept for
every delivery, and each claim would walk past the dead entries every earlier lease left
in it (all of them, while an open transaction holds back vacuum); a lease's new entries
here go below the cursor, where no claim reads.

The cursor, on the message row (schema version 3):

* ``fresh_next``: the lowest id a claim may take by chunk; ``fresh_left``: how many fresh
  deliveries the message has (all at or past it).
* ``deliveries.fresh``: true from the ``COPY`` until the delivery leaves the run, by its
  first lease (which clears it in the same ``UPDATE``) or by being finished without one.
  A fresh delivery is in no claim index; every other ready one (a due retry, a released
  or requeued delivery, a rescued lease, rows copied in by ``sms_sim copy`` or present
  before the migration) is in ``deliveries_waiting`` and claimed per row, as before.

Invariant, while a message is open (scheduled or dispatching): its fresh deliveries are
pending, due at the message's ``scheduled_at``, at or past ``fresh_next``, and exactly
``fresh_left`` of them; every other delivery of it at or past ``fresh_next`` is finished
(suppressed: the fresh read skips it). ``fresh_left`` is exact, not a bound: it is what
``fair_claim`` splits (every store must lease the same rows), and what the completion
check reads instead of the run (``lists.complete_done``: ``fresh_left = 0``).

So every statement that takes a fresh delivery out of ``pending`` without a lease clears
its ``fresh`` in the same ``UPDATE`` and takes it off ``fresh_left`` in the same
transaction, with the message row locked or new:

* the ``COPY`` sets the flag; the suppression of listed numbers right after it (at submit,
  or an edit of the recipients, which deleted every delivery first) clears it, and the
  cursor is then set on what is left (``fresh_left`` = recipients - suppressed);
* an opt-out (``lists.add_opt_outs``, holding the claims' lock and the messages' rows)
  reads each row's flag as it suppresses it and gives the fresh counts to ``leave_run``;
* the claim's expiry sweep (``lists.after_rescue``) locks each open message past its
  validity end, then, in a statement (and snapshot) of its own, expires every pending
  delivery of it: all its fresh ones, so its ``fresh_left`` becomes 0;
* a cancel clears the flags of the rows it cancels and zeroes the cursor (the message is
  never claimed again; the flag still means "pending, in the run");
* a lease moves the cursor past what it took.

Settles, rescues and requeues touch leased or dead rows only, never a fresh one, whatever
they turn them into (suppressed included); receipts (``lists.record_dlrs``) change only
deliveries whose send is recorded, and hold the rest, flag untouched.

The order within a message is the memory store's (due retries first, then by due time and
id), so every store leases the same deliveries: a per-row delivery goes before the fresh
run if it is a retry or due no later than the message's ``scheduled_at`` (a released
delivery, whose id is below the cursor), after it otherwise (requeued later). How many
each message gets is still ``fair_claim``'s decision; this step only finds them, and never
leases more than it was given.

A new condition on what a claim may lease must hold on both paths. A condition on the
message (its validity end) belongs in the claim's due read (``claim._DUE_SQL``), which
both paths draw from; one on a delivery must hold in ``_FRESH_SQL`` as well as
``_WAITING_SQL``, and a fresh delivery it skips must leave the run as above, or the
cursor would offer it again and ``fresh_left`` would no longer be exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sms_sim.dispatch.stores.postgres.schema import Connection, id_array

__all__ = ["Cursor", "Leased", "lease_rows", "leave_run"]

# Per-row candidates in the memory store's order; read without a lock: the only writers
# of a ready row (cancel, edit) wait for the message locks this claim holds, an opt-out
# for the claims' lock, and the UPDATE below re-checks the status anyway.
_WAITING_SQL = """
SELECT r.* FROM unnest(%(ids)s::bigint[], %(counts)s::bigint[]) AS g(message_id, n)
CROSS JOIN LATERAL (
    SELECT d.id, d.message_id, d.waiting = 1 AS retry, d.next_attempt_at
    FROM deliveries AS d
    WHERE d.message_id = g.message_id AND d.waiting IS NOT NULL
      AND d.next_attempt_at <= %(now)s
    ORDER BY d.waiting DESC, d.next_attempt_at, d.id
    LIMIT g.n) AS r
"""
# Each message's next ``n`` fresh ids from its cursor: a range of the (message_id, id)
# index. ``d.fresh`` passes over the rows in the run that were suppressed (few: the
# listed numbers among its recipients).
_FRESH_SQL = """
SELECT r.id, g.message_id
FROM unnest(%(ids)s::bigint[], %(firsts)s::bigint[], %(counts)s::bigint[])
    AS g(message_id, first, n)
CROSS JOIN LATERAL (
    SELECT d.id FROM deliveries AS d
    WHERE d.message_id = g.message_id AND d.id >= g.first AND d.fresh
    ORDER BY d.message_id, d.id
    LIMIT g.n) AS r
"""
# Every picked row, fresh or not, by primary key, in one statement, never prepared (as
# ``rows._SETTLE_SQL``): a generic plan cannot see how many ids the array holds, and the
# first version of this lease, an UPDATE joined to a CTE of the picked rows, switched
# mid-drain (once autovacuum's ANALYZE had counted the broadcast) from a nested loop to
# a hash join over a sequential scan of the whole table: 115-170 ms a claim of 1,000
# among 200,000 deliveries, against 30 ms. The status test re-checks the per-row picks,
# read without a lock; fresh rows pass it by the invariant. The redundant range (the ids'
# least and greatest) is for a table without statistics yet (a broadcast just stored):
# costed on its size alone, 1,000 probes of the primary key lost to a sequential scan
# (11-18 ms among 100,000 rows, against 1.3 ms); a broadcast's chunk is one short range.
#
# The same statement enters the claim in ``leases``, a row per message (``schema._V4``):
# the rows themselves change no indexed column, so the lease is a HOT update, no index
# entry written (6 ms per 1,000 here, against 17 ms). Two claims of one owner at one
# instant (a test's frozen clock) share their rows there.
_LEASE_SQL = """
WITH leased AS (
    UPDATE deliveries AS d SET status = 'leased', fresh = false, lease_owner = %(owner)s,
        lease_until = %(until)s, leased_at = %(now)s, attempts = d.attempts + 1
    WHERE d.id = ANY(%(ids)s::bigint[]) AND d.id BETWEEN %(least)s AND %(greatest)s
      AND d.status IN ('pending', 'retrying')
    RETURNING d.id, d.message_id, d.recipient, d.attempts, d.lease_losses
), entered AS (
    INSERT INTO leases AS l (owner, leased_at, message_id, until, ids, open)
    SELECT %(owner)s, %(now)s, message_id, %(until)s, array_agg(id), count(*) FROM leased
    GROUP BY message_id
    ON CONFLICT (owner, leased_at, message_id) DO UPDATE SET ids = l.ids || excluded.ids,
        open = l.open + excluded.open, until = LEAST(l.until, excluded.until)
)
SELECT * FROM leased
"""
# Fresh deliveries finished without a lease, off their messages' runs (``leave_run``).
_LEAVE_SQL = """
UPDATE messages AS m SET fresh_left = m.fresh_left - g.n
FROM unnest(%s::bigint[], %s::bigint[]) AS g(id, n)
WHERE m.id = g.id
"""

_Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Cursor:
    """A due message as the claim read it: its fresh run and its per-row ready count
    (counted up to the claim's limit)."""

    scheduled_at: float
    fresh_next: int | None
    fresh_left: int
    waiting: int


@dataclass(frozen=True, slots=True)
class Leased:
    """What ``lease_rows`` leased: per message, its rows (id, message id, recipient,
    attempts, lease losses) in the memory store's order, and the cursors to store
    (message id -> (new ``fresh_next``, new ``fresh_left``)) for those it moved."""

    rows: dict[int, list[_Row]]
    cursors: dict[int, tuple[int | None, int]]


def lease_rows(conn: Connection, totals: dict[int, int], cursors: dict[int, Cursor],
               owner: str, until: float, now: float) -> Leased:
    """Lease up to ``totals[m]`` ready deliveries of each message ``m`` (locked by the
    caller, unchanged since ``cursors`` was read): per-row ones before the fresh run,
    then the fresh run by chunk, then per-row ones after it. Three statements at most
    whatever the sizes: a read of the per-row candidates (only if there are some), a read
    of each fresh run's next ids, and one ``UPDATE`` by primary key."""
    waiting = {m: n for m, n in totals.items() if cursors[m].waiting > 0}
    before: dict[int, list[int]] = {}
    after: dict[int, list[int]] = {}
    if waiting:
        for delivery_id, message_id, retry, due in conn.execute(
                _WAITING_SQL, {"ids": list(waiting), "counts": list(waiting.values()),
                               "now": now}):
            early = retry or due <= cursors[message_id].scheduled_at
            (before if early else after).setdefault(message_id, []).append(delivery_id)
    fresh: dict[int, int] = {}  # message id -> how many to take by chunk
    order: dict[int, list[int]] = {}  # per-row picks, before and after the run
    for message_id, total in totals.items():
        head = before.get(message_id, [])[:total]
        cursor = cursors[message_id]
        chunk = min(cursor.fresh_left, total - len(head)) if cursor.fresh_next is not None else 0
        if chunk > 0:
            fresh[message_id] = chunk
        tail = after.get(message_id, [])[:total - len(head) - chunk]
        order[message_id] = head + tail
    by_chunk: dict[int, list[int]] = {}
    if fresh:
        for delivery_id, message_id in conn.execute(_FRESH_SQL, {
                "ids": list(fresh), "counts": list(fresh.values()),
                "firsts": [cursors[m].fresh_next for m in fresh]}).fetchall():
            by_chunk.setdefault(message_id, []).append(delivery_id)
    wanted = [i for ids in order.values() for i in ids]
    wanted += [i for ids in by_chunk.values() for i in ids]
    found: dict[int, _Row] = {}
    if wanted:
        wanted.sort()
        for row in conn.execute(_LEASE_SQL, {
                "owner": owner, "until": until, "now": now, "ids": id_array(wanted),
                "least": wanted[0], "greatest": wanted[-1]}, prepare=False).fetchall():
            found[row[0]] = row
    rows: dict[int, list[_Row]] = {}
    moved: dict[int, tuple[int | None, int]] = {}
    for message_id in totals:
        head_n = min(len(before.get(message_id, [])), totals[message_id])
        picked = order[message_id]
        run = sorted(by_chunk.get(message_id, []))
        ids = picked[:head_n] + run + picked[head_n:]
        rows[message_id] = [found[i] for i in ids if i in found]
        if message_id in fresh:
            left = cursors[message_id].fresh_left - len(run)
            # Fewer than asked means the run is over, whatever the count said: never
            # offer again what is not there.
            moved[message_id] = ((run[-1] + 1, left) if len(run) == fresh[message_id]
                                 else (None, 0))
    return Leased(rows=rows, cursors=moved)


def leave_run(conn: Connection, gone: Mapping[int, int]) -> None:
    """Take ``gone[m]`` fresh deliveries off message ``m``'s run: the caller has just
    finished them without a lease, clearing their ``fresh``, with ``m``'s row locked."""
    if gone:
        conn.execute(_LEAVE_SQL, (list(gone), list(gone.values())))
