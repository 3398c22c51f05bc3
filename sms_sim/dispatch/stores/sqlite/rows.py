"""SQL statements and row helpers of ``SqliteStore``, kept apart so the store reads as logic.

Helpers take an open connection inside the caller's transaction; none commits.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from sms_sim.dispatch.contract import (
    DeliveryStatus,
    DeliveryView,
    MessageStatus,
    MessageView,
    SettleKind,
)
from sms_sim.dispatch.errors import NotFoundError, StoreBusyError, StoreDamagedError, StoreError
from sms_sim.dispatch.stores.common import stored_shape
from sms_sim.dispatch.validation import could_be_an_id, cursor_bounds

__all__ = [
    "MESSAGE_COLUMNS",
    "DELIVERY_COLUMNS",
    "LEASE_SQL",
    "DUE_RETRIES_SQL",
    "READY_SQL",
    "COUNTS_DISAGREE_SQL",
    "SERVED_SQL",
    "KEPT_SQL",
    "STILL_DUE_SQL",
    "SETTLE_SENT_SQL",
    "SETTLE_SQL",
    "RESCUE_STATUS_SQL",
    "add_counts",
    "complete_done",
    "expire_lapsed",
    "apply_held_dlrs",
    "moved",
    "describe",
    "store_error",
    "message_state",
    "counts",
    "delivery_counts",
    "message_count",
    "delivery_views",
    "message_views",
    "views",
    "message_view",
]

MESSAGE_COLUMNS = (
    "id, content, status, scheduled_at, created_at, updated_at, version, "
    "dispatch_started_at, completed_at, idempotency_key, priority, uid, tenant, receipt, "
    "encoding, segments, valid_until"
)
DELIVERY_COLUMNS = (
    "id, message_id, recipient, status, attempts, next_attempt_at, lease_owner, lease_until, "
    "sent_at, last_error, lease_losses, dlr_at"
)
# Due retries first, then pending ('retrying' sorts after 'pending', hence status DESC), each
# by due time and id: the order of the deliveries_ready index (status DESC in it too), so the
# IN walks it without a sort. With status ascending in the index, SQLite would sort the rest
# of the ORDER BY in a temporary b-tree, reading every due row of a status before the LIMIT.
LEASE_SQL = """
UPDATE deliveries SET status = 'leased', lease_owner = ?, lease_until = ?, leased_at = ?,
    attempts = attempts + 1
WHERE id IN (SELECT id FROM deliveries
             WHERE message_id = ? AND status IN ('retrying', 'pending') AND next_attempt_at <= ?
             ORDER BY status DESC, next_attempt_at, id LIMIT ?)
RETURNING id, recipient, attempts, lease_losses
"""
# The rows LEASE_SQL could take of message ``m`` at ``?1``, for the claim's count of them.
READY_SQL = """SELECT 1 FROM deliveries AS d WHERE d.message_id = m.id
    AND d.status IN ('retrying', 'pending') AND d.next_attempt_at <= ?1"""
# How many of the rows LEASE_SQL would take are due retries (it takes those first), so the
# counts know which status each leased row left.
DUE_RETRIES_SQL = """
SELECT COUNT(*) FROM (SELECT 1 FROM deliveries
                      WHERE message_id = ? AND status = 'retrying' AND next_attempt_at <= ?
                      LIMIT ?)
"""
# The messages a claim took from, with their new serve order, as JSON [[id, seq], ...].
SERVED_SQL = """
UPDATE messages SET status = 'dispatching', dispatch_started_at = COALESCE(dispatch_started_at, ?1),
    served_seq = s.seq, served_at = ?1, updated_at = ?1
