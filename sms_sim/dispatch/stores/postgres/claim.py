"""``PostgresStore.claim``: the lease rescue, the fair split in one statement, and one
``UPDATE`` that leases it.

One claim is one transaction, serialised with the other claims on the same tables by a
transaction-scoped advisory lock (settles, submits and reads run beside it). Serialising
claims is what makes the contract's fairness exact across workers on many hosts, as it is
in the memory store: every claim sees the serve order the one before it left. It costs
little because a claim is a handful of statements whatever its size:

1. the rescue: the leases that ended (or were granted after a backward clock jump) are
   read from ``leases`` (a row per claim, message and lease end), and one ``UPDATE``
   takes back their rows (the per-row ids, and the fresh rows of the range),
   fenced by status and lease end in the statement itself,
   passing over rows a settle is writing right now (``SKIP LOCKED``: that settle decides
   them, or, if it rolls back, the next claim rescues them), so a settler stalled in its
   transaction never makes claims wait; a rescued delivery to an opted-out number is
   suppressed instead; then the expiry sweep (``lists.after_rescue``): open messages past
   their validity end are locked, and their pending and retrying deliveries expire, fresh
   ones included (their run ends: ``chunk``);
2. the split, one statement (``split``): it reads the due messages (none past its
   validity end, so neither lease path below takes from one), each with its class and
   how many deliveries it has ready: its fresh ones, read off its chunk cursor
   (``chunk``: ``fresh_left``, no delivery row read), and those waiting for a per-row
   claim, counted up to the limit through the partial ``deliveries_waiting`` index
   (retries, releases, requeues, rescued leases: few); and splits the limit over them
   and their tenants by ``fairness``'s rule, the one the memory and SQLite stores run in
   Python, so all three lease the same rows in the same order;
3. the messages given deliveries are locked (``FOR NO KEY UPDATE``, in id order) and
   checked unchanged (an edit or cancel that committed since step 2 bumped the version:
   the split is made again); from here on an edit or cancel of them waits for this claim;
4. the lease (``chunk.lease_rows``): a broadcast's share is the next ids of its fresh run,
   read as one range of the ``(message_id, id)`` index from its cursor; per-row deliveries
   are read through ``deliveries_waiting`` only when there are some; then one statement
   updates the per-row picks by primary key and enters the lease in ``leases``, the
   fresh run as its first and last id (its rows are not written). Never ``WHERE id IN
   (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)``: PostgreSQL may run such a sub-select
   more than once and update more rows than its LIMIT (bug #15715);
5. the serve order with the moved cursors, tenants' serves and aging's kept classes, each
   one statement.

Since every claim waits for the one before it, a claimer that stalls inside its claim (a
paused process, a long GC or VM pause) would stall every host's claims: its session is
ended by the server once it has idled inside the claim for ``CLAIM_IDLE_LIMIT_S`` (the
claim rolls back, nothing is leased, its worker retries), so the others wait that long at
most, not for as long as the stall.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sms_sim.dispatch.contract import AGING_STEP_S, Claim, new_claim
from sms_sim.dispatch.stores.common import EXPIRED_LEASE_ERROR, raised_classes
from sms_sim.dispatch.stores.postgres.chunk import Cursor, lease_rows
from sms_sim.dispatch.stores.postgres.lists import after_rescue
from sms_sim.dispatch.stores.postgres.schema import LOCK_CLASS, Connection
from sms_sim.dispatch.stores.postgres.split import split_sql

__all__ = ["claim_deliveries", "CLAIM_IDLE_LIMIT_S"]

_CLAIM_LOCK = 2
# Between a claim's statements the client only sorts out what the last one returned
# (microseconds to milliseconds): idling a second there means the claimer stalled.
CLAIM_IDLE_LIMIT_S = 1.0
# JIT off for the claim: the split's row estimates (a CTE's output is guessed, not known)
# put its cost above ``jit_above_cost`` with many messages due, and compiling it took
# 190 of 360 ms a claim among 10,000 due messages (``bench/claim_many_due.py``) to run
# window functions over a few thousand rows.
_BEGIN_SQL = ("SELECT set_config('idle_in_transaction_session_timeout', "
              f"{str(int(CLAIM_IDLE_LIMIT_S * 1000))!r}, true), set_config('jit', 'off', true), "
              "pg_advisory_xact_lock(%s, hashtext(current_schema()))")

# Rows of leases whose rows are all settled or rescued (nothing reads them); then the
# leases that ended (by their own terms, or granted after a backward clock jump), oldest
# first, a bounded number per claim (the rest go to the next claim, which comes at once:
# ``next_due_at`` reads the earliest end here).
_FORGET_SQL = "DELETE FROM leases WHERE open <= 0"
_ENDED_SQL = """
SELECT id, ids, message_id, first_id, last_id FROM leases
WHERE open > 0 AND (until <= %(now)s
                    OR (until > %(jumped)s AND COALESCE(leased_at, until) > %(jumped)s))
