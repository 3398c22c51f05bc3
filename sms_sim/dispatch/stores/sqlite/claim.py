"""``SqliteStore.claim``: the lease rescue, the expiry sweep, the fair split and the leases,
in the caller's write transaction (SQLite has one writer, so claims are serialised and each
sees the serve order the one before it left, as in the memory store).

Helpers take an open connection inside the caller's transaction; none commits.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections import Counter
from typing import Any

from sms_sim.dispatch.contract import Claim, effective_priority, new_claim
from sms_sim.dispatch.stores.common import (
    EXPIRED_LEASE_ERROR,
    raised_classes,
)
from sms_sim.dispatch.stores.fairness import DueMessage, fair_split
from sms_sim.dispatch.stores.sqlite.rows import (
    DUE_RETRIES_SQL,
    KEPT_SQL,
    LEASE_SQL,
    READY_SQL,
    RESCUE_STATUS_SQL,
    SERVED_SQL,
    STILL_DUE_SQL,
    add_counts,
    complete_done,
    expire_lapsed,
    moved,
)

__all__ = ["claim_deliveries"]


def claim_deliveries(conn: sqlite3.Connection, owner: str, limit: int, lease_s: float,
                     now: float, jump_s: float) -> list[Claim]:
    """``DispatchStore.claim`` on checked arguments (``limit`` > 0); ``jump_s``: how far
    past ``now`` a lease's grant proves the clock jumped back."""
    lease_until = now + lease_s
    claims: list[Claim] = []
    # Rescue: one statement, so the compare (still leased, lease expired) and the
    # set cannot be split by a completion landing in between. A lease granted more
    # than ``jump_s`` after our ``now`` was granted before the clock jumped back: it
    # is reclaimed too. Leases from before schema 4 have no grant time: their end
    # less our length stands in.
    rescued = conn.execute(
        f"UPDATE deliveries SET status = {RESCUE_STATUS_SQL}, "
        "next_attempt_at = ?1, lease_owner = NULL, "
        "lease_until = NULL, leased_at = NULL, last_error = ?2, "
        "lease_losses = lease_losses + 1 WHERE status = 'leased' AND (lease_until <= ?1 "
        "OR COALESCE(leased_at, lease_until - ?3) > ?1 + ?4) "
        "RETURNING message_id, status",
        (now, EXPIRED_LEASE_ERROR, lease_s, jump_s),
    ).fetchall()
    add_counts(conn, moved(rescued, "leased"))
    complete_done(conn, [m for m, status in rescued if status == "suppressed"], now)
    expire_lapsed(conn, now)
    changes: Counter[tuple[int, str]] = Counter()
    # Never served first (NULLs sort first), oldest due first; then least recently. Each
    # with how many deliveries it could lease (up to the limit: no share is larger).
    due = conn.execute(
        "SELECT id, content, priority, uid, COALESCE(served_at, scheduled_at), "
        "kept_class, tenant, valid_until, "
        f"(SELECT COUNT(*) FROM ({READY_SQL} LIMIT ?2)) FROM messages AS m "
        "WHERE status IN ('scheduled', 'dispatching') AND scheduled_at <= ?1 "
        "AND (valid_until IS NULL OR valid_until > ?1) "
        "ORDER BY served_seq, scheduled_at, id",
        (now, limit),
    ).fetchall()
    content = {row[0]: row for row in due}
    # A tenant's last serve is one of its messages', so messages hold the maximum.
    (last_served,) = conn.execute("SELECT MAX(served_seq) FROM messages").fetchone()
    serves = itertools.count((last_served or 0) + 1)
    served: dict[int, int] = {}  # message id -> its serve order in this claim
    tenants_served: dict[str, int] = {}  # the same for tenants

    classes = {row[0]: effective_priority(row[2], row[4], now, row[5]) for row in due}
    grants = fair_split([DueMessage(row[6], classes[row[0]], row[0], row[8]) for row in due],
                        limit, _tenant_serves(conn, {row[6] for row in due}))
    for message_id, count in grants:
        (retries,) = conn.execute(DUE_RETRIES_SQL, (message_id, now, count)).fetchone()
        rows = conn.execute(LEASE_SQL, (owner, lease_until, now, message_id, now,
                                        count)).fetchall()
        retries = min(retries, len(rows))
        changes[message_id, "retrying"] -= retries
        changes[message_id, "pending"] -= len(rows) - retries
        changes[message_id, "leased"] += len(rows)
        rows.sort()
        _, text, _, uid, _, _, tenant, valid_until, _ = content[message_id]
        priority = classes[message_id]
        claims.extend(
            new_claim((delivery_id, message_id, recipient, text, attempts, lease_until,
                       lease_losses, uid, priority, valid_until))
            for delivery_id, recipient, attempts, lease_losses in rows
        )
        served[message_id] = tenants_served[tenant] = next(serves)
    add_counts(conn, changes)
    if served:
        conn.execute(SERVED_SQL, (now, json.dumps(list(served.items()))))
        conn.executemany("INSERT INTO tenants (name, served_seq) VALUES (?, ?) ON "
                         "CONFLICT (name) DO UPDATE SET served_seq = excluded.served_seq",
                         tenants_served.items())
    _keep_classes(conn, due, classes, served, now)
    return claims


def _tenant_serves(conn: sqlite3.Connection, tenants: set[str]) -> dict[str, int]:
    """The last serve of each of ``tenants`` that was ever served."""
    if len(tenants) < 2:
        return {}  # one tenant has no one to go before
    return dict(conn.execute("SELECT name, served_seq FROM tenants WHERE name IN "
                             "(SELECT value FROM json_each(?))",
                             (json.dumps(sorted(tenants)),)).fetchall())


def _keep_classes(conn: sqlite3.Connection, due: list[tuple[Any, ...]],
                  classes: dict[int, int], served: dict[int, int], now: float) -> None:
    """Aging after a claim (``effective_priority``): a message served above its priority
    keeps that class; a kept class is dropped once nothing of the message is due."""
    kept = raised_classes({row[0]: row[5] for row in due}, {row[0]: row[2] for row in due},
                          classes, served)
    holders = list(kept)
    if not holders:
        return
    still = {row[0] for row in conn.execute(STILL_DUE_SQL, (json.dumps(holders), now))}
    changes = [[m, kept[m] if m in still else None] for m in holders]
    conn.execute(KEPT_SQL, (json.dumps(changes),))
