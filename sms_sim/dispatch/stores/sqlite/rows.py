"""SQL statements and row helpers of ``SqliteStore``, kept apart so the store reads as logic.

Helpers take an open connection inside the caller's transaction; none commits.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from sms_sim.dispatch.contract import (
    DeliveryStatus,
    DeliveryView,
    MessageStatus,
    MessageView,
    SettleKind,
)
from sms_sim.dispatch.errors import NotFoundError, StoreBusyError, StoreDamagedError, StoreError
from sms_sim.dispatch.validation import could_be_an_id, cursor_bounds

__all__ = [
    "MESSAGE_COLUMNS",
    "DELIVERY_COLUMNS",
    "LEASE_SQL",
    "SERVED_SQL",
    "KEPT_SQL",
    "STILL_DUE_SQL",
    "SETTLE_SENT_SQL",
    "SETTLE_SQL",
    "describe",
    "store_error",
    "message_state",
    "counts",
    "delivery_counts",
    "message_count",
    "delivery_views",
    "message_views",
    "views",
]

MESSAGE_COLUMNS = (
    "id, content, status, scheduled_at, created_at, updated_at, version, "
    "dispatch_started_at, completed_at, idempotency_key, priority, uid, tenant, receipt"
)
DELIVERY_COLUMNS = (
    "id, message_id, recipient, status, attempts, next_attempt_at, lease_owner, lease_until, "
    "sent_at, last_error, lease_losses"
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
# Which of the given messages (JSON ids) still have a delivery due at ?2.
STILL_DUE_SQL = """
SELECT DISTINCT message_id FROM deliveries
WHERE message_id IN (SELECT value FROM json_each(?1)) AND status IN ('retrying', 'pending')
  AND next_attempt_at <= ?2
"""
# A completion counts only from the lease holder, for this attempt, while the lease runs.
FENCE = ("WHERE id = ? AND status = 'leased' AND lease_owner = ? AND attempts = ? "
         "AND lease_until > ?")
SETTLE_SENT_SQL = """
UPDATE deliveries SET status = 'sent', sent_at = ?1, lease_owner = NULL, lease_until = NULL
FROM (SELECT value ->> 0 AS fenced_id, value ->> 1 AS fenced_attempts FROM json_each(?3)) AS f
WHERE deliveries.id = f.fenced_id AND deliveries.status = 'leased'
  AND deliveries.lease_owner = ?2 AND deliveries.attempts = f.fenced_attempts
  AND deliveries.lease_until > ?1
RETURNING message_id
"""
SETTLE_SQL: dict[SettleKind, str] = {
    # A claim given back under a message cancelled meanwhile is cancelled, not pending:
    # pending under a cancelled message would never be claimed nor closed.
    SettleKind.RELEASE: "UPDATE deliveries SET status = CASE WHEN (SELECT status FROM messages "
                        "WHERE messages.id = deliveries.message_id) = 'cancelled' "
                        "THEN 'cancelled' ELSE 'pending' END, attempts = attempts - 1, "
                        f"lease_owner = NULL, lease_until = NULL {FENCE}",
    SettleKind.DEAD: "UPDATE deliveries SET status = 'dead', last_error = ?, lease_owner = NULL, "
                     f"lease_until = NULL {FENCE}",
    SettleKind.RETRY: "UPDATE deliveries SET status = CASE WHEN (SELECT status FROM messages "
                      "WHERE messages.id = deliveries.message_id) = 'cancelled' THEN 'cancelled' "
                      "ELSE 'retrying' END, last_error = ?, next_attempt_at = ?, "
                      f"lease_owner = NULL, lease_until = NULL {FENCE}",
}


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
        return StoreDamagedError(f"database {path!r} is damaged ({exc}); stop using it, run "
                                 "'check' on it and restore it from a backup")
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


def counts(conn: sqlite3.Connection, message_id: int) -> dict[DeliveryStatus, int]:
    counts = dict.fromkeys(DeliveryStatus, 0)
    for status, count in conn.execute(
        "SELECT status, COUNT(*) FROM deliveries WHERE message_id = ? GROUP BY status",
        (message_id,),
    ):
        counts[DeliveryStatus(status)] = count
    return counts


# A listing's filters, as ``?1`` id, ``?2`` status, ``?3`` before, ``?4`` tenant (each NULL:
# no filter). A message still loading is never listed nor counted: readers see a submit
# whole or not at all.
_MESSAGE_FILTER = ("WHERE (?1 IS NULL OR id = ?1) AND (?2 IS NULL OR status = ?2) "
                   "AND (?3 IS NULL OR id < ?3) AND (?4 IS NULL OR tenant = ?4) "
                   "AND status != 'loading'")


def message_views(conn: sqlite3.Connection, *, message_id: int | None,
                  status: MessageStatus | None, before: int | None, limit: int,
                  newest_first: bool, tenant: str | None) -> list[MessageView]:
    """``DispatchStore.messages`` on checked arguments (``check_listing``)."""
    before, _ = cursor_bounds(before, None)
    order = "DESC" if newest_first else "ASC"
    return views(conn, f"{_MESSAGE_FILTER} ORDER BY id {order} LIMIT ?5",
                 (message_id, _text(status), before, tenant, limit))


def message_count(conn: sqlite3.Connection, *, status: MessageStatus | None,
                  before: int | None, tenant: str | None) -> int:
    """``DispatchStore.count_messages`` on checked arguments."""
    before, _ = cursor_bounds(before, None)
    (count,) = conn.execute(f"SELECT COUNT(*) FROM messages {_MESSAGE_FILTER}",
                            (None, _text(status), before, tenant)).fetchone()
    return int(count)


def delivery_counts(conn: sqlite3.Connection, tenant: str | None) -> dict[DeliveryStatus, int]:
    """``DispatchStore.delivery_counts``: deliveries of visible messages by status."""
    found = dict.fromkeys(DeliveryStatus, 0)
    for status, count in conn.execute(
        "SELECT status, COUNT(*) FROM deliveries WHERE message_id IN (SELECT id FROM "
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
                     sent_at=r[8], last_error=r[9], lease_losses=r[10])
        for r in rows
    ]


def _text(status: MessageStatus | DeliveryStatus | None) -> str | None:
    return None if status is None else str(status)


def views(conn: sqlite3.Connection, where: str, params: Sequence[object]) -> list[MessageView]:
    # Messages still loading are invisible: a reader sees a submit whole or not at all.
    rows = conn.execute(f"SELECT {MESSAGE_COLUMNS} FROM (SELECT * FROM messages WHERE status "
                        f"!= 'loading') AS messages {where}", params).fetchall()
    return [
        MessageView(id=r[0], content=r[1], status=MessageStatus(r[2]), scheduled_at=r[3],
                    created_at=r[4], updated_at=r[5], version=r[6], dispatch_started_at=r[7],
                    completed_at=r[8], idempotency_key=r[9], priority=r[10],
                    counts=counts(conn, r[0]), uid=r[11], tenant=r[12], receipt=r[13])
        for r in rows
    ]
