"""``DispatchStore`` on SQLite (standard library ``sqlite3``): WAL, ``synchronous = FULL``,
and ``BEGIN IMMEDIATE`` for every write transaction (``database.Database``).

One store object owns one writing connection, guarded by a lock, so it may be shared by
threads, and reads on connections of its own that never wait for it (``Database.read``); use
one store object per worker for parallelism. The SQL lives in ``rows``, the submit of a
large message in ``submit``, the claim in ``claim``, opt-outs and delivery receipts in
``lists``, the schema and its upgrades in ``schema``; small submits in flight together share
one transaction (``submit_group``).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

from sms_sim.clock import Clock
from sms_sim.dispatch.contract import (
    CancelResult,
    Claim,
    DeliveryStatus,
    DeliveryView,
    DispatchStore,
    MessageStatus,
    MessageView,
    SettleKind,
    SettleResult,
    Settlement,
    SubmitResult,
)
from sms_sim.dispatch.dlrs import DlrReport, DlrResult, check_dlrs
from sms_sim.dispatch.errors import ConflictError, LockedError
from sms_sim.dispatch.keys import ApiKey
from sms_sim.dispatch.optouts import OptOut, OptOutResult
from sms_sim.dispatch.pruning import PRUNE_BATCH_ROWS, PruneResult, check_prune
from sms_sim.dispatch.requests import MessageEdit, NewMessage
from sms_sim.dispatch.stores.common import (
    cancel_result,
    clock_jumped_back_after_s,
    locked_message,
)
from sms_sim.dispatch.stores.sqlite.api_keys import add_key, find_key, list_keys, revoke_key
from sms_sim.dispatch.stores.sqlite.cancel_watch import CancelWatch
from sms_sim.dispatch.stores.sqlite.claim import claim_deliveries
from sms_sim.dispatch.stores.sqlite.database import DEFAULT_BUSY_TIMEOUT_S, Database
from sms_sim.dispatch.stores.sqlite import lists
from sms_sim.dispatch.stores.sqlite.rows import (
    COUNTS_DISAGREE_SQL,
    SETTLE_SENT_SQL,
    SETTLE_SQL,
    add_counts,
    apply_held_dlrs,
    complete_done,
    counts,
    delivery_counts,
    delivery_views,
    message_count,
    message_state,
    message_views,
    moved,
    views,
)
from sms_sim.dispatch.stores.sqlite.prune import prune_messages
from sms_sim.dispatch.stores.sqlite.submit import (
    ABANDONED_LOAD_S,
    in_one_transaction,
    insert_deliveries,
    insert_message,
    submit_message,
)
from sms_sim.dispatch.stores.sqlite.submit_group import SubmitGroup
from sms_sim.dispatch.stores.sqlite.transfer import SqliteTransfer
from sms_sim.dispatch.validation import INT64_MAX, check_claim, check_listing, check_settlements
from sms_sim.segments import segments

__all__ = ["SqliteStore", "DEFAULT_BUSY_TIMEOUT_S"]

# The earliest validity end of an open message with something still to send (a claim then
# expires it): the partial index messages_valid in order, up to the first that qualifies.
_NEXT_LAPSE_SQL = """
SELECT valid_until FROM messages
WHERE valid_until IS NOT NULL AND status IN ('scheduled', 'dispatching')
  AND EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = messages.id
              AND d.status IN ('pending', 'retrying'))
