"""The ``OptOutStore`` and ``DlrStore`` parts of ``SqliteStore``: the ``opt_outs`` and
``held_dlrs`` tables and the deliveries they move, with the kept counts.

Helpers take an open connection inside the caller's transaction; none commits.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Sequence

from sms_sim.dispatch.dlrs import DlrOutcome, DlrReport, DlrResult, dlr_outcome, split_key
from sms_sim.dispatch.optouts import OptOut, OptOutResult
from sms_sim.dispatch.stores.sqlite.rows import add_counts, complete_done

__all__ = ["add_opt_outs", "remove_opt_out", "list_opt_outs", "suppress_listed",
           "record_dlrs"]

# The tenant's not-yet-leased deliveries (of one status, ?1) to the listed phones (JSON,
# ?2): the unique (message_id, recipient) index probed once per phone and open message of
# the tenant (CROSS JOIN fixes that order: by status, SQLite would walk every pending
# delivery of those messages, a million for a broadcast).
_SUPPRESS_SQL = """
UPDATE deliveries SET status = 'suppressed'
WHERE id IN (SELECT d.id FROM messages AS m CROSS JOIN json_each(?2) AS p
             CROSS JOIN deliveries AS d ON d.message_id = m.id AND d.recipient = p.value
             WHERE m.tenant = ?3 AND m.status IN ('loading', 'scheduled', 'dispatching')
               AND d.status = ?1)
RETURNING message_id
"""
# New pending deliveries (ids ?1 to ?2) to numbers on the tenant's (?3) list: the rows
# just inserted by primary key, each checked against the list's primary key, so a chunk
# costs its own size however large the message already is.
_SUPPRESS_NEW_SQL = """
UPDATE deliveries SET status = 'suppressed'
WHERE id BETWEEN ?1 AND ?2 AND status = 'pending'
  AND EXISTS (SELECT 1 FROM opt_outs WHERE tenant = ?3 AND phone = deliveries.recipient)
RETURNING message_id
"""
_FIND_SQL = """
SELECT d.id, d.message_id, d.status, d.sent_at FROM messages m
JOIN deliveries d ON d.message_id = m.id AND d.recipient = ?2
WHERE m.uid = ?1 AND m.status != 'loading'
"""
# Statuses a receipt can move (``expired`` only once sent: ``sent_at`` tells).
_SENT_FAMILY = frozenset({"sent", "delivered", "undelivered", "expired"})


def add_opt_outs(conn: sqlite3.Connection, tenant: str, phones: list[str],
                 now: float) -> OptOutResult:
    """``OptOutStore.add_opt_outs`` (phones already in stored form, distinct)."""
    added = conn.executemany("INSERT OR IGNORE INTO opt_outs (tenant, phone, created_at) "
                             "VALUES (?, ?, ?)", [(tenant, p, now) for p in phones]).rowcount
    listed = json.dumps(phones)
    changes: Counter[tuple[int, str]] = Counter()
    for was in ("pending", "retrying"):
        for (message_id,) in conn.execute(_SUPPRESS_SQL, (was, listed, tenant)).fetchall():
            changes[message_id, was] -= 1
            changes[message_id, "suppressed"] += 1
    add_counts(conn, changes)
    complete_done(conn, {message_id for message_id, _ in changes}, now)
    suppressed = sum(n for (_, status), n in changes.items() if status == "suppressed")
    return OptOutResult(added=added, suppressed=suppressed)


def remove_opt_out(conn: sqlite3.Connection, tenant: str, phone: str) -> bool:
    return conn.execute("DELETE FROM opt_outs WHERE tenant = ? AND phone = ?",
                        (tenant, phone)).rowcount > 0


def list_opt_outs(conn: sqlite3.Connection, tenant: str, after: str | None,
                  limit: int) -> list[OptOut]:
    rows = conn.execute("SELECT phone, created_at FROM opt_outs WHERE tenant = ?1 AND "
                        "(?2 IS NULL OR phone > ?2) ORDER BY phone LIMIT ?3",
                        (tenant, after, limit)).fetchall()
    return [OptOut(tenant=tenant, phone=phone, created_at=at) for phone, at in rows]


def suppress_listed(conn: sqlite3.Connection, message_id: int, tenant: str,
                    first_id: int, last_id: int) -> int:
    """Suppress a message's just-inserted pending deliveries (ids ``first_id`` to
    ``last_id``) to numbers on ``tenant``'s list (submit, edit); returns how many, with the
    counts kept. Free for a tenant with no opt-outs."""
    if conn.execute("SELECT 1 FROM opt_outs WHERE tenant = ? LIMIT 1",
                    (tenant,)).fetchone() is None:
        return 0
    suppressed = len(conn.execute(_SUPPRESS_NEW_SQL, (first_id, last_id, tenant)).fetchall())
    add_counts(conn, Counter({(message_id, "pending"): -suppressed,
                              (message_id, "suppressed"): suppressed}))
    return suppressed


def record_dlrs(conn: sqlite3.Connection, reports: Sequence[DlrReport]) -> DlrResult:
    """``DlrStore.record_dlrs`` on checked reports, one at a time in order (each a few
    primary-key probes)."""
    outcomes: list[DlrOutcome] = []
    changes: Counter[tuple[int, str]] = Counter()
    for key, status, at in reports:
        uid, recipient = split_key(key)
        row = conn.execute(_FIND_SQL, (uid, recipient)).fetchone()
        if row is None:
            outcomes.append(DlrOutcome.UNKNOWN)
            continue
        delivery_id, message_id, current, sent_at = row
        if current not in _SENT_FAMILY or sent_at is None:
            outcomes.append(_hold(conn, uid, recipient, status, at))
            continue
        verdict = dlr_outcome(current, status)
        if verdict is DlrOutcome.APPLIED:
            conn.execute("UPDATE deliveries SET status = ?, dlr_at = ? WHERE id = ?",
                         (status, at, delivery_id))
            changes[message_id, current] -= 1
            changes[message_id, status] += 1
        outcomes.append(verdict)
    add_counts(conn, changes)
    return DlrResult(outcomes=tuple(outcomes))


def _hold(conn: sqlite3.Connection, uid: str, recipient: str, status: str,
          at: float) -> DlrOutcome:
    held = conn.execute("SELECT status FROM held_dlrs WHERE uid = ? AND recipient = ?",
                        (uid, recipient)).fetchone()
    if held is not None:
        verdict = dlr_outcome(held[0], status)
        if verdict is not DlrOutcome.APPLIED:
            return verdict
    conn.execute("INSERT INTO held_dlrs (uid, recipient, status, at) VALUES (?, ?, ?, ?) "
                 "ON CONFLICT (uid, recipient) DO UPDATE SET status = excluded.status, "
                 "at = excluded.at", (uid, recipient, status, at))
    return DlrOutcome.HELD