ORDER BY until LIMIT %(max)s
"""
# Per-row leased rows are each judged by their own lease end; range-leased rows (fresh,
# in an ended lease's range) by their lease row's, read above. Each rescued row comes off
# its lease row's ``open``: a per-row one names it (``lease_id``), a range-leased one is
# in its range. A rescued fresh row is on its first attempt, which its lease gave it.
_RESCUE_SQL = """
WITH lost_rows AS MATERIALIZED (
    SELECT d.id, d.lease_id AS lease FROM deliveries AS d
    WHERE d.id = ANY(%(ids)s::bigint[]) AND d.status = 'leased'
      AND (d.lease_until <= %(now)s
           OR (d.lease_until > %(jumped)s
               AND COALESCE(d.leased_at, d.lease_until - %(lease_s)s) > %(jumped)s))
    FOR UPDATE SKIP LOCKED
), lost_runs AS MATERIALIZED (
    SELECT d.id, r.lease FROM deliveries AS d
    JOIN unnest(%(leases)s::bigint[], %(messages)s::bigint[], %(firsts)s::bigint[],
                %(lasts)s::bigint[]) AS r(lease, message_id, first, last)
      ON d.message_id = r.message_id AND d.id BETWEEN r.first AND r.last
    WHERE d.fresh AND d.status = 'pending'
    FOR UPDATE OF d SKIP LOCKED
), lost AS (
    SELECT * FROM lost_rows UNION ALL SELECT * FROM lost_runs
), rescued AS (
    UPDATE deliveries AS d SET
        status = CASE WHEN m.status = 'cancelled' THEN 'cancelled'
            WHEN EXISTS (SELECT 1 FROM opt_outs AS o WHERE o.tenant = m.tenant
                         AND o.phone = d.recipient) THEN 'suppressed' ELSE 'retrying' END,
        next_attempt_at = %(now)s, lease_owner = NULL, lease_until = NULL, leased_at = NULL,
        lease_id = NULL, last_error = %(error)s, lease_losses = d.lease_losses + 1,
        attempts = d.attempts + d.fresh::int, fresh = false
    FROM lost, messages AS m
    WHERE d.id = lost.id AND m.id = d.message_id
    RETURNING d.message_id, d.status, lost.lease
), closed AS (
    UPDATE leases AS l SET open = l.open - g.n
    FROM (SELECT lease, count(*) AS n FROM rescued GROUP BY lease) AS g
    WHERE l.id = g.lease
)
SELECT message_id, status FROM rescued
"""
_ENDED_PER_CLAIM = 50
# The due messages (none past its validity end) in claim order: never served first (NULLS
# FIRST), oldest due first, then the least recently served; each with its class
# (``effective_priority``, the same arithmetic) and its ready deliveries: its fresh run,
# off its cursor (no delivery row read), and those waiting for a per-row claim, counted
# up to the limit through the partial ``deliveries_waiting`` index (few).
_DUE_SQL = """
SELECT m.id, m.tenant, m.version, m.priority, m.kept_class, m.fresh_left, m.fresh_next,
    m.scheduled_at, r.waiting,
    GREATEST(m.priority + CASE WHEN w.waited > 0 THEN floor(w.waited / %(step)s)::bigint
                               ELSE 0 END, m.kept_class) AS rank,
    LEAST(r.waiting + m.fresh_left, %(limit)s) AS demand,
    row_number() OVER (ORDER BY m.served_seq NULLS FIRST, m.scheduled_at, m.id) AS pos