FROM (SELECT value ->> 0 AS served_id, value ->> 1 AS seq FROM json_each(?2)) AS s
WHERE messages.id = s.served_id
"""
# Aging's kept classes after a claim, as JSON [[id, class or null], ...].
KEPT_SQL = """
UPDATE messages SET kept_class = k.kept
FROM (SELECT value ->> 0 AS kept_id, value ->> 1 AS kept FROM json_each(?1)) AS k
WHERE messages.id = k.kept_id
"""
# Which of the given messages (JSON ids) still have a delivery due at ?2: one index probe
# each (EXISTS stops at the first row), not a walk over every due row of a broadcast.
STILL_DUE_SQL = """
SELECT j.value FROM json_each(?1) AS j
WHERE EXISTS (SELECT 1 FROM deliveries WHERE message_id = j.value
              AND status IN ('retrying', 'pending') AND next_attempt_at <= ?2)
"""
_MOVED = "RETURNING message_id, status"
# A completion counts only from the lease holder, for this attempt, while the lease runs.
FENCE = ("WHERE id = ? AND status = 'leased' AND lease_owner = ? AND attempts = ? "
         "AND lease_until > ?")
# ``stores.common.sent_time`` in SQL: the reported send time, within the lease and ``now``.
SETTLE_SENT_SQL = """
UPDATE deliveries SET status = 'sent',
    sent_at = MAX(MIN(COALESCE(f.reported_at, ?1), ?1), COALESCE(deliveries.leased_at, -1e308)),
    lease_owner = NULL, lease_until = NULL
FROM (SELECT value ->> 0 AS fenced_id, value ->> 1 AS fenced_attempts,
             value ->> 2 AS reported_at FROM json_each(?3)) AS f
WHERE deliveries.id = f.fenced_id AND deliveries.status = 'leased'
  AND deliveries.lease_owner = ?2 AND deliveries.attempts = f.fenced_attempts
  AND deliveries.lease_until > ?1
RETURNING message_id, id
"""


def _given_back(status: str) -> str:
    """Where a delivery given back goes (a SQL expression on a ``deliveries`` row):
    ``status``, but ``cancelled`` under a message cancelled meanwhile (pending under a
    cancelled message would never be claimed nor closed) and ``suppressed`` for a number
    that opted out meanwhile (``OptOutStore.add_opt_outs``)."""
    return ("CASE (SELECT CASE WHEN m.status = 'cancelled' THEN 'cancelled' WHEN EXISTS "
            "(SELECT 1 FROM opt_outs o WHERE o.tenant = m.tenant AND o.phone = "
            "deliveries.recipient) THEN 'suppressed' END FROM messages m WHERE m.id = "
            "deliveries.message_id) WHEN 'cancelled' THEN 'cancelled' WHEN 'suppressed' THEN "
            f"'suppressed' ELSE {status!r} END")


# The rescue's new status for a lease that ran out (``_given_back`` of 'retrying').
RESCUE_STATUS_SQL = _given_back("retrying")
# Each RETURNING the message and the status the row moved to, for the counts.
SETTLE_SQL: dict[SettleKind, str] = {
    SettleKind.RELEASE: f"UPDATE deliveries SET status = {_given_back('pending')}, "
                        "attempts = attempts - 1, "
                        f"lease_owner = NULL, lease_until = NULL {FENCE} {_MOVED}",
    SettleKind.DEAD: "UPDATE deliveries SET status = 'dead', last_error = ?, lease_owner = NULL, "
                     f"lease_until = NULL {FENCE} {_MOVED}",
    SettleKind.RETRY: f"UPDATE deliveries SET status = {_given_back('retrying')}, "
                      "last_error = ?, next_attempt_at = ?, "
                      f"lease_owner = NULL, lease_until = NULL {FENCE} {_MOVED}",
}
# Scheduled or dispatching messages (JSON ids) with nothing open left are completed.
_COMPLETE_SQL = """
UPDATE messages SET status = 'completed', completed_at = ?1, updated_at = ?1
WHERE status IN ('scheduled', 'dispatching') AND id IN (SELECT value FROM json_each(?2))
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = messages.id
                  AND d.status IN ('pending', 'leased', 'retrying'))