ORDER BY valid_until LIMIT 1
"""


class SqliteStore:
    """SQLite-backed store; see ``DispatchStore`` for what each method promises.

    ``create=False`` refuses to create a missing or empty database (for read-only commands);
    ``read_only=True`` opens with ``mode=ro``, so every write raises ``StoreError``.
    ``max_page_count`` caps the file size (fault tests use it to simulate a full disk).
    ``lock_clock`` times only the wait for SQLite's locks (tests pass a ``VirtualClock``);
    the time the store records is always the caller's ``now``.
    Raises ``StoreError`` at once if the file is not an SQLite database or not an sms_sim one.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        create: bool = True,
        read_only: bool = False,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        max_page_count: int | None = None,
        lock_clock: Clock | None = None,
    ) -> None:
        self.path = str(path)
        self._db = Database(self.path, create=create, read_only=read_only,
                            busy_timeout_s=busy_timeout_s, max_page_count=max_page_count,
                            lock_clock=lock_clock)
        self._write = self._db.write
        self._read = self._db.read
        self._group = SubmitGroup(self._write, insert_message)
        # A claimer's ``now`` may lag by its whole wait for the write lock (up to the busy
        # timeout): only a lease granted later than that past it proves a backward jump.
        self._jump_s = clock_jumped_back_after_s(busy_timeout_s)
        self._watch = CancelWatch(self.path, self._db.lock_clock, self._db.when_free,
                                  self._db.read)
        if not read_only:
            try:
                self._watch.prepare()
            except BaseException:
                self.close()
                raise

    # --- writes --------------------------------------------------------------------------

    def submit(self, message: NewMessage, now: float) -> SubmitResult:
        if in_one_transaction(message):  # then it may share its transaction
            return self._group.submit(message, now)
        return submit_message(self._write, message, now, self._db.let_others_in)

    def edit(self, message_id: int, expected_version: int, edit: MessageEdit,
             now: float, *, tenant: str | None = None) -> MessageView:
        with self._write() as conn:
            status, version, started = message_state(conn, message_id, tenant)
            if status is not MessageStatus.SCHEDULED:
                raise LockedError(locked_message(message_id, status, started))
            if version != expected_version:
                raise ConflictError(f"message {message_id} is at version {version}, "
                                    f"not {expected_version}: read it again and retry")
            shape = None if edit.content is None else segments(edit.content)
            due_at, valid_until, tenant = conn.execute(
                "UPDATE messages SET content = COALESCE(?, content), "
                "encoding = COALESCE(?, encoding), segments = COALESCE(?, segments), "
                "scheduled_at = COALESCE(?, scheduled_at), version = version + 1, "
                "updated_at = ? WHERE id = ? AND status = 'scheduled' AND version = ? "
                "RETURNING scheduled_at, valid_until, tenant",
                (edit.content, None if shape is None else str(shape.encoding),
                 None if shape is None else shape.count, edit.scheduled_at, now, message_id,
                 expected_version),
            ).fetchone()
            conn.execute("UPDATE messages SET valid_until = ? WHERE id = ?",
                         (edit.validity_end(due_at, valid_until), message_id))
            if edit.scheduled_at is not None:
                conn.execute("UPDATE deliveries SET next_attempt_at = ? WHERE message_id = ?",
                             (edit.scheduled_at, message_id))
            if edit.recipients is not None:
                conn.execute("DELETE FROM delivery_counts WHERE message_id = ?", (message_id,))
                conn.execute("DELETE FROM deliveries WHERE message_id = ?", (message_id,))
                if insert_deliveries(conn, message_id, tenant, edit.recipients, due_at):
                    complete_done(conn, [message_id], now)
            return views(conn, "WHERE id = ?", (message_id,))[0]

    def cancel(self, message_id: int, now: float, *,
               tenant: str | None = None) -> CancelResult:
        with self._write() as conn:
            status, _, _ = message_state(conn, message_id, tenant)
            if status not in (MessageStatus.SCHEDULED, MessageStatus.DISPATCHING):
                raise LockedError(f"message {message_id} is already {status}; nothing to cancel")
            by_status = counts(conn, message_id)
            self._watch.mark()  # before the commit and after it: see ``cancel_watch``
            conn.execute("UPDATE deliveries SET status = 'cancelled' WHERE message_id = ? AND "
                         "status IN ('pending', 'retrying')", (message_id,))
            pending = by_status[DeliveryStatus.PENDING]
            retrying = by_status[DeliveryStatus.RETRYING]
            add_counts(conn, Counter({(message_id, "pending"): -pending,
                                      (message_id, "retrying"): -retrying,
                                      (message_id, "cancelled"): pending + retrying}))
            conn.execute("UPDATE messages SET status = 'cancelled', version = version + 1, "
                         "updated_at = ? WHERE id = ?", (now, message_id))
        self._watch.mark()
        return cancel_result(message_id, by_status, status)

    def claim(self, owner: str, limit: int, lease_s: float, now: float) -> list[Claim]:
        check_claim(limit, lease_s, now)
        if limit <= 0:
            return []
        with self._write() as conn:
            return claim_deliveries(conn, owner, limit, lease_s, now, self._jump_s)

    def settle(self, owner: str, settlements: Sequence[Settlement], now: float) -> SettleResult:
        check_settlements(settlements, now)
        if not settlements:
            return SettleResult(accepted=0, refused=0)
        sent = [(item[0], item[1], item[5]) for item in settlements
                if item.kind is SettleKind.SENT]
        others = [item for item in settlements if item.kind is not SettleKind.SENT]
        by_kind: dict[SettleKind, list[tuple[object, ...]]] = {kind: [] for kind in SettleKind}
        for item in others:
            fence = (item.delivery_id, owner, item.attempts, now)
            if item.kind is SettleKind.RETRY:
                retry_at = now if item.next_attempt_at is None else item.next_attempt_at
                by_kind[item.kind].append((item.error, retry_at, *fence))
            elif item.kind is SettleKind.DEAD:
                by_kind[item.kind].append((item.error, *fence))
            else:
                by_kind[item.kind].append(fence)
        accepted = 0
        with self._write() as conn:
            touched: set[int] = set()
            changes: Counter[tuple[int, str]] = Counter()
            if sent:  # the hot path: one statement, a primary-key lookup per row
                returned = conn.execute(SETTLE_SENT_SQL, (now, owner, json.dumps(sent))).fetchall()
                accepted += len(returned)
                for message_id, _ in returned:
                    changes[message_id, "leased"] -= 1
                    changes[message_id, "sent"] += 1
                    touched.add(message_id)
                add_counts(conn, changes)
                changes.clear()
                apply_held_dlrs(conn, [delivery_id for _, delivery_id in returned])
            for kind, rows in by_kind.items():
                for row in rows:  # failures and releases: rare, so one statement each
                    settled = conn.execute(SETTLE_SQL[kind], row).fetchall()
                    accepted += len(settled)
                    changes.update(moved(settled, "leased"))
                    touched.update(message_id for message_id, _ in settled)
            add_counts(conn, changes)
            complete_done(conn, touched, now)
        return SettleResult(accepted=accepted, refused=len(settlements) - accepted)

    def requeue_dead(self, message_id: int | None, now: float, *,
                     delivery_ids: Collection[int] | None = None,
                     tenant: str | None = None) -> int:
        ids = None if delivery_ids is None else json.dumps(
            [i for i in delivery_ids if 0 <= i <= INT64_MAX])
        with self._write() as conn:
            if message_id is not None:
                message_state(conn, message_id, tenant)
            rows = conn.execute(
                "UPDATE deliveries SET status = CASE WHEN EXISTS (SELECT 1 FROM opt_outs o "
                "JOIN messages m ON o.tenant = m.tenant WHERE m.id = deliveries.message_id "
                "AND o.phone = deliveries.recipient) THEN 'suppressed' ELSE 'pending' END, "
                "attempts = 0, lease_losses = 0, next_attempt_at = ?1 "
                "WHERE status = 'dead' AND (?2 IS NULL OR message_id = ?2) "
                "AND (?3 IS NULL OR id IN (SELECT value FROM json_each(?3))) AND message_id IN "
                "(SELECT id FROM messages WHERE status != 'cancelled' AND (?4 IS NULL OR "
                "tenant = ?4)) RETURNING message_id, status",
                (now, message_id, ids, tenant),
            ).fetchall()
            add_counts(conn, moved(rows, "dead"))
            requeued = [row for row in rows if row[1] == "pending"]
            conn.execute(
                "UPDATE messages SET status = 'dispatching', completed_at = NULL, updated_at = ? "
                "WHERE status = 'completed' AND id IN (SELECT value FROM json_each(?))",
                (now, json.dumps(sorted({row[0] for row in requeued}))),
            )
        return len(requeued)

    def keyed(self, idempotency_key: str, *, tenant: str, now: float) -> int | None:
        # A load older than ``ABANDONED_LOAD_S`` is no message: ``submit`` clears it first
        # and creates a new one (which must then meet every rule a new request does).
        row = self._read(lambda conn: conn.execute(
            "SELECT id FROM messages WHERE tenant = ? AND idempotency_key = ? "
            "AND NOT (status = 'loading' AND created_at < ?)",
            (tenant, idempotency_key, now - ABANDONED_LOAD_S)).fetchone())
        return None if row is None else int(row[0])

    def keep_receipt(self, message_id: int, receipt: str, *,
                     tenant: str | None = None) -> bool:
        with self._write() as conn:
            message_state(conn, message_id, tenant)
            return bool(conn.execute("UPDATE messages SET receipt = ? WHERE id = ? AND "
                                     "receipt IS NULL", (receipt, message_id)).rowcount)

    def prune(self, finished_before: float, *, dry_run: bool = False,
              batch_rows: int = PRUNE_BATCH_ROWS) -> PruneResult:
        check_prune(finished_before, batch_rows)
        return prune_messages(self._write, self._read, self._db.let_others_in,
                              finished_before, dry_run=dry_run, batch_rows=batch_rows)

    def transfer(self) -> SqliteTransfer:
        """This database as rows, for ``stores.transfer.copy_store``."""
        return SqliteTransfer(self._db, self._write)

    @property
    def upgraded_from(self) -> str | None:
        """The schema version this opening upgraded (None: it was current): ``migrate``."""
        return self._db.upgraded_from

    def check_writable(self, within_s: float | None = None) -> None:
        with self._write(within_s=within_s):
            pass  # BEGIN IMMEDIATE took the write lock; COMMIT of nothing releases it

    def add_api_key(self, key: ApiKey, secret_hash: str) -> None:
        with self._write() as conn:
            add_key(conn, key, secret_hash)

    def api_key(self, key_id: str) -> tuple[ApiKey, str] | None:
        return self._read(lambda conn: find_key(conn, key_id))

    def revoke_api_key(self, key_id: str, now: float) -> ApiKey:
        with self._write() as conn:
            return revoke_key(conn, key_id, now)

    def api_keys(self, *, tenant: str | None = None) -> list[ApiKey]:
        return self._read(lambda conn: list_keys(conn, tenant))

    def add_opt_outs(self, tenant: str, phones: Iterable[str], now: float) -> OptOutResult:
        wanted = list(dict.fromkeys(phones))
        with self._write() as conn:
            return lists.add_opt_outs(conn, tenant, wanted, now)

    def remove_opt_out(self, tenant: str, phone: str) -> bool:
        with self._write() as conn:
            return lists.remove_opt_out(conn, tenant, phone)

    def opt_outs(self, tenant: str, *, after: str | None = None,
                 limit: int = 1000) -> list[OptOut]:
        check_listing(None, limit)
        return self._read(lambda conn: lists.list_opt_outs(conn, tenant, after,
                                                           min(limit, INT64_MAX)))

    def record_dlrs(self, reports: Sequence[DlrReport], now: float) -> DlrResult:
        reports = check_dlrs(reports, now)
        with self._write() as conn:
            return lists.record_dlrs(conn, reports)

    def close(self) -> None:
        # The read-only cancel watcher first: the last connection to close checkpoints the
        # WAL into the file, and a read-only one cannot.
        self._watch.close()
        self._db.close()

    # --- reads ---------------------------------------------------------------------------

    def cancelled(self, message_ids: Collection[int]) -> set[int]:
        return self._watch.cancelled(message_ids) if message_ids else set()

    def next_due_at(self, now: float) -> float | None:
        def body(conn: sqlite3.Connection) -> float | None:
            # Only messages that may still be claimed count: anything else due would make
            # every worker spin on empty claims.
            (ready,) = conn.execute("SELECT MIN(next_attempt_at) FROM deliveries "
                                    "WHERE status IN ('pending', 'retrying') AND message_id IN "
                                    "(SELECT id FROM messages WHERE status IN "
                                    "('scheduled', 'dispatching'))").fetchone()
            (lease,) = conn.execute("SELECT MIN(lease_until) FROM deliveries "
                                    "WHERE status = 'leased'").fetchone()
            lapse = conn.execute(_NEXT_LAPSE_SQL).fetchone()
            times = [t for t in (ready, lease, lapse and lapse[0]) if t is not None]
            return min(times) if times else None

        return self._read(body)

    def messages(self, *, message_id: int | None = None, status: MessageStatus | None = None,
                 limit: int = 100, newest_first: bool = False, before: int | None = None,
                 tenant: str | None = None) -> list[MessageView]:
        if not check_listing(message_id, limit, before=before):
            return []
        return self._read(lambda conn: message_views(
            conn, message_id=message_id, status=status, before=before,
            limit=min(limit, INT64_MAX), newest_first=newest_first, tenant=tenant))

    def count_messages(self, *, status: MessageStatus | None = None,
                       before: int | None = None, tenant: str | None = None) -> int:
        if not check_listing(None, 0, before=before):
            return 0
        return self._read(lambda conn: message_count(conn, status=status, before=before,
                                                     tenant=tenant))

    def delivery_counts(self, *, tenant: str | None = None) -> dict[DeliveryStatus, int]:
        return self._read(lambda conn: delivery_counts(conn, tenant))

    def deliveries(self, *, message_id: int | None = None,
                   status: DeliveryStatus | None = None, limit: int = 1000,
                   recipient: str | None = None, after: int | None = None,
                   tenant: str | None = None) -> list[DeliveryView]:
        if not check_listing(message_id, limit, after=after):
            return []
        return self._read(lambda conn: delivery_views(
            conn, message_id=message_id, status=status, recipient=recipient, after=after,
            limit=min(limit, INT64_MAX), tenant=tenant))

    def integrity_check(self, *, quick: bool = False) -> str:
        """SQLite's own ``PRAGMA integrity_check`` verdict: "ok" when the file is sound.
        ``quick``: ``PRAGMA quick_check``, which skips comparing indexes with their tables
        (several times faster; still reads every page). The full check also compares the
        kept delivery counts with a count of the deliveries themselves."""
        pragma = "quick_check" if quick else "integrity_check"

        def check(conn: sqlite3.Connection) -> str:
            verdict = str(conn.execute(f"PRAGMA {pragma}").fetchone()[0])
            if verdict != "ok" or quick:
                return verdict
            wrong = conn.execute(COUNTS_DISAGREE_SQL).fetchone()
            if wrong is None:
                return "ok"
            return (f"delivery counts of message {wrong[0]} disagree with its deliveries "
                    f"({wrong[1]}: kept {wrong[2]}, counted {wrong[3]})")

        return self._read(check)


_check: type[DispatchStore] = SqliteStore
