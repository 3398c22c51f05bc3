"""SQL and row helpers of ``PostgresStore``: settling, reading, and the message-level checks,
kept apart so the store reads as logic. Helpers run inside the caller's transaction (or
as one autocommit statement); none commits.

Listings build their ``WHERE`` from fixed fragments for the filters given, so each shape
gets a plan that uses its index (an ``(%s IS NULL OR ...)`` filter would not).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from psycopg.types.json import Jsonb

from sms_sim.dispatch.contract import (
    DeliveryStatus,
    DeliveryView,
    MessageStatus,
    MessageView,
    SettleKind,
    Settlement,
)
from sms_sim.dispatch.errors import NotFoundError
from sms_sim.dispatch.stores.common import stored_shape
from sms_sim.dispatch.stores.postgres.chunk import RANGE_LEASE_OF, STATUS
from sms_sim.dispatch.stores.postgres.lists import (
    apply_held_dlrs,
    complete_done,
    lock_claims,
    lock_tenants_of,
)
from sms_sim.dispatch.stores.postgres.schema import Connection, id_array, time_array
from sms_sim.dispatch.validation import INT64_MAX, could_be_an_id, cursor_bounds

__all__ = [
    "message_state",
    "settle_rows",
    "requeue_rows",
    "message_views",
    "created_view",
    "message_count",
    "delivery_views",
    "delivery_counts",
    "status_counts",
]

# Every kind of report in one statement, each row fenced by status, owner, attempt and a running
# lease, found by primary key alone: a row's report is looked up in a JSON object keyed by delivery
# id and attempt (``reports``: "id:attempts" -> [kind, error, retry_at]; a row whose attempt has no
# report is not this report's) rather than joined from arrays. A join gave the planner a choice, and
# it chose wrong whenever its estimate of leased rows fell to one: a nested loop rescanning the
# 1,000 reports for each of the 1,000 rows, 140-190 ms a batch against 6 ms. A given-back row
# (RETRY, RELEASE) under a message cancelled meanwhile becomes 'cancelled' (pending under a
# cancelled message would never be claimed nor closed), and to an opted-out number 'suppressed'.
# The rows change no indexed column (``schema._V4``), so each is a HOT update. Each row is fenced
# by the owner's lease row that holds it (``_MINE``, ``_FENCE``): a per-row lease by the row it
# names (``lease_id``) and the row's own end; a range lease (a fresh row in its range,
# ``chunk``) by the lease row's end, and its first attempt is counted now. The settled rows
# come off that lease row's ``open`` in the same statement. Never prepared (``prepare=False``
# where it runs): a generic plan cannot see how many ids the array holds.
#
# SENT reports (nearly all) go through ``_SENT_SQL`` instead: the same fencing, with no report
# to look up, only the attempt, so a statement per attempt number reported (one, in a
# broadcast's batch: every fresh delivery is on its first). The ids come as a text array, no
# JSON to build or parse. Server time per 1,000 leased rows among 300,000 (``EXPLAIN
# ANALYZE``, planning included, medians of 9, side by side): 7.5 ms, against 9.5 ms with a
# JSON lookup per row (the statement before); the general statement took 15.5 ms for
# them among 200,000 (an earlier measurement).
# A row's attempt as its claim gave it: a range-leased (fresh) row's lease is its first,
# not yet written.
_ATTEMPT = "(d.attempts + d.fresh::int)"
_REPORT = f"(%(reports)s::jsonb -> (d.id::text || ':' || {_ATTEMPT}::text))"
_KIND = f"({_REPORT} ->> 0)"
# The rows reported, then each with the owner's open lease that holds it (a per-row lease
# by the lease row it names, and its own end; a range lease, a fresh row in its range, by
# the lease row's end), then the write, by row address, fenced again on the row itself so a
# row changed meanwhile (rescued, re-leased) is passed over. In three steps, each
# materialised, so the planner never drives the rows from the leases: it did, as a nested
# loop over them, each scanning its message's rows by range, 247 ms a settle of 1,000 with
# 33 leases open against 8 ms.
#
# The rows reported are read by primary key, one descent of the index an id (three pages
# each), unless their ids fill at least half their range, as a broadcast's batch does (its
# ids ascend in claim order): then by one range scan of the index, the ids a hashed filter
# (``+ 0`` keeps them out of the index condition). A settle of 1,000 sent, among 300,000,
# 11.2 ms against 13.0 (``EXPLAIN ANALYZE``, planning aside, medians of 12 side by side).
_BY_IDS = "d.id = ANY(%(ids)s::bigint[]) AND d.id BETWEEN %(least)s AND %(greatest)s"
_BY_RANGE = "d.id BETWEEN %(least)s AND %(greatest)s AND d.id + 0 = ANY(%(ids)s::bigint[])"
_READ = """
WITH mine AS MATERIALIZED (
    SELECT l.id, l.message_id, l.leased_at, l.until, l.first_id, l.last_id FROM leases AS l
    WHERE l.owner = %(owner)s AND l.open > 0
), reported AS MATERIALIZED (
    SELECT d.ctid AS address, d.id, d.message_id, d.fresh, d.status, d.lease_owner,
        d.lease_until, d.lease_id
    FROM deliveries AS d
    WHERE __ROWS__
), held AS MATERIALIZED (
    SELECT r.address, r.id, mine.id AS lease, mine.leased_at
    FROM reported AS r JOIN mine ON mine.message_id = r.message_id
    WHERE CASE WHEN r.fresh THEN r.status = 'pending'
                   AND r.id BETWEEN mine.first_id AND mine.last_id AND mine.until > %(now)s
               ELSE r.status = 'leased' AND r.lease_owner = %(owner)s
                   AND r.lease_until > %(now)s AND r.lease_id = mine.id END
"""
_MINE = f"{_READ}), settled AS ("
_FENCE = """d.ctid = held.address AND d.id = held.id
      AND CASE WHEN d.fresh THEN d.status = 'pending'
               ELSE d.status = 'leased' AND d.lease_owner = %(owner)s
                   AND d.lease_until > %(now)s END"""
_CLOSE_LEASES = """
), closed AS (
    UPDATE leases AS l SET open = l.open - g.n
    FROM (SELECT lease, count(*) AS n FROM settled GROUP BY lease) AS g
    WHERE l.id = g.lease
)
SELECT message_id, id, status FROM settled
"""
_SETTLE_SQL = f"""{_MINE}
    UPDATE deliveries AS d SET
        status = CASE {_KIND} WHEN 'sent' THEN 'sent' WHEN 'dead' THEN 'dead'
            ELSE (SELECT CASE WHEN m.status = 'cancelled' THEN 'cancelled'
                      WHEN EXISTS (SELECT 1 FROM opt_outs AS o WHERE o.tenant = m.tenant
                                   AND o.phone = d.recipient) THEN 'suppressed'
                      WHEN {_KIND} = 'release' THEN 'pending' ELSE 'retrying' END
                  FROM messages AS m WHERE m.id = d.message_id) END,
        sent_at = CASE WHEN {_KIND} = 'sent' THEN %(now)s ELSE d.sent_at END,
        attempts = CASE WHEN {_KIND} = 'release' THEN {_ATTEMPT} - 1 ELSE {_ATTEMPT} END,
        last_error = CASE WHEN {_KIND} IN ('sent', 'release') THEN d.last_error
            ELSE {_REPORT} ->> 1 END,
        next_attempt_at = CASE WHEN {_KIND} = 'retry'
            THEN ({_REPORT} ->> 2)::float8 ELSE d.next_attempt_at END,
        lease_owner = NULL, lease_until = NULL, leased_at = held.leased_at, lease_id = NULL,
        fresh = false
    FROM held
    WHERE {_FENCE}
      AND {_REPORT} IS NOT NULL
    RETURNING d.message_id, d.id, d.status, held.lease{_CLOSE_LEASES}"""
# The send times reported come beside the ids (in the same order), matched to ``held`` in
# a step of their own: joined in the write, the planner read each row again by id instead
# of by address. ``sent_at`` is ``stores.common.sent_time``: the reported time, within the
# lease's start and ``now``.
_SENT_SQL = f"""{_READ}), stamped AS MATERIALIZED (
    SELECT held.address, held.id, held.lease, held.leased_at, t.at FROM held
    JOIN unnest(%(ids)s::bigint[], %(ats)b::float8[]) AS t(id, at) ON t.id = held.id
), settled AS (
    UPDATE deliveries AS d SET status = 'sent',
        sent_at = GREATEST(LEAST(held.at, %(now)s), held.leased_at), lease_owner = NULL,
        lease_until = NULL, leased_at = held.leased_at, lease_id = NULL, fresh = false,
        attempts = %(attempts)s
    FROM stamped AS held
    WHERE {_FENCE}
      AND {_ATTEMPT} = %(attempts)s
    RETURNING d.message_id, d.id, d.status, held.lease{_CLOSE_LEASES}"""
# Each statement in its two forms, by whether the ids are read by range.
_SETTLE_BY = {dense: _SETTLE_SQL.replace("__ROWS__", _BY_RANGE if dense else _BY_IDS)
              for dense in (False, True)}
_SENT_BY = {dense: _SENT_SQL.replace("__ROWS__", _BY_RANGE if dense else _BY_IDS)
            for dense in (False, True)}
_MESSAGE_COLUMNS_WITH = (
    "m.id, m.content, m.status, m.scheduled_at, m.created_at, m.updated_at, m.version, "
    "m.dispatch_started_at, m.completed_at, m.idempotency_key, m.priority, m.uid, m.tenant, "
    "m.receipt, {counts}, m.encoding, m.segments, m.valid_until"
)
_MESSAGE_COLUMNS = _MESSAGE_COLUMNS_WITH.format(
    counts=f"(SELECT json_object_agg(c.status, c.n) FROM (SELECT {STATUS} AS status, "
           "count(*) AS n FROM deliveries AS d WHERE d.message_id = m.id GROUP BY 1) AS c)")
# The same, the counts given (a JSON parameter, the first) instead of counted: a new
# message's are known, and counting a 1,000,000-recipient one would take a tenth of a second.
_GIVEN_COUNTS_COLUMNS = _MESSAGE_COLUMNS_WITH.format(counts="%s::json")
# A range-leased row (``chunk``) as its claim gave it: leased, on its first attempt, with
# its lease row's owner and end.
_DELIVERY_STATUS = "(CASE WHEN rl.owner IS NULL THEN d.status ELSE 'leased' END)"
_DELIVERY_COLUMNS = (
    f"d.id, d.message_id, d.recipient, {_DELIVERY_STATUS}, "
    "d.attempts + (rl.owner IS NOT NULL)::int, d.next_attempt_at, "
    "COALESCE(rl.owner, d.lease_owner), COALESCE(rl.until, d.lease_until), "
    "d.sent_at, d.last_error, d.lease_losses, d.dlr_at"
)


def message_state(conn: Connection, message_id: int, tenant: str | None, *,
                  lock: bool = False) -> tuple[MessageStatus, int, float | None]:
    """A message's status, version and dispatch start, row-locked if ``lock`` (until the
    transaction ends); ``NotFoundError`` if it does not exist for ``tenant``."""
    row = None
    if could_be_an_id(message_id):
        query = "SELECT status, version, dispatch_started_at FROM messages WHERE id = %s"
        params: list[object] = [message_id]
        if tenant is not None:
            query += " AND tenant = %s"
            params.append(tenant)
        row = conn.execute(query + (" FOR UPDATE" if lock else ""), params).fetchone()
    if row is None:
        raise NotFoundError(f"no message with id {message_id}")
    return MessageStatus(row[0]), int(row[1]), row[2]


def settle_rows(conn: Connection, owner: str, settlements: Sequence[Settlement],
                now: float) -> int:
    """Apply the fenced reports; completes the messages left with nothing open. Returns how
    many were accepted. SENT reports in a statement per attempt number among them, the
    others in one statement (only those there are)."""
    # attempt number -> the ids reported sent on it, and their send times in the same order
    sent: dict[int, tuple[list[int], list[float | None]]] = {}
    others: dict[str, list[object]] = {}
    other_ids: list[int] = []
    given_back: list[int] = []
    for delivery_id, attempts, kind, error, next_attempt_at, sent_at in settlements:
        if kind is SettleKind.SENT:
            ids, ats = sent.get(attempts) or sent.setdefault(attempts, ([], []))
            ids.append(delivery_id)
            ats.append(sent_at)
            continue
        other_ids.append(delivery_id)
        if kind is SettleKind.RETRY or kind is SettleKind.RELEASE:
            given_back.append(delivery_id)
        retry_at = (now if next_attempt_at is None else next_attempt_at) \
            if kind is SettleKind.RETRY else None
        others[f"{delivery_id}:{attempts}"] = [str(kind), error, retry_at]
    # Deliveries given back may meet an opt-out committing beside this: ``lists``.
    lock_tenants_of(conn, given_back)
    settled: list[Any] = []
    # The ids in any order (the rows are found by ``= ANY``, within their least and greatest).
    statements: list[tuple[dict[bool, str], list[int], dict[str, object]]] = [
        (_SENT_BY, ids, {"attempts": attempts, "ats": time_array(ats)})
        for attempts, (ids, ats) in sent.items()]
    if others:
        statements.append((_SETTLE_BY, other_ids, {"reports": json.dumps(others)}))
    for query, ids, params in statements:
        least, greatest = min(ids), max(ids)
        dense = 2 * len(ids) > greatest - least  # at least half the range (``_BY_RANGE``)
        settled += conn.execute(query[dense], {
            **params, "ids": id_array(ids), "least": least, "greatest": greatest,
            "owner": owner, "now": now}, prepare=False).fetchall()
    apply_held_dlrs(conn, [row[1] for row in settled if row[2] == "sent"])
    complete_done(conn, [row[0] for row in settled], now)
    return len(settled)


def requeue_rows(conn: Connection, message_id: int | None, now: float,
                 delivery_ids: list[int] | None, tenant: str | None) -> int:
    """Dead deliveries back to pending (``DispatchStore.requeue_dead``, after the caller
    checked ``message_id``); their completed messages go back to dispatching."""
    lock_claims(conn)  # a requeue may meet an opt-out committing beside it: ``lists``
    where = ["d.status = 'dead'", "m.id = d.message_id", "m.status != 'cancelled'"]
    params: dict[str, object] = {"now": now}
    if message_id is not None:
        where.append("d.message_id = %(message)s")
        params["message"] = message_id
    if delivery_ids is not None:
        where.append("d.id = ANY(%(ids)s)")
        params["ids"] = delivery_ids
    if tenant is not None:
        where.append("m.tenant = %(tenant)s")
        params["tenant"] = tenant
    row = conn.execute(
        "WITH r AS (UPDATE deliveries AS d SET status = CASE WHEN EXISTS (SELECT 1 FROM "
        "opt_outs AS o WHERE o.tenant = m.tenant AND o.phone = d.recipient) THEN "
        "'suppressed' ELSE 'pending' END, attempts = 0, "
        "lease_losses = 0, next_attempt_at = %(now)s FROM messages AS m WHERE "
        f"{' AND '.join(where)} RETURNING d.message_id, d.status), "
        "u AS (UPDATE messages SET status = 'dispatching', completed_at = NULL, "
        "updated_at = %(now)s WHERE status = 'completed' AND id IN "
        "(SELECT message_id FROM r WHERE status = 'pending')) "
        "SELECT count(*) FROM r WHERE status = 'pending'", params).fetchone()
    return 0 if row is None else int(row[0])


def _message_filter(*, message_id: int | None, status: MessageStatus | None,
                    before: int | None, tenant: str | None) -> tuple[str, list[object]]:
    where: list[str] = []
    params: list[object] = []
    for fragment, value in (("m.id = %s", message_id), ("m.status = %s", status),
                            ("m.id < %s", cursor_bounds(before, None)[0]),
                            ("m.tenant = %s", tenant)):
        if value is not None:
            where.append(fragment)
            params.append(str(value) if isinstance(value, MessageStatus) else value)
    return (f"WHERE {' AND '.join(where)}" if where else ""), params


def message_views(conn: Connection, *, message_id: int | None, status: MessageStatus | None,
                  before: int | None, limit: int, newest_first: bool,
                  tenant: str | None) -> list[MessageView]:
    """``DispatchStore.messages`` on checked arguments, in one statement (one snapshot)."""
    where, params = _message_filter(message_id=message_id, status=status, before=before,
                                    tenant=tenant)
    order = "DESC" if newest_first else "ASC"
    rows = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages AS m {where} "
                        f"ORDER BY m.id {order} LIMIT %s",
                        [*params, min(limit, INT64_MAX)]).fetchall()
    return [_view(row) for row in rows]


def created_view(conn: Connection, message_id: int, counts: dict[str, int]) -> MessageView:
    """The message ``message_id`` just stored in this transaction, its deliveries counted by
    the caller (``counts``: status -> how many), as ``message_views`` will read it."""
    row = conn.execute(f"SELECT {_GIVEN_COUNTS_COLUMNS} FROM messages AS m WHERE m.id = %s",
                       (Jsonb(counts), message_id)).fetchone()
    assert row is not None  # stored by the caller's transaction
    return _view(row)


def message_count(conn: Connection, *, status: MessageStatus | None, before: int | None,
                  tenant: str | None) -> int:
    where, params = _message_filter(message_id=None, status=status, before=before,
                                    tenant=tenant)
    row = conn.execute(f"SELECT count(*) FROM messages AS m {where}", params).fetchone()
    return 0 if row is None else int(row[0])


def delivery_views(conn: Connection, *, message_id: int | None,
                   status: DeliveryStatus | None, recipient: str | None, after: int | None,
                   limit: int, tenant: str | None) -> list[DeliveryView]:
    """``DispatchStore.deliveries`` on checked arguments."""
    where: list[str] = []
    params: list[object] = []
    for fragment, value in (("d.message_id = %s", message_id),
                            (f"{_DELIVERY_STATUS} = %s", status),
                            ("d.recipient = %s", recipient),
                            ("d.id > %s", cursor_bounds(None, after)[1]),
                            ("d.message_id IN (SELECT id FROM messages WHERE tenant = %s)",
                             tenant)):
        if value is not None:
            where.append(fragment)
            params.append(str(value) if isinstance(value, DeliveryStatus) else value)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(f"SELECT {_DELIVERY_COLUMNS} FROM deliveries AS d {RANGE_LEASE_OF} "
                        f"{clause} "
                        "ORDER BY d.id LIMIT %s", [*params, min(limit, INT64_MAX)]).fetchall()
    return [
        DeliveryView(id=r[0], message_id=r[1], recipient=r[2], status=DeliveryStatus(r[3]),
                     attempts=r[4], next_attempt_at=r[5], lease_owner=r[6], lease_until=r[7],
                     sent_at=r[8], last_error=r[9], lease_losses=r[10], dlr_at=r[11])
        for r in rows
    ]


def delivery_counts(conn: Connection, tenant: str | None) -> dict[DeliveryStatus, int]:
    query = (f"SELECT {STATUS}, count(*) FROM deliveries AS d JOIN messages AS m "
             "ON m.id = d.message_id")
    if tenant is None:
        rows = conn.execute(f"{query} GROUP BY 1")
    else:
        rows = conn.execute(f"{query} WHERE m.tenant = %s GROUP BY 1", (tenant,))
    return status_counts(dict(rows.fetchall()))


def status_counts(found: dict[str, Any] | None) -> dict[DeliveryStatus, int]:
    """Counts by status with every status present."""
    counts = dict.fromkeys(DeliveryStatus, 0)
    for status, count in (found or {}).items():
        counts[DeliveryStatus(status)] = int(count)
    return counts


def _view(r: Sequence[Any]) -> MessageView:
    shape = stored_shape(r[1], r[15], r[16])
    return MessageView(id=r[0], content=r[1], status=MessageStatus(r[2]), scheduled_at=r[3],
                       created_at=r[4], updated_at=r[5], version=r[6], dispatch_started_at=r[7],
                       completed_at=r[8], idempotency_key=r[9], priority=r[10],
                       counts=status_counts(r[14]), uid=r[11], tenant=r[12], receipt=r[13],
                       encoding=shape[0], segments=shape[1], valid_until=r[17])