FROM messages AS m
CROSS JOIN LATERAL (SELECT %(now)s - COALESCE(m.served_at, m.scheduled_at) AS waited) AS w
CROSS JOIN LATERAL (SELECT count(*) AS waiting FROM (
    SELECT 1 FROM deliveries AS d WHERE d.message_id = m.id AND d.waiting IS NOT NULL
      AND d.next_attempt_at <= %(now)s LIMIT %(limit)s) AS x) AS r
WHERE m.status IN ('scheduled', 'dispatching') AND m.scheduled_at <= %(now)s
  AND (m.valid_until IS NULL OR m.valid_until > %(now)s)
"""
_SPLIT_SQL = split_sql(_DUE_SQL, "tenants", keep="kept_class")
_LOCK_SQL = """
SELECT id, version, content, uid, valid_until FROM messages
WHERE id = ANY(%s) AND status IN ('scheduled', 'dispatching')
ORDER BY id FOR NO KEY UPDATE
"""
_SERVED_SQL = """
UPDATE messages AS m SET status = 'dispatching',
    dispatch_started_at = COALESCE(m.dispatch_started_at, %(now)s),
    served_seq = s.seq, served_at = %(now)s, updated_at = %(now)s,
    fresh_next = CASE WHEN s.moved THEN s.next ELSE m.fresh_next END,
    fresh_left = CASE WHEN s.moved THEN s.left_ ELSE m.fresh_left END
FROM unnest(%(ids)s::bigint[], %(seqs)s::bigint[], %(moved)s::boolean[], %(nexts)s::bigint[],
            %(lefts)s::bigint[]) AS s(id, seq, moved, next, left_)
WHERE m.id = s.id
"""
_TENANTS_SQL = """
INSERT INTO tenants (name, served_seq)
SELECT * FROM unnest(%s::text[], %s::bigint[])
ON CONFLICT (name) DO UPDATE SET served_seq = excluded.served_seq
"""
_STILL_DUE_SQL = """
SELECT m.id FROM messages AS m
WHERE m.id = ANY(%s::bigint[]) AND (m.fresh_left > 0 OR EXISTS (
    SELECT 1 FROM deliveries AS d WHERE d.message_id = m.id
    AND d.waiting IS NOT NULL AND d.next_attempt_at <= %s))
"""
_KEPT_SQL = """
UPDATE messages AS m SET kept_class = k.kept
FROM unnest(%s::bigint[], %s::bigint[]) AS k(id, kept)
WHERE m.id = k.id AND m.kept_class IS DISTINCT FROM k.kept
"""

_Row = tuple[Any, ...]


def claim_deliveries(conn: Connection, owner: str, limit: int, lease_s: float, now: float,
                     jump_s: float) -> list[Claim]:
    """``DispatchStore.claim`` inside the caller's transaction (arguments checked)."""
    conn.execute(_BEGIN_SQL, (LOCK_CLASS + _CLAIM_LOCK,))
    after_rescue(conn, _rescue(conn, now, lease_s, now + jump_s), now)
    locked: dict[int, _Row] = {}  # message id -> (id, version, content, uid, valid_until)
    while True:
        # Prepared at once: planning it took 3 ms, longer than running it for a broadcast
        # (1 ms), and a claim of 1,000 ran 12 ms instead of 7 unprepared. psycopg still
        # prepares nothing on a connection without a threshold (behind a transaction-
        # pooling PgBouncer: test_transaction_pooling_prepares_nothing...).
        due = conn.execute(_SPLIT_SQL, {"now": now, "limit": limit, "step": AGING_STEP_S},
                           prepare=True).fetchall()
        grants = [(row[0], int(row[12])) for row in due if row[12] > 0]
        # Every due message is split, but only those given deliveries are looked at again
        # (with many small messages due, the rest are most of them).
        granted = {row[0]: row for row in due if row[12] > 0}
        wanted = sorted(granted.keys() - locked.keys())
        if wanted:
            locked.update((row[0], row) for row in conn.execute(_LOCK_SQL, (wanted,)))
        if all(m in locked and locked[m][1] == row[2] for m, row in granted.items()):
            break
        # An edit or cancel committed between the split and the lock: split again, on
        # messages that can no longer change under us.
    classes = {row[0]: int(row[9]) for row in due}
    cursors = {m: Cursor(scheduled_at=row[7], fresh_next=row[6], fresh_left=int(row[5]),
                         waiting=int(row[8])) for m, row in granted.items()}
    claims, moved = _lease(conn, grants, locked, classes, cursors, owner, now + lease_s, now)
    served = _serve(conn, grants, {m: row[1] for m, row in granted.items()}, moved, now)
    _keep_classes(conn, due, classes, served, now)
    return claims


