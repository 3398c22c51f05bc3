"""The ``OptOutStore`` and ``DlrStore`` parts of ``PostgresStore``, and the steps the other
operations share with them: suppressing listed numbers, the claim's expiry sweep,
completing messages left with nothing open, applying held receipts.

Helpers run inside the caller's transaction; none commits.

On PostgreSQL, statements of concurrent transactions do not see each other's rows until
they commit, so an opt-out could miss a delivery that another transaction is just making
``pending`` or ``retrying``, and that one could miss the opt-out. Locks close each gap:

- a submit, an edit of the recipients, and a settle that gives deliveries back (RETRY,
  RELEASE) hold their tenants' opt-out locks shared from before they read the list until
  they commit, and ``add_opt_outs`` holds its tenant's exclusive: one of the two commits
  first and the other's next statement sees it;
- ``add_opt_outs`` and ``requeue_dead`` also take the claims' lock (``claim``), so no claim
  rescues (and may lease again) a delivery beside them.

Lock order, so no two of these wait for each other: the claims' lock, then tenants' opt-out
locks, then message rows (by id), then delivery rows. So no delivery to a listed number is
ever left ``pending`` or ``retrying``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from sms_sim.dispatch.dlrs import DlrOutcome, DlrReport, DlrResult, dlr_outcome, split_key
from sms_sim.dispatch.optouts import OptOut, OptOutResult
from sms_sim.dispatch.stores.postgres.chunk import RANGE_LEASED, leave_run
from sms_sim.dispatch.stores.postgres.schema import LOCK_CLASS, Connection

__all__ = ["add_opt_outs", "remove_opt_out", "list_opt_outs", "suppress_listed",
           "lock_opt_outs", "lock_claims", "lock_tenants_of", "record_dlrs", "complete_done",
           "NONE_LEASED", "SOME_WAITING",
           "after_rescue", "apply_held_dlrs"]

_OPT_OUT_LOCK = 3
_CLAIM_LOCK = 2  # the lock every claim holds (``claim._CLAIM_LOCK``; a test keeps them equal)
_LOCK_SQL = ("SELECT pg_advisory_xact_lock{mode}(%s, hashtext(current_schema() || '/' || %s))")
# The tenant's open messages with a delivery to suppress, row-locked in id order first.
_HOLDERS_SQL = f"""
SELECT m.id FROM messages AS m
WHERE m.tenant = %(tenant)s AND m.status IN ('scheduled', 'dispatching')
  AND EXISTS (SELECT 1 FROM deliveries AS d WHERE d.message_id = m.id
              AND d.recipient = ANY(%(phones)s) AND d.status IN ('pending', 'retrying')
              AND NOT {RANGE_LEASED})
ORDER BY m.id FOR NO KEY UPDATE
"""
# Each row with whether it was fresh (in its message's chunk run, ``chunk``): the rows
# cannot change between the read and the write (their messages are locked, claims and
# give-backs are locked out), so the flag read is the flag overwritten. A range-leased
# row is leased: its settle decides it.
_SUPPRESS_SQL = f"""
WITH hit AS MATERIALIZED (
    SELECT d.id, d.fresh FROM deliveries AS d JOIN messages AS m ON m.id = d.message_id
    WHERE d.message_id = ANY(%(ids)s) AND d.recipient = ANY(%(phones)s)
      AND d.status IN ('pending', 'retrying') AND NOT {RANGE_LEASED}
)
UPDATE deliveries AS d SET status = 'suppressed', fresh = false
FROM hit WHERE d.id = hit.id AND d.status IN ('pending', 'retrying')
RETURNING d.message_id, hit.fresh
"""
_TENANTS_OF_SQL = """
SELECT DISTINCT m.tenant FROM deliveries AS d JOIN messages AS m ON m.id = d.message_id
WHERE d.id = ANY(%s) ORDER BY 1
"""
# Driven by the list: one probe of (message_id, recipient) per listed number. The rows
# leave the fresh run before its cursor is set (``submit.copy_deliveries``).
_SUPPRESS_NEW_SQL = """
UPDATE deliveries AS d SET status = 'suppressed', fresh = false
FROM opt_outs AS o
WHERE o.tenant = %(tenant)s AND d.message_id = %(message)s AND d.recipient = o.phone
  AND d.status = 'pending'
