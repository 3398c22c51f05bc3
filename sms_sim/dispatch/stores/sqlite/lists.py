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
# ?2): the unique (message_id, recipient) index, probed once per open message of the tenant.
_SUPPRESS_SQL = """
UPDATE deliveries SET status = 'suppressed'
WHERE status = ?1 AND recipient IN (SELECT value FROM json_each(?2))
  AND message_id IN (SELECT id FROM messages WHERE tenant = ?3
                     AND status IN ('loading', 'scheduled', 'dispatching'))
RETURNING message_id
"""
# A message's new pending deliveries to numbers on its tenant's list.
_SUPPRESS_NEW_SQL = """
UPDATE deliveries SET status = 'suppressed'
WHERE message_id = ?1 AND status = 'pending'
  AND recipient IN (SELECT phone FROM opt_outs WHERE tenant = ?2)
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


def suppress_listed(conn: sqlite3.Connection, message_id: int, tenant: str) -> int:
    """Suppress a message's just-inserted pending deliveries to listed numbers (submit,
    edit); returns how many, with the counts kept."""
    suppressed = conn.execute(_SUPPRESS_NEW_SQL, (message_id, tenant)).rowcount
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
