"""``DispatchStore`` on SQLite (standard library ``sqlite3``): WAL, busy timeout, and
``BEGIN IMMEDIATE`` for every write transaction.

Why IMMEDIATE: a deferred transaction that reads and then writes must upgrade its lock, and
SQLite answers a contended upgrade with "database is locked" at once, without waiting for the
busy timeout. Taking the write lock first makes every read-check-write here (edit's version
check, claim's selection) atomic against other connections and processes.

One store object owns one connection, guarded by a lock, so it may be shared by threads;
use one store object per worker for parallelism. Every ``sqlite3.Error`` leaves as a
``StoreError`` (``raise ... from exc``) after the transaction is rolled back.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sms_sim.clock import Clock, RealClock
from sms_sim.dispatch.contract import (
    CancelResult,
    Claim,
    ConflictError,
    DeliveryStatus,
    DeliveryView,
    DispatchStore,
    LockedError,
    effective_priority,
    MessageEdit,
    MessageStatus,
    MessageView,
    NewMessage,
    SettleKind,
    Settlement,
    SettleResult,
    StoreError,
    SubmitResult,
)
from sms_sim.dispatch.stores.common import (
    EXPIRED_LEASE_ERROR,
    SKEW_FACTOR,
    fair_claim,
    locked_message,
)
from sms_sim.dispatch.stores.sqlite.rows import (
    LEASE_SQL,
    SERVED_SQL,
    SETTLE_SENT_SQL,
    SETTLE_SQL,
    counts,
    delivery_views,
    message_count,
    message_state,
    message_views,
    store_error,
    views,
)
from sms_sim.dispatch.stores.sqlite.schema import SCHEMA_SQL, SCHEMA_VERSION, UPGRADES
from sms_sim.dispatch.stores.sqlite.submit import insert_deliveries, submit_message
from sms_sim.dispatch.validation import INT64_MAX, check_claim, check_listing, check_settlements

__all__ = ["SqliteStore", "DEFAULT_BUSY_TIMEOUT_S"]

DEFAULT_BUSY_TIMEOUT_S = 30.0
_FIRST_PAUSE_S = 0.0001
_MAX_PAUSE_S = 0.001
_NEVER = threading.Event()  # lock waits are short and bounded; nothing interrupts them
_T = TypeVar("_T")


def _is_busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY or one of its extended codes. Errors raised by the sqlite3 module itself
    (text that is not UTF-8, say) carry no code at all."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


def _needs_immutable(path: str) -> bool:
    """True when a read-only open of ``path`` can only work as ``immutable``: SQLite reads a
    WAL-mode file through its ``-shm`` index, which it must create beside the file, and the
    directory is not writable (an auditor's view, a backup copy). With no ``-shm`` there,
    no process has the file open, and with no ``-wal`` holding pages nothing is left
    uncheckpointed, so reading the file alone reads all of it (issue 11, item 13). A writer
    that opens the file later (its owner can write the directory) is not seen: this is for
    reading copies and idle databases, not for watching a live dispatch."""
    folder = os.path.dirname(path) or "."
    wal = f"{path}-wal"
    return (os.path.isfile(path) and not os.path.exists(f"{path}-shm")
            and not os.access(folder, os.W_OK)
            and (not os.path.exists(wal) or os.path.getsize(wal) == 0))


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
        self._lock = threading.Lock()
        self._busy_timeout_s = busy_timeout_s
        self._lock_clock: Clock = RealClock() if lock_clock is None else lock_clock
        self._jitter = random.Random()
        # ``cancelled`` runs before every send, on sender threads: on a connection of its own,
        # so it never waits behind a claim that waits for another process's write lock.
        self._check_lock = threading.Lock()
        self._check_conn: sqlite3.Connection | None = None
        self._check_closed = False
        mode = "ro" if read_only else ("rwc" if create else "rw")
        uri = f"file:{urllib.parse.quote(self.path)}?mode={mode}"
        if read_only and _needs_immutable(self.path):
            uri += "&immutable=1"
        try:
            # No SQLite busy handler (timeout 0): ``_when_free`` does all the waiting.
            self._conn = sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None,
                                         check_same_thread=False)
        except sqlite3.Error as exc:
            if not create and not Path(self.path).exists():
                raise StoreError(f"no database at {self.path!r} (submit a message or run "
                                 "init first, or check --db)") from exc
            raise StoreError(f"cannot open database {self.path!r}: {exc}") from exc
        try:
            self._setup(create=create, read_only=read_only, max_page_count=max_page_count)
        except BaseException:
            self._conn.close()
            raise

    def _setup(self, *, create: bool, read_only: bool, max_page_count: int | None) -> None:
        """Check the file is ours, then create or upgrade the schema: every step through
        ``_when_free``, because processes opening one new file at once meet each other's
        locks here too (``journal_mode = WAL`` answers "busy" without waiting)."""
        conn = self._conn
        try:
            tables = self._when_free(lambda: {row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")})
        except sqlite3.DatabaseError as exc:
            if _is_busy(exc):  # held past the busy timeout: locked, not foreign
                raise store_error(self.path, exc) from exc
            raise StoreError(f"{self.path!r} is not an SQLite database ({exc})") from exc
        if tables and "sms_sim_meta" not in tables:
            raise StoreError(f"{self.path!r} is an SQLite database but not an sms_sim one "
                             f"(tables: {', '.join(sorted(tables)[:5])})")
        if not tables and (not create or read_only):
            raise StoreError(f"{self.path!r} holds no sms_sim database (nothing submitted yet?)")
        try:
            if not read_only:
                self._when_free(lambda: conn.execute("PRAGMA journal_mode = WAL"))
                # FULL: a commit is on disk before the call returns, so an acknowledged
                # submit or a recorded send survives a power cut, not only a killed process.
                conn.execute("PRAGMA synchronous = FULL")
            if max_page_count is not None:
                conn.execute(f"PRAGMA max_page_count = {int(max_page_count)}")
            if not tables:
                self._when_free(lambda: self._run_script(SCHEMA_SQL))  # IF NOT EXISTS
            version = self._when_free(self._schema_version)
            if version in UPGRADES and not read_only:
                self._upgrade()
                version = self._when_free(self._schema_version)
        except sqlite3.Error as exc:
            raise store_error(self.path, exc, doing="cannot prepare") from exc
        if version in UPGRADES:
            raise StoreError(f"{self.path!r} has schema {version!r}, older than "
                             f"{SCHEMA_VERSION!r}: open it once for writing (any submit, edit "
                             "or worker) to upgrade it")
        if version != SCHEMA_VERSION:
            raise StoreError(f"{self.path!r} has schema {version!r}; this version needs "
                             f"{SCHEMA_VERSION!r}")

    def _schema_version(self) -> str | None:
        row = self._conn.execute("SELECT value FROM sms_sim_meta WHERE key = 'schema'").fetchone()
        return None if row is None else str(row[0])

    def _run_script(self, script: str) -> None:
        """``executescript`` that leaves no transaction open when a statement fails."""
        try:
            self._conn.executescript(script)
        except sqlite3.Error:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def _upgrade(self) -> None:
        """Apply ``UPGRADES`` in one transaction; a racing opener finds nothing left to do."""
        with self._write() as conn:
            version = self._schema_version()
            while version in UPGRADES:
                version, statements = UPGRADES[version]
                for statement in statements:
                    conn.execute(statement)
                conn.execute("UPDATE sms_sim_meta SET value = ? WHERE key = 'schema'",
                             (version,))

    # --- plumbing ------------------------------------------------------------------------

    def _when_free(self, attempt: Callable[[], _T]) -> _T:
        """Run ``attempt`` until SQLite stops answering "busy", for up to the busy timeout.

        SQLite's own busy handler sleeps 1, 2, 5, 10 ... then 100 ms between tries, so a
        waiter mostly sleeps through the moments the lock is free: a submit waited over a
        second behind busy workers, and two dispatchers were slower together than one
        alone. This one tries again after at most ``_MAX_PAUSE_S`` (randomised, so waiters do
        not move in step), which costs a few system calls per millisecond of waiting.
        """
        clock = self._lock_clock
        pause_s = _FIRST_PAUSE_S
        deadline = clock.monotonic() + self._busy_timeout_s
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or clock.monotonic() >= deadline:
                    raise
            clock.sleep(pause_s * (0.5 + self._jitter.random() / 2), _NEVER)
            pause_s = min(2 * pause_s, _MAX_PAUSE_S)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction under the object lock; rolled back on error."""
        with self._lock:
            conn = self._conn
            try:
                self._when_free(lambda: conn.execute("BEGIN IMMEDIATE"))
            except sqlite3.Error as exc:
                raise store_error(self.path, exc) from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the failed statement may already have rolled it back
                if isinstance(exc, sqlite3.Error):
                    raise store_error(self.path, exc) from exc
                raise

    def _read(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        """A read in one (deferred) transaction, so its several queries see one snapshot.

        Retried whole when busy (a WAL reader can meet a checkpoint or recovery): a read
        has no effects to repeat.
        """
        def attempt() -> _T:
            conn.execute("BEGIN")
            try:
                return body(conn)
            finally:
                conn.execute("COMMIT")

        with self._lock:
            conn = self._conn
            try:
                return self._when_free(attempt)
            except sqlite3.Error as exc:
                raise store_error(self.path, exc) from exc

    # --- writes --------------------------------------------------------------------------

    def submit(self, message: NewMessage, now: float) -> SubmitResult:
        return submit_message(self._write, message, now)

    def edit(self, message_id: int, expected_version: int, edit: MessageEdit,
             now: float) -> MessageView:
        with self._write() as conn:
            status, version, started = message_state(conn, message_id)
            if status is not MessageStatus.SCHEDULED:
                raise LockedError(locked_message(message_id, status, started))
            if version != expected_version:
                raise ConflictError(f"message {message_id} is at version {version}, "
                                    f"not {expected_version}: read it again and retry")
            conn.execute(
                "UPDATE messages SET content = COALESCE(?, content), "
                "scheduled_at = COALESCE(?, scheduled_at), version = version + 1, "
                "updated_at = ? WHERE id = ? AND status = 'scheduled' AND version = ?",
                (edit.content, edit.scheduled_at, now, message_id, expected_version),
            )
            if edit.scheduled_at is not None:
                conn.execute("UPDATE deliveries SET next_attempt_at = ? WHERE message_id = ?",
                             (edit.scheduled_at, message_id))
            if edit.recipients is not None:
                (due_at,) = conn.execute("SELECT scheduled_at FROM messages WHERE id = ?",
                                         (message_id,)).fetchone()
                conn.execute("DELETE FROM deliveries WHERE message_id = ?", (message_id,))
                insert_deliveries(conn, message_id, edit.recipients, due_at)
            return views(conn, "WHERE id = ?", (message_id,))[0]

    def cancel(self, message_id: int, now: float) -> CancelResult:
        with self._write() as conn:
            status, _, _ = message_state(conn, message_id)
            if status not in (MessageStatus.SCHEDULED, MessageStatus.DISPATCHING):
                raise LockedError(f"message {message_id} is already {status}; nothing to cancel")
            by_status = counts(conn, message_id)
            conn.execute("UPDATE deliveries SET status = 'cancelled' WHERE message_id = ? AND "
                         "status IN ('pending', 'retrying')", (message_id,))
            conn.execute("UPDATE messages SET status = 'cancelled', version = version + 1, "
                         "updated_at = ? WHERE id = ?", (now, message_id))
        return CancelResult(
            message_id=message_id,
            cancelled=by_status[DeliveryStatus.PENDING] + by_status[DeliveryStatus.RETRYING],
            already_sent=by_status[DeliveryStatus.SENT],
            in_flight=by_status[DeliveryStatus.LEASED],
            was_status=status,
        )

    def claim(self, owner: str, limit: int, lease_s: float, now: float) -> list[Claim]:
        check_claim(limit, lease_s, now)
        if limit <= 0:
            return []
        lease_until = now + lease_s
        claims: list[Claim] = []
        with self._write() as conn:
            # Rescue: one statement, so the compare (still leased, lease expired) and the
            # set cannot be split by a completion landing in between. A lease ending after
            # now + SKEW_FACTOR x its own length was granted before the clock jumped back:
            # it is reclaimed too (the slack absorbs callers whose ``now`` was read before a
            # lock wait). Leases from before schema 4 have no length: ours stands in.
            conn.execute(
                "UPDATE deliveries SET status = CASE WHEN (SELECT status FROM messages WHERE "
                "messages.id = deliveries.message_id) = 'cancelled' THEN 'cancelled' "
                "ELSE 'retrying' END, next_attempt_at = ?1, lease_owner = NULL, "
                "lease_until = NULL, lease_s = NULL, last_error = ?2, "
                "lease_losses = lease_losses + 1 WHERE status = 'leased' AND "
                f"(lease_until <= ?1 OR lease_until > ?1 + {SKEW_FACTOR} * COALESCE(lease_s, ?3))",
                (now, EXPIRED_LEASE_ERROR, lease_s),
            )
            # Never served first (NULLs sort first), oldest due first; then least recently.
            due = conn.execute(
                "SELECT id, content, priority, uid, COALESCE(served_at, scheduled_at) "
                "FROM messages WHERE status IN ('scheduled', 'dispatching') "
                "AND scheduled_at <= ? ORDER BY served_seq, scheduled_at, id",
                (now,),
            ).fetchall()
            content = {row[0]: row for row in due}
            (last_served,) = conn.execute("SELECT MAX(served_seq) FROM messages").fetchone()
            serves = itertools.count((last_served or 0) + 1)
            served: dict[int, int] = {}  # message id -> its latest serve order in this claim

            classes = {row[0]: effective_priority(row[2], row[4], now) for row in due}

            def take(message_id: int, count: int) -> int:
                rows = conn.execute(LEASE_SQL, (owner, lease_until, lease_s, message_id, now,
                                                count)).fetchall()
                if rows:
                    rows.sort()
                    _, text, _, uid, _ = content[message_id]
                    priority = classes[message_id]
                    claims.extend(
                        Claim(delivery_id, message_id, recipient, text, attempts, lease_until,
                              lease_losses, uid, priority)
                        for delivery_id, recipient, attempts, lease_losses in rows
                    )
                    served[message_id] = next(serves)
                return len(rows)

            fair_claim([(classes[row[0]], row[0]) for row in due], limit, take)
            if served:
                conn.execute(SERVED_SQL, (now, json.dumps(list(served.items()))))
        return claims

    def settle(self, owner: str, settlements: Sequence[Settlement], now: float) -> SettleResult:
        check_settlements(settlements, now)
        if not settlements:
            return SettleResult(accepted=0, refused=0)
        sent = [item[:2] for item in settlements if item.kind is SettleKind.SENT]
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
            if sent:  # the hot path: one statement, a primary-key lookup per row
                returned = conn.execute(SETTLE_SENT_SQL, (now, owner, json.dumps(sent))).fetchall()
                accepted += len(returned)
                touched.update(message_id for (message_id,) in returned)
            for kind, rows in by_kind.items():
                if rows:
                    accepted += conn.executemany(SETTLE_SQL[kind], rows).rowcount
            if others:
                touched.update(message_id for (message_id,) in conn.execute(
                    "SELECT DISTINCT message_id FROM deliveries WHERE id IN "
                    "(SELECT value FROM json_each(?))",
                    (json.dumps([item.delivery_id for item in others]),)))
            if touched:
                conn.execute(
                    "UPDATE messages SET status = 'completed', completed_at = ?, updated_at = ? "
                    "WHERE status = 'dispatching' AND id IN (SELECT value FROM json_each(?)) "
                    "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = messages.id "
                    "AND d.status IN ('pending', 'leased', 'retrying'))",
                    (now, now, json.dumps(sorted(touched))),
                )
        return SettleResult(accepted=accepted, refused=len(settlements) - accepted)

    def requeue_dead(self, message_id: int | None, now: float) -> int:
        with self._write() as conn:
            if message_id is not None:
                message_state(conn, message_id)
            rows = conn.execute(
                "UPDATE deliveries SET status = 'pending', attempts = 0, lease_losses = 0, "
                "next_attempt_at = ?1 "
                "WHERE status = 'dead' AND (?2 IS NULL OR message_id = ?2) AND message_id IN "
                "(SELECT id FROM messages WHERE status != 'cancelled') RETURNING message_id",
                (now, message_id),
            ).fetchall()
            conn.execute(
                "UPDATE messages SET status = 'dispatching', completed_at = NULL, updated_at = ? "
                "WHERE status = 'completed' AND id IN (SELECT value FROM json_each(?))",
                (now, json.dumps(sorted({row[0] for row in rows}))),
            )
        return len(rows)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
        with self._check_lock:
            self._check_closed = True
            if self._check_conn is not None:
                self._check_conn.close()

    # --- reads ---------------------------------------------------------------------------

    def cancelled(self, message_ids: Collection[int]) -> set[int]:
        if not message_ids:
            return set()
        wanted = json.dumps(sorted(message_ids))
        with self._check_lock:
            if self._check_closed:
                raise StoreError(f"database {self.path!r}: the store is closed")
            try:
                if self._check_conn is None:
                    self._check_conn = sqlite3.connect(
                        f"file:{urllib.parse.quote(self.path)}?mode=ro", uri=True, timeout=0,
                        isolation_level=None, check_same_thread=False)
                conn = self._check_conn
                return self._when_free(lambda: {row[0] for row in conn.execute(
                    "SELECT id FROM messages WHERE status = 'cancelled' AND id IN "
                    "(SELECT value FROM json_each(?))", (wanted,))})
            except sqlite3.Error as exc:
                raise store_error(self.path, exc) from exc

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
            times = [t for t in (ready, lease) if t is not None]
            return min(times) if times else None

        return self._read(body)

    def messages(self, *, message_id: int | None = None, status: MessageStatus | None = None,
                 limit: int = 100, newest_first: bool = False,
                 before: int | None = None) -> list[MessageView]:
        if not check_listing(message_id, limit, before=before):
            return []
        return self._read(lambda conn: message_views(
            conn, message_id=message_id, status=status, before=before,
            limit=min(limit, INT64_MAX), newest_first=newest_first))

    def count_messages(self, *, status: MessageStatus | None = None,
                       before: int | None = None) -> int:
        if not check_listing(None, 0, before=before):
            return 0
        return self._read(lambda conn: message_count(conn, status=status, before=before))

    def deliveries(self, *, message_id: int | None = None,
                   status: DeliveryStatus | None = None, limit: int = 1000,
                   recipient: str | None = None,
                   after: int | None = None) -> list[DeliveryView]:
        if not check_listing(message_id, limit, after=after):
            return []
        return self._read(lambda conn: delivery_views(
            conn, message_id=message_id, status=status, recipient=recipient, after=after,
            limit=min(limit, INT64_MAX)))

    def integrity_check(self) -> str:
        """SQLite's own ``PRAGMA integrity_check`` verdict: "ok" when the file is sound."""
        return self._read(lambda conn: str(conn.execute("PRAGMA integrity_check").fetchone()[0]))


_check: type[DispatchStore] = SqliteStore