"""
# Open messages past their validity end (the partial index messages_valid).
_LAPSED_SQL = """
SELECT id FROM messages WHERE valid_until IS NOT NULL AND valid_until <= ?
  AND status IN ('scheduled', 'dispatching')
"""
_EXPIRE_SQL = """
UPDATE deliveries SET status = 'expired'
WHERE status = ?1 AND message_id IN (SELECT value FROM json_each(?2))
RETURNING message_id
"""
# Receipts held for deliveries just recorded sent (JSON ids): applied, then dropped.
_HELD_SQL = """
SELECT d.id, d.message_id, h.uid, h.recipient, h.status, h.at
FROM deliveries d JOIN messages m ON m.id = d.message_id
JOIN held_dlrs h ON h.uid = m.uid AND h.recipient = d.recipient
WHERE d.id IN (SELECT value FROM json_each(?))
"""


def describe(path: str, exc: sqlite3.Error) -> str:
    text = str(exc) or type(exc).__name__
    return f"database {path!r}: {text}"


# Result codes that mean the file itself is damaged: no retry can help.
_DAMAGED_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def store_error(path: str, exc: sqlite3.Error, *, doing: str = "") -> StoreError:
    """The contract's error for a driver error: damaged, busy, or any other failure
    (prefixed with ``doing``, as in "cannot prepare")."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None and isinstance(exc, sqlite3.OperationalError):
        # Raised by the sqlite3 module itself, not SQLite: text that is not UTF-8, say.
        # The rows are unreadable, which no retry changes.
        return StoreDamagedError(f"database {path!r} holds data that cannot be read ({exc})")
    primary = None if code is None else code & 0xFF
    if primary in _DAMAGED_CODES:
        damaged = StoreDamagedError(f"database {path!r} is damaged ({exc}); stop using it, "
                                    "run 'check' on it and restore it from a backup")
        damaged.reason = str(exc)
        return damaged
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreBusyError(describe(path, exc))
    if doing:
        return StoreError(f"{doing} database {path!r}: {exc}")
    return StoreError(describe(path, exc))


def message_state(conn: sqlite3.Connection, message_id: int,
                  tenant: str | None = None) -> tuple[MessageStatus, int, float | None]:
    """A message's status, version and dispatch start; ``NotFoundError`` if it does not
    exist for ``tenant`` (None: for any tenant)."""
    row = None
    if could_be_an_id(message_id):
        # A message still loading does not exist yet for anyone but its loader.
        row = conn.execute("SELECT status, version, dispatch_started_at FROM messages "
                           "WHERE id = ?1 AND status != 'loading' AND (?2 IS NULL OR "
                           "tenant = ?2)", (message_id, tenant)).fetchone()
    if row is None:
        raise NotFoundError(f"no message with id {message_id}")
    return MessageStatus(row[0]), row[1], row[2]


# The first (message, status) whose kept count is not the number of its deliveries.
COUNTS_DISAGREE_SQL = """
SELECT message_id, status, kept, counted FROM (
    SELECT message_id, status, n AS kept, (SELECT COUNT(*) FROM deliveries d
        WHERE d.message_id = c.message_id AND d.status = c.status) AS counted
    FROM delivery_counts c
    UNION ALL
    SELECT message_id, status, 0, COUNT(*) FROM deliveries d WHERE NOT EXISTS (
        SELECT 1 FROM delivery_counts c WHERE c.message_id = d.message_id
        AND c.status = d.status) GROUP BY message_id, status)
WHERE kept != counted LIMIT 1
"""
_ADD_COUNT_SQL = ("INSERT INTO delivery_counts (message_id, status, n) VALUES (?, ?, ?) "
                  "ON CONFLICT (message_id, status) DO UPDATE SET n = n + excluded.n")


def add_counts(conn: sqlite3.Connection, changes: Counter[tuple[int, str]]) -> None:
    """Apply ``(message_id, status) -> change`` to ``delivery_counts``. Every statement
    that adds, removes or moves deliveries calls this in its transaction."""
    conn.executemany(_ADD_COUNT_SQL, [(m, s, n) for (m, s), n in changes.items() if n])


