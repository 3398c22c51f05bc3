"""The lease step of ``PostgresStore.claim``: fresh deliveries by range, the rest per row.

Why: a broadcast's deliveries are stored by one ``COPY`` (``submit.copy_deliveries``), so
their ids ascend in the recipients' order (one run, unless a submit beside it drew ids
in between), and until a claim reaches them only a few writers touch them (below), each
locked out of a running claim. A claim can then take a broadcast's share as its next
ids: a range scan of the ``(message_id, id)`` index from the message's cursor, and lease
them by writing that range (its first and last id) on its row of ``leases``, not the rows
(schema version 5). A fresh delivery is then written once in its life, by its settle
(or by the rescue of its lease), not twice: the lease write was half of what a delivery
cost the server (``bench/pg_row_writes.py``). A per-row claim index would have to be kept
for every delivery, and each claim would walk past the dead entries every earlier lease
left in it (all of them, while an open transaction holds back vacuum).

The cursor, on the message row (schema version 3):

* ``fresh_next``: the lowest id a claim may take by chunk; ``fresh_left``: how many fresh
  deliveries the message has at or past it.
* ``deliveries.fresh``: true from the ``COPY`` until the delivery's first write after it:
  its settle or rescue, or being finished without a lease. A fresh delivery is in no
  claim index; every other ready one (a due retry, a released or requeued delivery, a
  rescued lease, rows copied in by ``sms_sim copy`` or present before version 3) is in
  ``deliveries_waiting`` and claimed per row, its lease written on the row.

Invariant, while a message is open (scheduled or dispatching): its fresh deliveries at or
past ``fresh_next`` are its run: pending, due at the message's ``scheduled_at``, exactly
``fresh_left`` of them; every other delivery of it at or past ``fresh_next`` is finished
(suppressed: the fresh read skips it). ``fresh_left`` is exact, not a bound: it is what
``fairness`` splits (every store must lease the same rows), and what the completion
check reads instead of the run (``lists.complete_done``: ``fresh_left = 0``).

And, whatever the message's status: a fresh delivery below ``fresh_next``, or any fresh
delivery once the run is over or ended (``fresh_next`` NULL), is leased by range
(``RANGE_LEASED``): its row says ``pending`` and its first attempt is not yet counted,
and exactly one open lease row of its message has it in its range (``RANGE_LEASE_OF``
finds the owner and end). Every reader that states a delivery's status reads it through
these (``STATUS``: the listings, the counts, the cancel's counts, ``sms_sim copy``'s
check for leases), and every writer of pending deliveries passes it by (the cancel, the
opt-out, the expiry sweep: a leased delivery is its settle's to decide). A settle fences a
range-leased row by its lease row's owner and end (``rows._FENCE``), a rescue takes the
fresh rows of an ended range; both clear ``fresh`` and count the attempt.

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
  delivery of it but the range-leased: all its run, so its ``fresh_left`` becomes 0;
* a cancel clears the flags of the rows of the run it cancels and ends the cursor (the
  message is never claimed again; its range-leased rows stay fresh, and leased);
* a lease moves the cursor past what it took, and holds it by range from then on.

Settles, rescues and requeues touch leased or dead rows only, never one of the run (a
range-leased row is below the cursor), whatever they turn them into (suppressed
included); receipts (``lists.record_dlrs``) change only deliveries whose send is
recorded, and hold the rest, flag untouched.

The order within a message is the memory store's (due retries first, then by due time and
id), so every store leases the same deliveries: a per-row delivery goes before the fresh
run if it is a retry or due no later than the message's ``scheduled_at`` (a released
delivery, whose id is below the cursor), after it otherwise (requeued later). How many
each message gets is still ``fairness``'s decision; this step only finds them, and never
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

__all__ = ["Cursor", "Leased", "lease_rows", "leave_run", "RANGE_LEASED", "STATUS",
           "RANGE_LEASE_OF"]

# Delivery ``d`` of message ``m`` is leased by a range (a fresh row below its message's
# cursor, or any fresh row once the run is over); its status as the contract states it;
# and the columns of the range lease covering ``d`` (owner, end), NULL for any other row.
RANGE_LEASED = "(d.fresh AND (m.fresh_next IS NULL OR d.id < m.fresh_next))"
STATUS = f"(CASE WHEN {RANGE_LEASED} THEN 'leased' ELSE d.status END)"
RANGE_LEASE_OF = """LEFT JOIN LATERAL (
    SELECT l.owner, l.until FROM leases AS l
    WHERE d.fresh AND l.message_id = d.message_id AND d.id BETWEEN l.first_id AND l.last_id
    LIMIT 1) AS rl ON true"""

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
# Each message's next ``n`` fresh deliveries from its cursor, as the claim hands them out
# (on their first attempt): a range of the (message_id, id) index. ``d.fresh`` passes over
# the rows in the run that were suppressed (few: the listed numbers among its recipients).
# Nothing is written to them: they are leased by the range entered below.
_FRESH_SQL = """
SELECT r.* FROM unnest(%(ids)s::bigint[], %(firsts)s::bigint[], %(counts)s::bigint[])
    AS g(message_id, first, n)
CROSS JOIN LATERAL (
    SELECT d.id, d.message_id, d.recipient, d.attempts + 1, d.lease_losses
    FROM deliveries AS d
    WHERE d.message_id = g.message_id AND d.id >= g.first AND d.fresh
    ORDER BY d.message_id, d.id
    LIMIT g.n) AS r