def _rescue(conn: Connection, now: float, lease_s: float, jumped: float) -> list[_Row]:
    """Take back the rows of the leases that ended (step 1); returns them as (message id,
    new status). A row a settle is writing is passed over (``SKIP LOCKED``), and its lease
    stays open for the next claim if that settle rolls back."""
    conn.execute(_FORGET_SQL)
    ended = conn.execute(_ENDED_SQL, {"now": now, "jumped": jumped,
                                      "max": _ENDED_PER_CLAIM}).fetchall()
    if not ended:
        return []
    runs = [row for row in ended if row[3] is not None]
    return conn.execute(_RESCUE_SQL, {
        "ids": [i for row in ended for i in row[1]], "now": now, "jumped": jumped,
        "lease_s": lease_s, "error": EXPIRED_LEASE_ERROR,
        "leases": [r[0] for r in runs], "messages": [r[2] for r in runs],
        "firsts": [r[3] for r in runs], "lasts": [r[4] for r in runs]},
        prepare=False).fetchall()


def _lease(conn: Connection, grants: list[tuple[int, int]], locked: dict[int, _Row],
           classes: dict[int, int], cursors: dict[int, Cursor], owner: str, until: float,
           now: float) -> tuple[list[Claim], dict[int, tuple[int | None, int]]]:
    """Lease the grants (``chunk.lease_rows``); the claims in grant order, by id within
    each, and the cursors moved."""
    if not grants:
        return [], {}
    totals: dict[int, int] = {}
    for message_id, count in grants:
        totals[message_id] = totals.get(message_id, 0) + count
    leased = lease_rows(conn, totals, cursors, owner, until, now)
    claims: list[Claim] = []
    taken: dict[int, int] = {}
    for message_id, count in grants:
        start = taken.get(message_id, 0)
        taken[message_id] = start + count
        _, _, content, uid, valid_until = locked[message_id]
        priority = classes[message_id]
        for delivery_id, _, recipient, attempts, lease_losses in sorted(
                leased.rows[message_id][start:start + count]):
            claims.append(new_claim((delivery_id, message_id, recipient, content, attempts,
                                     until, lease_losses, uid, priority, valid_until)))
    return claims, leased.cursors


def _serve(conn: Connection, grants: list[tuple[int, int]], tenant_of: dict[int, str],
           moved: dict[int, tuple[int | None, int]], now: float) -> dict[int, int]:
    """Record the serve order of the messages and tenants given deliveries, and the chunk
    cursors ``moved``; returns each served message's latest serve number."""
    if not grants:
        return {}
    row = conn.execute("SELECT GREATEST((SELECT max(served_seq) FROM messages), "
                       "(SELECT max(served_seq) FROM tenants))").fetchone()
    last = int(row[0]) if row is not None and row[0] is not None else 0
    served: dict[int, int] = {}
    tenants: dict[str, int] = {}
    for number, (message_id, _) in enumerate(grants, start=last + 1):
        served[message_id] = tenants[tenant_of[message_id]] = number
    conn.execute(_SERVED_SQL, {
        "now": now, "ids": list(served), "seqs": list(served.values()),
        "moved": [m in moved for m in served],
        "nexts": [moved[m][0] if m in moved else None for m in served],
        "lefts": [moved[m][1] if m in moved else None for m in served]})
    conn.execute(_TENANTS_SQL, (list(tenants), list(tenants.values())))
    return served


def _keep_classes(conn: Connection, due: Sequence[_Row], classes: dict[int, int],
                  served: dict[int, int], now: float) -> None:
    """Aging after a claim (``effective_priority``): a message served above its priority
    keeps that class; a kept class is dropped once nothing of the message is due."""
    # ``due`` is already what can hold a class after: the split statement returns only the
    # messages it served and those holding a kept class (``keep``).
    kept = raised_classes({row[0]: row[4] for row in due},
                          {row[0]: row[3] for row in due}, classes, served)
    holders = list(kept)
    if not holders:
        return
    still = {row[0] for row in conn.execute(_STILL_DUE_SQL, (holders, now))}
    conn.execute(_KEPT_SQL, (holders, [kept[m] if m in still else None for m in holders]))