def complete_done(conn: sqlite3.Connection, message_ids: Iterable[int], now: float) -> None:
    """Complete those of ``message_ids`` that are scheduled or dispatching with nothing
    open left."""
    ids = sorted(set(message_ids))
    if ids:
        conn.execute(_COMPLETE_SQL, (now, json.dumps(ids)))


def expire_lapsed(conn: sqlite3.Connection, now: float) -> None:
    """The claim's expiry sweep: pending and retrying deliveries of open messages whose
    validity ended by ``now`` become ``expired``; the messages left with nothing open
    complete."""
    lapsed = json.dumps([row[0] for row in conn.execute(_LAPSED_SQL, (now,))])
    if lapsed == "[]":
        return
    changes: Counter[tuple[int, str]] = Counter()
    for was in ("pending", "retrying"):
        for (message_id,) in conn.execute(_EXPIRE_SQL, (was, lapsed)).fetchall():
            changes[message_id, was] -= 1
            changes[message_id, "expired"] += 1
    add_counts(conn, changes)
    complete_done(conn, json.loads(lapsed), now)


def apply_held_dlrs(conn: sqlite3.Connection, delivery_ids: list[int]) -> None:
    """Apply the receipts held for deliveries just recorded ``sent`` (``dlrs``)."""
    if not delivery_ids or conn.execute("SELECT 1 FROM held_dlrs LIMIT 1").fetchone() is None:
        return  # the hot path: nothing held, one probe of an empty table
    changes: Counter[tuple[int, str]] = Counter()
    for delivery_id, message_id, uid, recipient, status, at in conn.execute(
            _HELD_SQL, (json.dumps(delivery_ids),)).fetchall():
        conn.execute("UPDATE deliveries SET status = ?, dlr_at = ? WHERE id = ?",
                     (status, at, delivery_id))
        conn.execute("DELETE FROM held_dlrs WHERE uid = ? AND recipient = ?", (uid, recipient))
        changes[message_id, "sent"] -= 1
        changes[message_id, status] += 1
    add_counts(conn, changes)


def moved(rows: Iterable[tuple[int, str]], was: str) -> Counter[tuple[int, str]]:
    """The count changes of rows that moved from status ``was``: ``(message_id, status now)``
    as a statement's RETURNING gives them."""
    changes: Counter[tuple[int, str]] = Counter()
    for message_id, status in rows:
        changes[message_id, was] -= 1
        changes[message_id, status] += 1
    return changes


def counts(conn: sqlite3.Connection, message_id: int) -> dict[DeliveryStatus, int]:
    counts = dict.fromkeys(DeliveryStatus, 0)
    for status, count in conn.execute(
        "SELECT status, n FROM delivery_counts WHERE message_id = ?", (message_id,),
    ):
        counts[DeliveryStatus(status)] = count
    return counts


def _message_filter(message_id: int | None, before: int | None) -> str:
    """A listing's filters, as ``?1`` id, ``?2`` status, ``?3`` before, ``?4`` tenant (each
    NULL: no filter). A message still loading is never listed nor counted: readers see a
    submit whole or not at all.

    The id terms are written out only when given: SQLite plans ``(?1 IS NULL OR id = ?1)``
    once for any value, as a scan of every message, so reading one message back (each
    submit's answer, each GET) cost time in proportion to the table, 0.7 ms at 4,000
    messages (issue 12's submit benchmark); ``id = ?1`` is one rowid probe."""
    by_id = "(?1 IS NULL OR id = ?1)" if message_id is None else "id = ?1"
    below = "(?3 IS NULL OR id < ?3)" if before is None else "id < ?3"
    return (f"WHERE {by_id} AND (?2 IS NULL OR status = ?2) AND {below} "
            "AND (?4 IS NULL OR tenant = ?4) AND status != 'loading'")


