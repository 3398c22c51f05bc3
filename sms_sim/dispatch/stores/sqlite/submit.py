"""How ``SqliteStore`` stores a new message: the idempotency check, and a large recipient list
loaded in short transactions.

SQLite has one writer. A 1,000,000-recipient message inserted in one transaction held the
write lock for 15-28 s, long enough for every worker's claim to give up. So a message with
more than ``LOAD_CHUNK`` recipients is written as ``loading`` (no reader, claim or due-time
query sees that status), its deliveries follow in chunks of ``LOAD_CHUNK``, each its own
transaction with a short pause before the next (SQLite keeps no queue for its lock: a loader
that takes it back at once starves the workers' claims), and one short final transaction
makes it ``scheduled``: readers see all of it or none of it. A load cut short in this
process is deleted at once; one cut short by a killed process is deleted by the first submit
after ``ABANDONED_LOAD_S``, judged from the load's own start, because a store never reads a
clock and cannot tell a slow loader from a dead one sooner.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from sms_sim.dispatch.contract import MessageView, SubmitResult
from sms_sim.dispatch.errors import StillSubmittingError, StoreError
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.stores.common import key_conflict
from sms_sim.dispatch.stores.sqlite.database import Write
from sms_sim.dispatch.stores.sqlite.prune import NEXT_MESSAGE_ID_SQL, next_delivery_id
from sms_sim.dispatch.stores.sqlite.lists import suppress_listed
from sms_sim.dispatch.stores.sqlite.rows import (
    MESSAGE_COLUMNS,
    add_counts,
    complete_done,
    counts,
    message_view,
    views,
)
from sms_sim.dispatch.validation import format_utc
from sms_sim.segments import segments

__all__ = ["LOAD_CHUNK", "ABANDONED_LOAD_S", "submit_message", "in_one_transaction",
           "insert_message"]

LOAD_CHUNK = 2_000  # deliveries per transaction: a few tens of milliseconds of write lock
ABANDONED_LOAD_S = 600.0


def submit_message(write: Write, message: NewMessage, now: float,
                   between: Callable[[], None] = lambda: None) -> SubmitResult:
    """Store ``message`` through ``write`` (one write transaction per call), calling
    ``between`` between two chunks so other writers get the lock; see
    ``DispatchStore.submit``."""
    if in_one_transaction(message):
        with write() as conn:
            return insert_message(conn, message, now)
    # Hashing 1,000,000 sorted numbers takes ~1 s: before the transaction, not in it.
    fingerprint = None if message.idempotency_key is None else message.fingerprint()
    with write() as conn:
        first = insert_message(conn, message, now, loading=True, fingerprint=fingerprint)
    if not first.created:
        return first
    try:
        suppressed = first.suppressed + _load_rest(write, first.message_id, message, now,
                                                   between)
    except BaseException:
        with contextlib.suppress(StoreError):
            with write() as conn:
                _delete_load(conn, first.message_id)
        raise
    return SubmitResult(message_id=first.message_id, created=True, suppressed=suppressed)


def in_one_transaction(message: NewMessage) -> bool:
    """Whether ``message`` is stored in one transaction (``insert_message``): at most
    ``LOAD_CHUNK`` recipients."""
    return len(message.recipients) <= LOAD_CHUNK


def insert_message(conn: sqlite3.Connection, message: NewMessage, now: float, *,
                   loading: bool = False, fingerprint: str | None = None) -> SubmitResult:
    """A submit's work inside the caller's write transaction: the idempotency check, the
    message and its deliveries. ``loading``: only the first ``LOAD_CHUNK``, the message
    written ``loading`` for ``_load_rest`` to finish (no view); otherwise every one.
    ``fingerprint``: the message's, if it has a key and the caller has it already."""
    due_at = now if message.scheduled_at is None else message.scheduled_at
    if fingerprint is None and message.idempotency_key is not None:  # only a key needs it
        fingerprint = message.fingerprint()
    shape = segments(message.content)
    _drop_abandoned_loads(conn, now)
    known = _known_key(conn, message, fingerprint)
    if known is not None:
        return known
    row = conn.execute(
        "INSERT INTO messages (id, content, status, scheduled_at, created_at, updated_at, "
        "version, idempotency_key, priority, uid, request_hash, tenant, encoding, "
        f"segments, valid_until) VALUES ({NEXT_MESSAGE_ID_SQL}, ?, ?, ?, ?, ?, 1, ?, ?, ?, "
        f"?, ?, ?, ?, ?) RETURNING {MESSAGE_COLUMNS}",
        (message.content, "loading" if loading else "scheduled", due_at, now, now,
         message.idempotency_key, message.priority, uuid.uuid4().hex, fingerprint,
         message.tenant, str(shape.encoding), shape.count, message.validity_end(due_at)),
    ).fetchone()
    recipients = message.recipients[:LOAD_CHUNK] if loading else message.recipients
    suppressed = insert_deliveries(conn, row[0], message.tenant, recipients, due_at)
    view = None if loading else _created_view(conn, row, suppressed, now)
    return SubmitResult(message_id=row[0], created=True, suppressed=suppressed, view=view)


