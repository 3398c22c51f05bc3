"""``DispatchStore`` on PostgreSQL (psycopg 3 and ``psycopg_pool``): workers on many hosts
sharing one database, with the promises of the memory and SQLite stores.

One store object holds a pool of connections and may be shared by threads; each call is
one transaction (``database``). The claim is in ``claim``, the submit by ``COPY`` in
``submit``, settling and reading in ``rows``, the versioned schema in ``schema``. Every
driver error leaves as a ``StoreError`` (``StoreBusyError`` when a retry can succeed);
errors name the database without its password. Submits, edits, cancels and requeues wake
idle workers through ``LISTEN/NOTIFY`` (``listen``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

from sms_sim.clock import Clock, RealClock
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
from sms_sim.dispatch.errors import ConflictError, LockedError, NotFoundError
from sms_sim.dispatch.keys import ApiKey, KeyRole
from sms_sim.dispatch.optouts import OptOut, OptOutResult
from sms_sim.dispatch.pruning import PRUNE_BATCH_ROWS, PruneResult, check_prune
from sms_sim.dispatch.requests import MessageEdit, NewMessage
from sms_sim.dispatch.stores.common import (
    cancel_result,
    clock_jumped_back_after_s,
    locked_message,
)
from sms_sim.dispatch.stores.postgres.cancel_cache import CancelCache
from sms_sim.dispatch.stores.postgres.chunk import RANGE_LEASED, STATUS
from sms_sim.dispatch.stores.postgres.claim import claim_deliveries
from sms_sim.dispatch.stores.postgres.database import (
    DEFAULT_LOCK_TIMEOUT_S,
    DEFAULT_POOL_SIZE,
    Database,
    pooling_of,
)
from sms_sim.dispatch.stores.postgres import lists
from sms_sim.dispatch.stores.postgres.listen import ListenChannel, notify
from sms_sim.dispatch.stores.postgres.prune import prune_messages
from sms_sim.dispatch.stores.postgres.rows import (
    delivery_counts,
    delivery_views,
    message_count,
    message_state,
    message_views,
    requeue_rows,
    settle_rows,
    status_counts,
)
from sms_sim.dispatch.stores.postgres.submit import copy_deliveries, submit_message
from sms_sim.dispatch.stores.postgres.transfer import PostgresTransfer
from sms_sim.dispatch.validation import (
    INT64_MAX,
    check_claim,
    check_listing,
    check_settlements,
    could_be_an_id,
)
from sms_sim.dispatch.wake import WakeChannel
from sms_sim.segments import segments

__all__ = ["PostgresStore"]

_KEY_COLUMNS = "key_id, tenant, created_at, revoked_at, role"


class PostgresStore:
    """PostgreSQL-backed store; see ``DispatchStore`` for what each method promises.

    ``dsn``: a ``postgresql://`` URL or libpq connection string; the tables live in the
    first schema of its ``search_path``. ``create=True`` gives an empty database the
    current schema; a database at an older schema version is refused either way (run
    ``sms_sim migrate``). ``read_only=True`` makes every transaction read-only, so every
    write raises ``StoreError``. ``pool_size``: connections at most (one per thread that
    calls at once). ``lock_timeout_s``: the longest a call waits for a lock before
    ``StoreBusyError``. ``prepare_threshold``: psycopg's. ``sms_sim_pooling=transaction`` in
    the URL (behind PgBouncer in transaction mode) prepares nothing, sets nothing per
    session and offers no wake channel (workers poll): ``database.pooling_of``.
    Raises ``StoreError`` at once if the server cannot be reached or the schema is wrong,
    ``ConfigError`` for a bad ``sms_sim_pooling``.
    """

    def __init__(self, dsn: str, *, create: bool = False, read_only: bool = False,
                 pool_size: int = DEFAULT_POOL_SIZE,
                 lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
                 prepare_threshold: int | None = 5,
                 check_clock: Clock | None = None) -> None:
        dsn, transaction_pooling = pooling_of(dsn)
        self._db = Database(dsn, create=create, read_only=read_only, pool_size=pool_size,
                            lock_timeout_s=lock_timeout_s, prepare_threshold=prepare_threshold,
                            transaction_pooling=transaction_pooling)
        self.name = self._db.name
        # A claimer's ``now`` may lag by its waits for locks (each up to the lock timeout):
        # only a lease granted later than that past it proves a backward clock jump.
        self._jump_s = clock_jumped_back_after_s(lock_timeout_s)
        self._cancels = CancelCache(check_clock or RealClock(), self._read_cancelled)

    # --- writes --------------------------------------------------------------------------

    def wake_channel(self) -> WakeChannel | None:
        """A listener for one worker (``dispatch.wake``); None under transaction pooling,
        where no session stays ours to listen on."""
        if self._db.transaction_pooling:
            return None
        return ListenChannel(self._db.dsn)

    def submit(self, message: NewMessage, now: float) -> SubmitResult:
        with self._db.transaction() as conn:
            result = submit_message(conn, message, now)
            if result.created:
                notify(conn)
            return result

    def edit(self, message_id: int, expected_version: int, edit: MessageEdit,
             now: float, *, tenant: str | None = None) -> MessageView:
        with self._db.transaction() as conn:
            # New recipients meet the opt-out list: its lock before the message's row lock
            # (the lock order of ``lists``).
            if edit.recipients is not None and could_be_an_id(message_id):
                owner = conn.execute("SELECT tenant FROM messages WHERE id = %s",
                                     (message_id,)).fetchone()
                if owner is not None:
                    lists.lock_opt_outs(conn, owner[0], exclusive=False)
            status, version, started = message_state(conn, message_id, tenant, lock=True)
            if status is not MessageStatus.SCHEDULED:
                raise LockedError(locked_message(message_id, status, started))
            if version != expected_version:
                raise ConflictError(f"message {message_id} is at version {version}, "
                                    f"not {expected_version}: read it again and retry")
            shape = None if edit.content is None else segments(edit.content)
            row = conn.execute(
                "UPDATE messages SET content = COALESCE(%s, content), "
                "encoding = COALESCE(%s, encoding), segments = COALESCE(%s, segments), "
                "scheduled_at = COALESCE(%s, scheduled_at), version = version + 1, "
                "updated_at = %s WHERE id = %s RETURNING scheduled_at, valid_until, tenant",
                (edit.content, None if shape is None else str(shape.encoding),
                 None if shape is None else shape.count, edit.scheduled_at, now,
                 message_id)).fetchone()
            assert row is not None  # locked above
            conn.execute("UPDATE messages SET valid_until = %s WHERE id = %s",
                         (edit.validity_end(row[0], row[1]), message_id))
            if edit.recipients is not None:
                conn.execute("DELETE FROM deliveries WHERE message_id = %s", (message_id,))
                copy_deliveries(conn, message_id, row[2], edit.recipients, row[0])
                lists.complete_done(conn, [message_id], now)
            elif edit.scheduled_at is not None:
                conn.execute("UPDATE deliveries SET next_attempt_at = %s WHERE message_id = %s",
                             (edit.scheduled_at, message_id))
            notify(conn)  # its due time may have moved earlier
            return message_views(conn, message_id=message_id, status=None, before=None,
                                 limit=1, newest_first=False, tenant=None)[0]

    def cancel(self, message_id: int, now: float, *,
               tenant: str | None = None) -> CancelResult:
        with self._db.transaction() as conn:
            # The row lock orders this cancel with claims: a claim holding the message
            # finishes first (its leases then count as in flight), or waits for us.
            status, _, _ = message_state(conn, message_id, tenant, lock=True)
            if status not in (MessageStatus.SCHEDULED, MessageStatus.DISPATCHING):
                raise LockedError(f"message {message_id} is already {status}; nothing to cancel")
            by_status = status_counts(dict(conn.execute(
                f"SELECT {STATUS}, count(*) FROM deliveries AS d JOIN messages AS m "
                "ON m.id = d.message_id WHERE d.message_id = %s GROUP BY 1",
                (message_id,)).fetchall()))
            # Its fresh run ends here too (``chunk``: a fresh delivery is a pending one);
            # the range-leased ones are leased, their settles decide them.
            conn.execute("UPDATE deliveries AS d SET status = 'cancelled', fresh = false "
                         "FROM messages AS m WHERE m.id = d.message_id AND d.message_id = %s "
                         f"AND d.status IN ('pending', 'retrying') AND NOT {RANGE_LEASED}",
                         (message_id,))
            conn.execute("UPDATE messages SET status = 'cancelled', version = version + 1, "
                         "fresh_next = NULL, fresh_left = 0, updated_at = %s WHERE id = %s",
                         (now, message_id))
            notify(conn)  # idle workers waiting for its due time recompute theirs
        self._cancels.mark(message_id)
        return cancel_result(message_id, by_status, status)

    def claim(self, owner: str, limit: int, lease_s: float, now: float) -> list[Claim]:
        check_claim(limit, lease_s, now)
        if limit <= 0:
            return []
        with self._db.transaction() as conn:
            return claim_deliveries(conn, owner, limit, lease_s, now, self._jump_s)

    def settle(self, owner: str, settlements: Sequence[Settlement], now: float) -> SettleResult:
        check_settlements(settlements, now)
        if not settlements:
            return SettleResult(accepted=0, refused=0)
        with self._db.transaction() as conn:
            accepted = settle_rows(conn, owner, settlements, now)
            # Work a stopping worker gives back is work no idle peer knows of (they wait
            # up to their 5 s idle recheck): one wake-up per such settle, never per row.
            if accepted and any(s.kind is SettleKind.RELEASE for s in settlements):
                notify(conn)
        return SettleResult(accepted=accepted, refused=len(settlements) - accepted)

    def requeue_dead(self, message_id: int | None, now: float, *,
                     delivery_ids: Collection[int] | None = None,
                     tenant: str | None = None) -> int:
        ids = None if delivery_ids is None else [
            i for i in delivery_ids if 0 <= i <= INT64_MAX]
        with self._db.transaction() as conn:
            if message_id is not None:
                message_state(conn, message_id, tenant)
            requeued = requeue_rows(conn, message_id, now, ids, tenant)
            if requeued:
                notify(conn)
            return requeued

    def keyed(self, idempotency_key: str, *, tenant: str, now: float) -> int | None:
        row = self._db.run(lambda conn: conn.execute(
            "SELECT id FROM messages WHERE tenant = %s AND idempotency_key = %s",
            (tenant, idempotency_key)).fetchone())
        return None if row is None else int(row[0])

    def keep_receipt(self, message_id: int, receipt: str, *,
                     tenant: str | None = None) -> bool:
        with self._db.transaction() as conn:
            message_state(conn, message_id, tenant)
            return conn.execute("UPDATE messages SET receipt = %s WHERE id = %s AND "
                                "receipt IS NULL", (receipt, message_id)).rowcount > 0

    def prune(self, finished_before: float, *, dry_run: bool = False,
              batch_rows: int = PRUNE_BATCH_ROWS) -> PruneResult:
        check_prune(finished_before, batch_rows)
        return prune_messages(self._db, finished_before, dry_run=dry_run,
                              batch_rows=batch_rows)

    def transfer(self) -> PostgresTransfer:
        """This database as rows, for ``stores.transfer.copy_store``."""
        return PostgresTransfer(self._db)

    def check_writable(self, within_s: float | None = None) -> None:
        # An UPDATE that matches nothing still fails on a read-only transaction or standby;
        # it waits only for a table lock (a migration's), here at most ``within_s``.
        with self._db.transaction(within_s=within_s) as conn:
            if within_s is not None:
                conn.execute("SELECT set_config('lock_timeout', %s, true)",
                             (str(max(1, int(within_s * 1000))),))
            conn.execute("UPDATE sms_sim_schema SET version = version WHERE false")

    def close(self) -> None:
        self._db.close()

    # --- API keys ------------------------------------------------------------------------

    def add_api_key(self, key: ApiKey, secret_hash: str) -> None:
        inserted = self._db.run(lambda conn: conn.execute(
            "INSERT INTO api_keys (key_id, tenant, secret_hash, created_at, revoked_at, role) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (key_id) DO NOTHING",
            (key.key_id, key.tenant, secret_hash, key.created_at, key.revoked_at,
             str(key.role))).rowcount)
        if not inserted:
            raise ConflictError(f"an API key with id {key.key_id!r} exists already")

    def api_key(self, key_id: str) -> tuple[ApiKey, str] | None:
        row = self._db.run(lambda conn: conn.execute(
            f"SELECT {_KEY_COLUMNS}, secret_hash FROM api_keys WHERE key_id = %s",
            (key_id,)).fetchone())
        return None if row is None else (_key(row), str(row[5]))

    def revoke_api_key(self, key_id: str, now: float) -> ApiKey:
        row = self._db.run(lambda conn: conn.execute(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, %s) WHERE key_id = %s "
            f"RETURNING {_KEY_COLUMNS}", (now, key_id)).fetchone())
        if row is None:
            raise NotFoundError(f"no API key with id {key_id!r}")
        return _key(row)

    def api_keys(self, *, tenant: str | None = None) -> list[ApiKey]:
        query = f"SELECT {_KEY_COLUMNS} FROM api_keys"
        params: list[object] = []
        if tenant is not None:
            query += " WHERE tenant = %s"
            params.append(tenant)
        rows = self._db.run(lambda conn: conn.execute(
            query + " ORDER BY created_at, key_id", params).fetchall())
        return [_key(row) for row in rows]

    # --- opt-outs and delivery receipts ----------------------------------------------------

    def add_opt_outs(self, tenant: str, phones: Iterable[str], now: float) -> OptOutResult:
        wanted = list(dict.fromkeys(phones))
        with self._db.transaction() as conn:
            return lists.add_opt_outs(conn, tenant, wanted, now)

    def remove_opt_out(self, tenant: str, phone: str) -> bool:
        with self._db.transaction() as conn:
            return lists.remove_opt_out(conn, tenant, phone)

    def opt_outs(self, tenant: str, *, after: str | None = None,
                 limit: int = 1000) -> list[OptOut]:
        check_listing(None, limit)
        return self._db.run(lambda conn: lists.list_opt_outs(conn, tenant, after,
                                                             min(limit, INT64_MAX)))

    def record_dlrs(self, reports: Sequence[DlrReport], now: float) -> DlrResult:
        reports = check_dlrs(reports, now)
        with self._db.transaction() as conn:
            return lists.record_dlrs(conn, reports)

    # --- reads ---------------------------------------------------------------------------

    def cancelled(self, message_ids: Collection[int]) -> set[int]:
        """From ``CancelCache``: read at most once per ``CANCEL_RECHECK_S`` per message (a
        worker asks once per send; hosts share nothing but the database)."""
        self._db.check_open()  # a closed store still says so, whatever is remembered
        return self._cancels.cancelled(message_ids)

    def _read_cancelled(self, ids: list[int]) -> set[int]:
        rows = self._db.run(lambda conn: conn.execute(
            "SELECT id FROM messages WHERE id = ANY(%s) AND status = 'cancelled'",
            (ids,)).fetchall())
        return {int(row[0]) for row in rows}

    def next_due_at(self, now: float) -> float | None:
        # Only messages that may still be claimed count: anything else due would make
        # every worker spin on empty claims. The first entry of the due index (per-row
        # work) whose message is open, the earliest open message with a fresh run (due at
        # its scheduled time: ``chunk``), the earliest lease end, and the earliest validity
        # end of an open message with work left (its fresh run, or per-row work through
        # ``deliveries_waiting``: a worker wakes then and its claim expires them).
        row = self._db.run(lambda conn: conn.execute(
            "SELECT LEAST((SELECT d.next_attempt_at FROM deliveries AS d WHERE d.waiting IS "
            "NOT NULL AND EXISTS (SELECT 1 FROM messages AS m "
            "WHERE m.id = d.message_id AND m.status IN ('scheduled', 'dispatching')) "
            "ORDER BY d.next_attempt_at LIMIT 1), (SELECT min(m.scheduled_at) FROM messages "
            "AS m WHERE m.status IN ('scheduled', 'dispatching') AND m.fresh_left > 0), "
            "(SELECT min(until) FROM leases WHERE open > 0), "
            "(SELECT m.valid_until FROM messages AS m WHERE m.valid_until IS NOT NULL AND "
            "m.status IN ('scheduled', 'dispatching') AND (m.fresh_left > 0 OR "
            f"{lists.SOME_WAITING}) ORDER BY m.valid_until LIMIT 1))").fetchone())
        return None if row is None or row[0] is None else float(row[0])

    def messages(self, *, message_id: int | None = None, status: MessageStatus | None = None,
                 limit: int = 100, newest_first: bool = False, before: int | None = None,
                 tenant: str | None = None) -> list[MessageView]:
        if not check_listing(message_id, limit, before=before):
            self._db.check_open()
            return []
        return self._db.run(lambda conn: message_views(
            conn, message_id=message_id, status=status, before=before, limit=limit,
            newest_first=newest_first, tenant=tenant))

    def count_messages(self, *, status: MessageStatus | None = None,
                       before: int | None = None, tenant: str | None = None) -> int:
        if not check_listing(None, 0, before=before):
            return 0
        return self._db.run(lambda conn: message_count(conn, status=status, before=before,
                                                       tenant=tenant))

    def delivery_counts(self, *, tenant: str | None = None) -> dict[DeliveryStatus, int]:
        return self._db.run(lambda conn: delivery_counts(conn, tenant))

    def deliveries(self, *, message_id: int | None = None,
                   status: DeliveryStatus | None = None, limit: int = 1000,
                   recipient: str | None = None, after: int | None = None,
                   tenant: str | None = None) -> list[DeliveryView]:
        if not check_listing(message_id, limit, after=after):
            return []
        return self._db.run(lambda conn: delivery_views(
            conn, message_id=message_id, status=status, recipient=recipient, after=after,
            limit=limit, tenant=tenant))


def _key(row: Sequence[Any]) -> ApiKey:
    key_id, tenant, created_at, revoked_at, role = row[:5]
    return ApiKey(key_id=key_id, tenant=tenant, created_at=created_at, revoked_at=revoked_at,
                  role=KeyRole(role))


_check: type[DispatchStore] = PostgresStore