def message_views(conn: sqlite3.Connection, *, message_id: int | None,
                  status: MessageStatus | None, before: int | None, limit: int,
                  newest_first: bool, tenant: str | None) -> list[MessageView]:
    """``DispatchStore.messages`` on checked arguments (``check_listing``)."""
    before, _ = cursor_bounds(before, None)
    order = "DESC" if newest_first else "ASC"
    return views(conn, f"{_message_filter(message_id, before)} ORDER BY id {order} LIMIT ?5",
                 (message_id, _text(status), before, tenant, limit))


def message_count(conn: sqlite3.Connection, *, status: MessageStatus | None,
                  before: int | None, tenant: str | None) -> int:
    """``DispatchStore.count_messages`` on checked arguments."""
    before, _ = cursor_bounds(before, None)
    (count,) = conn.execute(f"SELECT COUNT(*) FROM messages {_message_filter(None, before)}",
                            (None, _text(status), before, tenant)).fetchone()
    return int(count)


def delivery_counts(conn: sqlite3.Connection, tenant: str | None) -> dict[DeliveryStatus, int]:
    """``DispatchStore.delivery_counts``: deliveries of visible messages by status."""
    found = dict.fromkeys(DeliveryStatus, 0)
    for status, count in conn.execute(
        "SELECT status, SUM(n) FROM delivery_counts WHERE message_id IN (SELECT id FROM "
        "messages WHERE status != 'loading' AND (?1 IS NULL OR tenant = ?1)) GROUP BY status",
        (tenant,),
    ):
        found[DeliveryStatus(status)] = count
    return found


def delivery_views(conn: sqlite3.Connection, *, message_id: int | None,
                   status: DeliveryStatus | None, recipient: str | None, after: int | None,
                   limit: int, tenant: str | None) -> list[DeliveryView]:
    """``DispatchStore.deliveries`` on checked arguments."""
    _, after = cursor_bounds(None, after)
    rows = conn.execute(
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE (?1 IS NULL OR message_id = ?1) "
        "AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR recipient = ?3) "
        "AND (?4 IS NULL OR id > ?4) AND message_id NOT IN "
        "(SELECT id FROM messages WHERE status = 'loading' OR (?6 IS NOT NULL AND "
        "tenant != ?6)) ORDER BY id LIMIT ?5",
        (message_id, _text(status), recipient, after, limit, tenant),
    ).fetchall()
    return [
        DeliveryView(id=r[0], message_id=r[1], recipient=r[2], status=DeliveryStatus(r[3]),
                     attempts=r[4], next_attempt_at=r[5], lease_owner=r[6], lease_until=r[7],
                     sent_at=r[8], last_error=r[9], lease_losses=r[10], dlr_at=r[11])
        for r in rows
    ]


def _text(status: MessageStatus | DeliveryStatus | None) -> str | None:
    return None if status is None else str(status)


def views(conn: sqlite3.Connection, where: str, params: Sequence[object]) -> list[MessageView]:
    # Messages still loading are invisible: a reader sees a submit whole or not at all.
    rows = conn.execute(f"SELECT {MESSAGE_COLUMNS} FROM (SELECT * FROM messages WHERE status "
                        f"!= 'loading') AS messages {where}", params).fetchall()
    return [message_view(r, counts(conn, r[0])) for r in rows]


def message_view(r: tuple[Any, ...], by_status: dict[DeliveryStatus, int]) -> MessageView:
    """A row of ``MESSAGE_COLUMNS`` (a SELECT's, or an INSERT's RETURNING) as a view."""
    encoding, count = stored_shape(r[1], r[14], r[15])
    return MessageView(id=r[0], content=r[1], status=MessageStatus(r[2]), scheduled_at=r[3],
                       created_at=r[4], updated_at=r[5], version=r[6], dispatch_started_at=r[7],
                       completed_at=r[8], idempotency_key=r[9], priority=r[10],
                       counts=by_status, uid=r[11], tenant=r[12], receipt=r[13],
                       encoding=encoding, segments=count, valid_until=r[16])