def _created_view(conn: sqlite3.Connection, row: tuple[Any, ...], suppressed: int,
                  now: float) -> MessageView:
    """The message just inserted as ``row`` (its RETURNING), as its own transaction leaves
    it: the answer to the submit without reading the message back (issue 12). With opted-out
    recipients it may have completed at once (nothing pending), so it is read here, in the
    transaction; otherwise the row as inserted is the message, and only the counts are read."""
    if suppressed:
        complete_done(conn, [row[0]], now)
        return views(conn, "WHERE id = ?", (row[0],))[0]
    return message_view(row, counts(conn, row[0]))


def insert_deliveries(conn: sqlite3.Connection, message_id: int, tenant: str,
                      recipients: Sequence[str], due_at: float) -> int:
    """Pending deliveries, with ids above every id handed out (``prune``: none reused),
    suppressed for numbers on ``tenant``'s opt-out list; returns how many were suppressed."""
    first = next_delivery_id(conn)
    inserted = conn.executemany(
        "INSERT OR IGNORE INTO deliveries (id, message_id, recipient, status, attempts, "
        "next_attempt_at) VALUES (?, ?, ?, 'pending', 0, ?)",
        ((first + i, message_id, recipient, due_at) for i, recipient in enumerate(recipients)),
    ).rowcount
    add_counts(conn, Counter({(message_id, "pending"): inserted}))
    return suppress_listed(conn, message_id, tenant, first, first + len(recipients) - 1)


def _load_rest(write: Write, message_id: int, message: NewMessage, now: float,
               between: Callable[[], None]) -> int:
    """The deliveries past the first chunk, a chunk per transaction, then ``scheduled``;
    returns how many were suppressed."""
    recipients, tenant = message.recipients, message.tenant
    due_at = now if message.scheduled_at is None else message.scheduled_at
    suppressed = 0
    for start in range(LOAD_CHUNK, len(recipients), LOAD_CHUNK):
        between()
        with write() as conn:
            _still_loading(conn, message_id)
            suppressed += insert_deliveries(conn, message_id, tenant,
                                            recipients[start:start + LOAD_CHUNK], due_at)
    between()
    with write() as conn:
        _still_loading(conn, message_id)
        conn.execute("UPDATE messages SET status = 'scheduled' WHERE id = ?", (message_id,))
        if suppressed:
            complete_done(conn, [message_id], now)
    return suppressed


def _still_loading(conn: sqlite3.Connection, message_id: int) -> None:
    row = conn.execute("SELECT 1 FROM messages WHERE id = ? AND status = 'loading'",
                       (message_id,)).fetchone()
    if row is None:
        raise StoreError(f"this submit took longer than {ABANDONED_LOAD_S:.0f} s and was "
                         "cleared as abandoned; nothing was created: submit it again")


def _known_key(conn: sqlite3.Connection, message: NewMessage,
               fingerprint: str | None) -> SubmitResult | None:
    """The first message under this idempotency key in the message's tenant, if the request
    is the same; raises ``KeyReusedError`` if it is not, ``StillSubmittingError`` if that
    message is still being loaded."""
    if message.idempotency_key is None:
        return None
    row = conn.execute("SELECT id, status, request_hash, created_at, receipt FROM messages "
                       "WHERE tenant = ? AND idempotency_key = ?",
                       (message.tenant, message.idempotency_key)).fetchone()
    if row is None:
        return None
    first, status, stored_hash, created_at, receipt = row
    if status == "loading":
        raise StillSubmittingError(
            f"idempotency key {message.idempotency_key!r}: message {first} is still being "
            f"submitted (since {format_utc(created_at)}); try again when that submit has "
            "finished")
    if stored_hash is not None and stored_hash != fingerprint:
        raise key_conflict(message.idempotency_key, first)
    return SubmitResult(message_id=first, created=False, receipt=receipt)


def _drop_abandoned_loads(conn: sqlite3.Connection, now: float) -> None:
    for (message_id,) in conn.execute(
            "SELECT id FROM messages WHERE status = 'loading' AND created_at < ?",
            (now - ABANDONED_LOAD_S,)).fetchall():
        _delete_load(conn, message_id)


def _delete_load(conn: sqlite3.Connection, message_id: int) -> None:
    conn.execute("DELETE FROM delivery_counts WHERE message_id = ? AND message_id IN "
                 "(SELECT id FROM messages WHERE status = 'loading')", (message_id,))
    conn.execute("DELETE FROM deliveries WHERE message_id = ? AND message_id IN "
                 "(SELECT id FROM messages WHERE status = 'loading')", (message_id,))
    conn.execute("DELETE FROM messages WHERE id = ? AND status = 'loading'", (message_id,))
