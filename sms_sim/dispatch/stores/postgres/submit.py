"""How ``PostgresStore`` stores a new message: the idempotency key, then the recipients by
``COPY``, all in one transaction.

Unlike SQLite, PostgreSQL does not lock readers or claimers out while a transaction
inserts: a 1,000,000-recipient ``COPY`` runs beside the workers' claims, and the message
appears whole at its commit (readers and claims never see part of it), so there is no
'loading' status and nothing to clean up after a killed submit (its transaction rolls
back). The content is stored once, on the message row.

The key: ``UNIQUE (tenant, idempotency_key)`` decides, through ``ON CONFLICT DO NOTHING``.
A first look for the key avoids spending an id on a repeat (ids then follow submits as in
the other stores); a submit racing another with the same key waits on the unique index for
the first to commit (then answers with the first message) for at most
``STILL_SUBMITTING_WAIT_S``, and past that is refused with ``StillSubmittingError``: the
first is a large submit still loading.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import psycopg

from sms_sim.dispatch.contract import DeliveryStatus, SubmitResult
from sms_sim.dispatch.errors import StillSubmittingError
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.stores.common import key_conflict
from sms_sim.dispatch.stores.postgres.lists import complete_done, lock_opt_outs, suppress_listed
from sms_sim.dispatch.stores.postgres.rows import created_view
from sms_sim.dispatch.stores.postgres.schema import Connection
from sms_sim.segments import segments

__all__ = ["submit_message", "copy_deliveries", "STILL_SUBMITTING_WAIT_S", "COPY_ROWS"]

STILL_SUBMITTING_WAIT_S = 2.0
COPY_ROWS = 50_000  # rows per write to the COPY stream: bounded memory for a 1M list


def submit_message(conn: Connection, message: NewMessage, now: float) -> SubmitResult:
    """``DispatchStore.submit`` inside the caller's transaction."""
    lock_opt_outs(conn, message.tenant, exclusive=False)
    due_at = now if message.scheduled_at is None else message.scheduled_at
    key = message.idempotency_key
    # Only a key needs the request's fingerprint (hashing 1,000,000 sorted numbers takes ~1 s).
    fingerprint = None if key is None else message.fingerprint()
    if key is not None:
        known = _known_key(conn, message, fingerprint)
        if known is not None:
            return known
        conn.execute(f"SET LOCAL lock_timeout = {int(STILL_SUBMITTING_WAIT_S * 1000)}")
    shape = segments(message.content)
    try:
        row = conn.execute(
            "INSERT INTO messages (tenant, content, status, scheduled_at, created_at, "
            "updated_at, version, idempotency_key, request_hash, priority, uid, encoding, "
            "segments, valid_until) "
            "VALUES (%s, %s, 'scheduled', %s, %s, %s, 1, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (tenant, idempotency_key) DO NOTHING RETURNING id",
            (message.tenant, message.content, due_at, now, now, key, fingerprint,
             message.priority, uuid.uuid4().hex, str(shape.encoding), shape.count,
             message.validity_end(due_at))).fetchone()
    except psycopg.errors.LockNotAvailable as exc:
        raise StillSubmittingError(
            f"idempotency key {key!r}: another submit with this key is still being stored; "
            "try again when it has finished") from exc
    if row is None:  # lost a race for the key: the winner has committed by now
        known = _known_key(conn, message, fingerprint)
        if known is None:  # ... and was pruned since (``prune`` forgets its key): again
            return submit_message(conn, message, now)
        return known
    message_id = int(row[0])
    suppressed = copy_deliveries(conn, message_id, message.tenant, message.recipients, due_at)
    if suppressed:
        complete_done(conn, [message_id], now)
    counts = {str(DeliveryStatus.PENDING): len(message.recipients) - suppressed,
              str(DeliveryStatus.SUPPRESSED): suppressed}
    return SubmitResult(message_id=message_id, created=True, suppressed=suppressed,
                        view=created_view(conn, message_id, counts))


def copy_deliveries(conn: Connection, message_id: int, tenant: str,
                    recipients: Sequence[str], due_at: float) -> int:
    """One pending, fresh delivery per recipient (already distinct), by ``COPY``, ids in the
    recipients' order; those to numbers on ``tenant``'s opt-out list then suppressed (the
    caller holds its opt-out lock, ``lists``), which takes them out of the fresh run; then
    the message's chunk cursor set on the rest (``chunk``): claims lease them by id range
    from the first, never through a per-row index. Returns how many were suppressed. The
    message must have no other delivery (a new message, or an edit that deleted them).
    Recipients are validated numbers (digits, "-", "+"), so the text format needs no
    escaping; ``repr`` of a float reads back as the same float."""
    tail = f"\t{due_at!r}\tt\n"
    head = f"{message_id}\t"
    with conn.cursor() as cursor, cursor.copy(
            "COPY deliveries (message_id, recipient, next_attempt_at, fresh) FROM STDIN") as copy:
        for start in range(0, len(recipients), COPY_ROWS):
            chunk = recipients[start:start + COPY_ROWS]
            copy.write("".join(f"{head}{recipient}{tail}" for recipient in chunk))
    suppressed = suppress_listed(conn, message_id, tenant)
    # The first id by the (message_id, id) index: one entry read. Ids are usually one
    # contiguous range, but a submit running beside this one may have drawn ids in between;
    # the cursor needs only that every fresh delivery of this message is at or past it (a
    # suppressed one there is skipped by the claim's read, and not counted).
    conn.execute("UPDATE messages SET fresh_next = (SELECT min(id) FROM deliveries "
                 "WHERE message_id = %(id)s), fresh_left = %(n)s WHERE id = %(id)s",
                 {"id": message_id, "n": len(recipients) - suppressed})
    return suppressed


def _known_key(conn: Connection, message: NewMessage,
               fingerprint: str | None) -> SubmitResult | None:
    row = conn.execute("SELECT id, request_hash, receipt FROM messages "
                       "WHERE tenant = %s AND idempotency_key = %s",
                       (message.tenant, message.idempotency_key)).fetchone()
    if row is None:
        return None
    first, stored_hash, receipt = row
    if stored_hash != fingerprint:
        assert message.idempotency_key is not None
        raise key_conflict(message.idempotency_key, first)
    return SubmitResult(message_id=first, created=False, receipt=receipt)