"""
# The per-row picks, by primary key, in one statement, never prepared (as
# ``rows._SETTLE_BY``): a generic plan cannot see how many ids the array holds, and the
# first version of this lease, an UPDATE joined to a CTE of the picked rows, switched
# mid-drain (once autovacuum's ANALYZE had counted the broadcast) from a nested loop to
# a hash join over a sequential scan of the whole table: 115-170 ms a claim of 1,000
# among 200,000 deliveries, against 30 ms. The status test re-checks the picks, read
# without a lock. The redundant range (the ids' least and greatest) is for a table
# without statistics yet: costed on its size alone, 1,000 probes of the primary key lost
# to a sequential scan (11-18 ms among 100,000 rows, against 1.3 ms).
#
# The same statement enters the claim in ``leases``, a row per claim and message
# (``schema._V6``): the per-row ids, and the fresh run's first and last id (``schema._V5``).
# The row's id is drawn first, so each per-row delivery can name it (``lease_id``: what a
# settle and a rescue find its lease by), joined in by message: a hash join, where a
# subquery per row scanned all the drawn ids (1,000 retries of 1,000 messages leased in
# 29 ms, against 101 ms, EXPLAIN ANALYZE medians of 6 side by side). The per-row
# rows change no indexed column, so their lease is a HOT update; the fresh ones are not
# written at all (a lease of 1,000 of them took the server 11.6 ms as row writes,
# ``bench/pg_row_writes.py``).
_LEASE_SQL = """
WITH lease AS MATERIALIZED (
    SELECT g.message_id, nextval('leases_id_seq') AS id
    FROM unnest(%(messages)s::bigint[]) AS g(message_id)
), leased AS (
    UPDATE deliveries AS d SET status = 'leased', fresh = false, lease_owner = %(owner)s,
        lease_until = %(until)s, leased_at = %(now)s, attempts = d.attempts + 1,
        lease_id = lease.id
    FROM lease
    WHERE lease.message_id = d.message_id
      AND d.id = ANY(%(ids)s::bigint[]) AND d.id BETWEEN %(least)s AND %(greatest)s
      AND d.status IN ('pending', 'retrying')
    RETURNING d.id, d.message_id, d.recipient, d.attempts, d.lease_losses
), entered AS (
    INSERT INTO leases (id, owner, leased_at, message_id, until, ids, open, first_id, last_id)
    OVERRIDING SYSTEM VALUE
    SELECT lease.id, %(owner)s, %(now)s, g.message_id, %(until)s,
        COALESCE(array_agg(g.id) FILTER (WHERE g.id IS NOT NULL), '{}'), sum(g.n),
        min(g.first), max(g.last)
    FROM (SELECT message_id, id, 1 AS n, NULL::bigint AS first, NULL::bigint AS last
          FROM leased
          UNION ALL
          SELECT r.message_id, NULL, r.n, r.first, r.last
          FROM unnest(%(runs)s::bigint[], %(run_sizes)s::bigint[], %(run_firsts)s::bigint[],
                      %(run_lasts)s::bigint[]) AS r(message_id, n, first, last)) AS g
    JOIN lease USING (message_id)
    GROUP BY g.message_id, lease.id
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
    then the fresh run by range, then per-row ones after it. Three statements at most
    whatever the sizes: a read of the per-row candidates (only if there are some), a read
    of each fresh run's next deliveries, and one that updates the per-row ones by primary
    key and enters the lease."""
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
    by_chunk: dict[int, list[_Row]] = {}  # message id -> the rows of its run taken
    if fresh:
        for row in conn.execute(_FRESH_SQL, {
                "ids": list(fresh), "counts": list(fresh.values()),
                "firsts": [cursors[m].fresh_next for m in fresh]}).fetchall():
            by_chunk.setdefault(row[1], []).append(row)
    wanted = sorted(i for ids in order.values() for i in ids)
    found: dict[int, _Row] = {}
    if wanted or by_chunk:
        runs = list(by_chunk.values())
        for row in conn.execute(_LEASE_SQL, {
                "messages": sorted({m for m, ids in order.items() if ids} | set(by_chunk)),
                "owner": owner, "until": until, "now": now, "ids": id_array(wanted),
                "least": wanted[0] if wanted else 0, "greatest": wanted[-1] if wanted else 0,
                "runs": list(by_chunk), "run_sizes": [len(run) for run in runs],
                "run_firsts": [run[0][0] for run in runs],
                "run_lasts": [run[-1][0] for run in runs]}, prepare=False).fetchall():
            found[row[0]] = row
    rows: dict[int, list[_Row]] = {}
    moved: dict[int, tuple[int | None, int]] = {}
    for message_id in totals:
        head_n = min(len(before.get(message_id, [])), totals[message_id])
        picked = order[message_id]
        run = by_chunk.get(message_id, [])
        rows[message_id] = ([found[i] for i in picked[:head_n] if i in found] + run
                            + [found[i] for i in picked[head_n:] if i in found])
        if message_id in fresh:
            left = cursors[message_id].fresh_left - len(run)
            # Fewer than asked means the run is over, whatever the count said: never
            # offer again what is not there.
            moved[message_id] = ((run[-1][0] + 1, left) if len(run) == fresh[message_id]
                                 else (None, 0))
    return Leased(rows=rows, cursors=moved)


def leave_run(conn: Connection, gone: Mapping[int, int]) -> None:
    """Take ``gone[m]`` fresh deliveries off message ``m``'s run: the caller has just
    finished them without a lease, clearing their ``fresh``, with ``m``'s row locked."""
    if gone:
        conn.execute(_LEAVE_SQL, (list(gone), list(gone.values())))