"""
# A message with no open delivery left is completed: no fresh one (its chunk cursor says,
# ``chunk``), none waiting (a probe of the small partial index), none leased (no open
# lease of it in ``leases``). Run only on the rows ``_CLOSING_SQL`` locked (see
# ``complete_done``).
_CLOSING_SQL = """
SELECT m.id FROM messages AS m
WHERE m.id = ANY(%(ids)s) AND m.status IN ('scheduled', 'dispatching') AND m.fresh_left = 0
ORDER BY m.id FOR NO KEY UPDATE
"""
# Nothing of message ``m`` is leased (the completion test here, the prune's of a cancel).
NONE_LEASED = "NOT EXISTS (SELECT 1 FROM leases AS l WHERE l.message_id = m.id AND l.open > 0)"
# Message ``m`` has per-row work, due or not (a probe of ``deliveries_waiting``): the
# completion test, the expiry sweep and the next due time read it.
SOME_WAITING = ("EXISTS (SELECT 1 FROM deliveries AS d WHERE d.message_id = m.id "
                "AND d.waiting IS NOT NULL)")
_COMPLETE_SQL = f"""
UPDATE messages AS m SET status = 'completed', completed_at = %(now)s, updated_at = %(now)s
WHERE m.id = ANY(%(ids)s) AND m.status IN ('scheduled', 'dispatching') AND m.fresh_left = 0
  AND NOT {SOME_WAITING} AND {NONE_LEASED}
"""
# Open messages past their validity end (the partial index messages_valid) with work left
# (a fresh run, or per-row work), locked in id order before their deliveries are read (the
# lock order above), by a statement of its own: the expiry's snapshot, taken after, then
# holds every delivery of theirs that is pending or retrying, even one an edit just
# stored, so the whole fresh run expires and ``fresh_left`` is 0 exactly (``chunk``).
_LAPSED_SQL = f"""
SELECT m.id FROM messages AS m
WHERE m.valid_until IS NOT NULL AND m.valid_until <= %(now)s
  AND m.status IN ('scheduled', 'dispatching') AND (m.fresh_left > 0 OR {SOME_WAITING})
ORDER BY m.id FOR NO KEY UPDATE
"""
_EXPIRE_SQL = f"""
WITH ended AS (
    UPDATE messages SET fresh_next = NULL, fresh_left = 0
    WHERE id = ANY(%(ids)s) AND fresh_left > 0
)
UPDATE deliveries AS d SET status = 'expired', fresh = false
FROM messages AS m
WHERE m.id = d.message_id AND d.message_id = ANY(%(ids)s)
  AND d.status IN ('pending', 'retrying') AND NOT {RANGE_LEASED}
"""
_FIND_SQL = """
SELECT d.id, d.status, d.sent_at FROM messages AS m
JOIN deliveries AS d ON d.message_id = m.id AND d.recipient = %s
WHERE m.uid = %s FOR NO KEY UPDATE OF d
"""
_HELD_SQL = """
WITH applied AS (
    SELECT d.id, h.uid, h.recipient, h.status, h.at
    FROM deliveries AS d JOIN messages AS m ON m.id = d.message_id
    JOIN held_dlrs AS h ON h.uid = m.uid AND h.recipient = d.recipient
    WHERE d.id = ANY(%s)
), moved AS (
    UPDATE deliveries AS d SET status = a.status, dlr_at = a.at FROM applied AS a
    WHERE d.id = a.id
)
DELETE FROM held_dlrs AS h USING applied AS a WHERE h.uid = a.uid AND h.recipient = a.recipient
"""
_SENT_FAMILY = frozenset({"sent", "delivered", "undelivered", "expired"})


def lock_opt_outs(conn: Connection, tenant: str, *, exclusive: bool) -> None:
    """The tenant's opt-out lock until the transaction ends (module docstring)."""
    conn.execute(_LOCK_SQL.format(mode="" if exclusive else "_shared"),
                 (LOCK_CLASS + _OPT_OUT_LOCK, tenant))


def lock_claims(conn: Connection) -> None:
    """The claims' lock until the transaction ends: no claim runs beside it."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))",
                 (LOCK_CLASS + _CLAIM_LOCK,))


def lock_tenants_of(conn: Connection, delivery_ids: list[int]) -> None:
    """The opt-out locks, shared, of the tenants whose deliveries these are (a settle that
    gives them back)."""
    if delivery_ids:
        for (tenant,) in conn.execute(_TENANTS_OF_SQL, (delivery_ids,)).fetchall():
            lock_opt_outs(conn, tenant, exclusive=False)


def add_opt_outs(conn: Connection, tenant: str, phones: list[str],
                 now: float) -> OptOutResult:
    """``OptOutStore.add_opt_outs`` (phones in stored form, distinct)."""
    lock_claims(conn)
    lock_opt_outs(conn, tenant, exclusive=True)
    added = conn.execute("INSERT INTO opt_outs (tenant, phone, created_at) SELECT %s, p, %s "
                         "FROM unnest(%s::text[]) AS p ON CONFLICT DO NOTHING",
                         (tenant, now, phones)).rowcount
    holders = [row[0] for row in conn.execute(_HOLDERS_SQL, {"tenant": tenant,
                                                             "phones": phones})]
    touched: list[int] = []
    if holders:
        rows = conn.execute(_SUPPRESS_SQL, {"ids": holders, "phones": phones}).fetchall()
        leave_run(conn, Counter(message_id for message_id, fresh in rows if fresh))
        touched = [row[0] for row in rows]
    complete_done(conn, touched, now)
    return OptOutResult(added=added, suppressed=len(touched))


def remove_opt_out(conn: Connection, tenant: str, phone: str) -> bool:
    return conn.execute("DELETE FROM opt_outs WHERE tenant = %s AND phone = %s",
                        (tenant, phone)).rowcount > 0


def list_opt_outs(conn: Connection, tenant: str, after: str | None,
                  limit: int) -> list[OptOut]:
    query = "SELECT phone, created_at FROM opt_outs WHERE tenant = %s"
    params: list[object] = [tenant]
    if after is not None:
        query += " AND phone > %s"
        params.append(after)
    rows = conn.execute(query + " ORDER BY phone LIMIT %s",
                        [*params, limit]).fetchall()
    return [OptOut(tenant=tenant, phone=phone, created_at=at) for phone, at in rows]


def suppress_listed(conn: Connection, message_id: int, tenant: str) -> int:
    """Suppress a message's just-copied pending deliveries to listed numbers (the caller
    holds the tenant's opt-out lock); returns how many. Free for a tenant with no
    opt-outs."""
    if conn.execute("SELECT 1 FROM opt_outs WHERE tenant = %s LIMIT 1",
                    (tenant,)).fetchone() is None:
        return 0
    return conn.execute(_SUPPRESS_NEW_SQL, {"tenant": tenant, "message": message_id}).rowcount


def complete_done(conn: Connection, message_ids: Iterable[int], now: float) -> None:
    """Complete those of ``message_ids`` that are scheduled or dispatching with nothing
    open left.

    Why the lock first, in a statement of its own: two settles of a message's last leases,
    side by side, each see the other's rows as still leased until it commits; tested in
    one statement, both would find something open and the message would stay dispatching
    for ever (as it could before version 4). Locked, the second waits for the first to
    commit, and its test, a new statement, sees what the first did. Only a message with no
    fresh run left can be done, so a broadcast's settles lock nothing until its last chunk
    is leased."""
    ids = sorted(set(message_ids))
    if not ids:
        return
    closing = [row[0] for row in conn.execute(_CLOSING_SQL, {"ids": ids})]
    if closing:
        conn.execute(_COMPLETE_SQL, {"now": now, "ids": closing})


def after_rescue(conn: Connection, rescued: Sequence[tuple[Any, ...]], now: float) -> None:
    """What a claim does after its lease rescue (``rescued``: the rows it moved, as
    (message id, new status)): complete the messages a suppressed rescue left with nothing
    open, then the expiry sweep (``DispatchStore.claim``): pending and retrying deliveries
    of open messages past their validity end become ``expired``."""
    done = [row[0] for row in rescued if row[1] == "suppressed"]
    lapsed = [row[0] for row in conn.execute(_LAPSED_SQL, {"now": now})]
    if lapsed:
        conn.execute(_EXPIRE_SQL, {"ids": lapsed})
    complete_done(conn, done + lapsed, now)


def apply_held_dlrs(conn: Connection, delivery_ids: list[int]) -> None:
    """Apply the receipts held for deliveries just recorded ``sent``."""
    if delivery_ids and conn.execute("SELECT 1 FROM held_dlrs LIMIT 1").fetchone() is not None:
        conn.execute(_HELD_SQL, (delivery_ids,))


def record_dlrs(conn: Connection, reports: Sequence[DlrReport]) -> DlrResult:
    """``DlrStore.record_dlrs`` on checked reports, in order; each delivery found is
    row-locked, so a settle recording its send waits or has committed (then its held
    receipts are applied by it, or this one sees it sent)."""
    outcomes: list[DlrOutcome] = []
    for key, status, at in reports:
        uid, recipient = split_key(key)
        row = conn.execute(_FIND_SQL, (recipient, uid)).fetchone()
        if row is None:
            outcomes.append(DlrOutcome.UNKNOWN)
            continue
        delivery_id, current, sent_at = row
        if current not in _SENT_FAMILY or sent_at is None:
            outcomes.append(_hold(conn, uid, recipient, status, at))
            continue
        verdict = dlr_outcome(current, status)
        if verdict is DlrOutcome.APPLIED:
            conn.execute("UPDATE deliveries SET status = %s, dlr_at = %s WHERE id = %s",
                         (status, at, delivery_id))
        outcomes.append(verdict)
    return DlrResult(outcomes=tuple(outcomes))


def _hold(conn: Connection, uid: str, recipient: str, status: str, at: float) -> DlrOutcome:
    held = conn.execute("SELECT status FROM held_dlrs WHERE uid = %s AND recipient = %s "
                        "FOR UPDATE", (uid, recipient)).fetchone()
    if held is not None:
        verdict = dlr_outcome(held[0], status)
        if verdict is not DlrOutcome.APPLIED:
            return verdict
    conn.execute("INSERT INTO held_dlrs (uid, recipient, status, at) VALUES (%s, %s, %s, %s) "
                 "ON CONFLICT (uid, recipient) DO UPDATE SET status = excluded.status, "
                 "at = excluded.at", (uid, recipient, status, at))
    return DlrOutcome.HELD
