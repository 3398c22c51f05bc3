"""One SQLite connection as the dispatch store uses it: opened, checked, upgraded, and every
write transaction run under one lock, with the store's own wait for SQLite's locks.

Reads of a file opened for writing run on connections of their own (``read``), not under
that lock: in WAL a reader never waits for a writer, but the one connection made every read
of this store object queue behind the write holding it, fsync included. An API submit's key
check waited for other submits' commits that way (issue 12's benchmark).

Why ``BEGIN IMMEDIATE`` for every write: a deferred transaction that reads and then writes
must upgrade its lock, and SQLite answers a contended upgrade with "database is locked" at
once, without waiting for the busy timeout. Taking the write lock first makes every
read-check-write of the store atomic against other connections and processes. Every
``sqlite3.Error`` leaves as a ``StoreError`` (``store_error``) after the transaction is
rolled back.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TypeVar

from sms_sim.clock import Clock, RealClock
from sms_sim.version import __version__
from sms_sim.dispatch.errors import NoStoreError, StoreBusyError, StoreError
from sms_sim.dispatch.stores.sqlite.rows import store_error
from sms_sim.dispatch.stores.sqlite.schema import SCHEMA_SQL, SCHEMA_VERSION, UPGRADES

__all__ = ["Database", "DEFAULT_BUSY_TIMEOUT_S", "Write"]

# ``Database.write`` as the modules that run write transactions take it.
Write = Callable[[], AbstractContextManager[sqlite3.Connection]]

DEFAULT_BUSY_TIMEOUT_S = 30.0
_FIRST_PAUSE_S = 0.0001
_MAX_PAUSE_S = 0.001
_NEVER = threading.Event()  # lock waits are short and bounded; nothing interrupts them
_T = TypeVar("_T")


def _code(exc: sqlite3.Error) -> int | None:
    """The primary result code of ``exc``; None for errors raised by the sqlite3 module
    itself (text that is not UTF-8, say), which carry none."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def _is_busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY or one of its extended codes."""
    return _code(exc) == sqlite3.SQLITE_BUSY


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


class Database:
    """The store's connection to ``path``; see ``SqliteStore`` for the options."""

    def __init__(self, path: str, *, create: bool, read_only: bool, busy_timeout_s: float,
                 max_page_count: int | None, lock_clock: Clock | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        # Idle reader connections (``read``), for a file opened for writing in WAL mode; the
        # pool grows to the most reads ever in flight at once and shrinks only at close.
        self._readers: list[sqlite3.Connection] | None = None
        self._readers_lock = threading.Lock()
        self._closed = False
        self._busy_timeout_s = busy_timeout_s
        self.upgraded_from: str | None = None  # the schema before this opening upgraded it
        self._lock_clock: Clock = RealClock() if lock_clock is None else lock_clock
        self._jitter = random.Random()
        if Path(self.path).is_dir():  # SQLite says "disk I/O error" or "unable to open"
            raise StoreError(f"{self.path!r} is a directory, not a database file (check --db)")
        mode = "ro" if read_only else ("rwc" if create else "rw")
        uri = f"file:{urllib.parse.quote(self.path)}?mode={mode}"
        if read_only and _needs_immutable(self.path):
            uri += "&immutable=1"
        try:
            # No SQLite busy handler (timeout 0): ``when_free`` does all the waiting.
            self._conn = sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None,
                                         check_same_thread=False)
        except sqlite3.Error as exc:
            if not create and not Path(self.path).exists():
                raise NoStoreError(f"no database at {self.path!r} (submit a message or run "
                                   "init first, or check --db)") from exc
            raise StoreError(f"cannot open database {self.path!r}: {exc}") from exc
        try:
            self._setup(create=create, read_only=read_only, max_page_count=max_page_count)
        except BaseException:
            self._conn.close()
            raise

    def _setup(self, *, create: bool, read_only: bool, max_page_count: int | None) -> None:
        """Check the file is ours, then create or upgrade the schema: every step through
        ``when_free``, because processes opening one new file at once meet each other's
        locks here too (``journal_mode = WAL`` answers "busy" without waiting)."""
        conn = self._conn
        tables = self._tables()
        if tables and "sms_sim_meta" not in tables:
            raise StoreError(f"{self.path!r} is an SQLite database but not an sms_sim one "
                             f"(tables: {', '.join(sorted(tables)[:5])})")
        if not tables and (not create or read_only):
            raise NoStoreError(f"{self.path!r} holds no sms_sim database (nothing submitted "
                               "yet?)")
        try:
            if not read_only:
                self._use_wal()
            if max_page_count is not None:
                conn.execute(f"PRAGMA max_page_count = {int(max_page_count)}")
            if not tables:
                self.when_free(lambda: self._run_script(SCHEMA_SQL))  # IF NOT EXISTS
            version = self.when_free(self._schema_version)
            if version in UPGRADES and not read_only:
                self._upgrade()
                version = self.when_free(self._schema_version)
        except sqlite3.Error as exc:
            raise store_error(self.path, exc, doing="cannot prepare") from exc
        if version in UPGRADES:
            raise StoreError(f"{self.path!r} has schema {version!r}, older than "
                             f"{SCHEMA_VERSION!r}: run 'migrate' on it (or open it once for "
                             "writing: any submit, edit or worker) to upgrade it")
        if version != SCHEMA_VERSION:
            raise StoreError(f"{self.path!r} has schema {version!r}, which this sms_sim "
                             f"({__version__}, schema {SCHEMA_VERSION!r}) does not know: a "
                             "newer sms_sim made it; use that one")

    def _tables(self) -> set[str]:
        """The file's table names; refused when it is locked past the busy timeout,
        damaged (an SQLite file cut short or overwritten), or no SQLite database at all."""
        conn = self._conn
        try:
            return self.when_free(lambda: {row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")})
        except sqlite3.DatabaseError as exc:
            # Held past the busy timeout: locked, not foreign; SQLITE_CORRUPT: an SQLite
            # file cut short or overwritten, damaged (``store_error`` says both).
            if _is_busy(exc) or _code(exc) == sqlite3.SQLITE_CORRUPT:
                raise store_error(self.path, exc) from exc
            raise StoreError(f"{self.path!r} is not an SQLite database ({exc})") from exc

    def _use_wal(self) -> None:
        """WAL with ``synchronous = FULL``; reads apart (``read``) if the file took WAL."""
        conn = self._conn
        (mode,) = self.when_free(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
        if str(mode).lower() == "wal" and self.path not in ("", ":memory:"):
            self._readers = []  # a private database has no other connection to read on
        # FULL: a commit is on disk before the call returns, so an acknowledged submit or a
        # recorded send survives a power cut, not only a killed process.
        conn.execute("PRAGMA synchronous = FULL")

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
        with self.write() as conn:
            version = self._schema_version()
            if version in UPGRADES:
                self.upgraded_from = version
            while version in UPGRADES:
                version, statements = UPGRADES[version]
                for statement in statements:
                    conn.execute(statement)
                conn.execute("UPDATE sms_sim_meta SET value = ? WHERE key = 'schema'",
                             (version,))

    def when_free(self, attempt: Callable[[], _T], *, within_s: float | None = None) -> _T:
        """Run ``attempt`` until SQLite stops answering "busy", for up to the busy timeout
        (or ``within_s``, if shorter).

        SQLite's own busy handler sleeps 1, 2, 5, 10 ... then 100 ms between tries, so a
        waiter mostly sleeps through the moments the lock is free: a submit waited over a
        second behind busy workers, and two dispatchers were slower together than one
        alone. This one tries again after at most ``_MAX_PAUSE_S`` (randomised, so waiters do
        not move in step), which costs a few system calls per millisecond of waiting.
        """
        clock = self._lock_clock
        pause_s = _FIRST_PAUSE_S
        wait_s = self._busy_timeout_s if within_s is None else min(within_s, self._busy_timeout_s)
        deadline = clock.monotonic() + wait_s
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or clock.monotonic() >= deadline:
                    raise
            clock.sleep(pause_s * (0.5 + self._jitter.random() / 2), _NEVER)
            pause_s = min(2 * pause_s, _MAX_PAUSE_S)

    @contextmanager
    def write(self, *, within_s: float | None = None) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction under the object lock; rolled back on error.

        ``within_s``: wait at most that long for the object lock and then the file's
        (``StoreBusyError`` past it); None: for the object lock as long as it takes (a
        write of this store object), for the file's up to the busy timeout."""
        if not self._lock.acquire(timeout=-1 if within_s is None else max(0.0, within_s)):
            raise StoreBusyError(f"database {self.path!r}: busy (a write of this process "
                                 f"held it longer than {within_s:g} s)")
        try:
            conn = self._conn
            try:
                self.when_free(lambda: conn.execute("BEGIN IMMEDIATE"), within_s=within_s)
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
        finally:
            self._lock.release()

    def read(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        """A read in one (deferred) transaction, so its several queries see one snapshot.

        On a file opened for writing in WAL mode the read runs on a reader connection of
        its own (``query_only``), without this object's lock, so it never waits for a
        write of this store object (nor, as in WAL always, another process's). It sees
        every transaction committed before it began, those of this object included: a
        caller reads back what it has written. A read-only or private database keeps the
        one connection, under the lock.

        Retried whole when busy (a WAL reader can meet a checkpoint or recovery): a read
        has no effects to repeat.
        """
        def attempt(conn: sqlite3.Connection) -> _T:
            conn.execute("BEGIN")
            try:
                return body(conn)
            finally:
                conn.execute("COMMIT")

        if self._readers is None:
            with self._lock:
                try:
                    return self.when_free(lambda: attempt(self._conn))
                except sqlite3.Error as exc:
                    raise store_error(self.path, exc) from exc
        reader = self._reader()
        try:
            found = self.when_free(lambda: attempt(reader))
        except BaseException as exc:
            reader.close()  # in whatever state the error left it: not used again
            if isinstance(exc, sqlite3.Error):
                raise store_error(self.path, exc) from exc
            raise
        self._give_back(reader)
        return found

    def _reader(self) -> sqlite3.Connection:
        """An idle reader connection, or a new one (opened outside the pool's lock)."""
        with self._readers_lock:
            if self._closed:
                raise StoreError(f"database {self.path!r}: the store is closed")
            if self._readers:
                return self._readers.pop()
        try:
            reader = sqlite3.connect(f"file:{urllib.parse.quote(self.path)}?mode=rw", uri=True,
                                     timeout=0, isolation_level=None, check_same_thread=False)
            reader.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            raise store_error(self.path, exc) from exc
        return reader

    def _give_back(self, reader: sqlite3.Connection) -> None:
        with self._readers_lock:
            if self._readers is not None and not self._closed:
                self._readers.append(reader)
                return
        reader.close()

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction held for the caller's block: every read in it sees the file
        as it was at the first (WAL lets writers go on meanwhile). For a long read (a copy);
        driver errors leave as ``StoreError``."""
        with self._lock:
            conn = self._conn
            try:
                self.when_free(lambda: conn.execute("BEGIN"))
                self.when_free(lambda: conn.execute("SELECT 1 FROM sms_sim_meta").fetchall())
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise store_error(self.path, exc) from exc
            try:
                yield conn
            except sqlite3.Error as exc:
                raise store_error(self.path, exc) from exc
            finally:
                conn.execute("ROLLBACK")

    @property
    def reads_apart(self) -> bool:
        """Whether ``read`` runs on reader connections of its own (a file opened for writing,
        in WAL mode) rather than on the writer's, under its lock."""
        return self._readers is not None

    @property
    def lock_clock(self) -> Clock:
        return self._lock_clock

    def let_others_in(self) -> None:
        """Pause between two write transactions of one long job (a large submit's chunks):
        SQLite keeps no queue for its write lock, and a writer that takes it again at once
        keeps winning over the others' retries (``when_free`` tries every ``_MAX_PAUSE_S``
        at most), so the pause is a little longer than that."""
        self._lock_clock.sleep(2 * _MAX_PAUSE_S, _NEVER)

    def close(self) -> None:
        """Close the readers, then the writer: the last connection to close checkpoints the
        WAL into the file. A read still running closes its reader as it ends."""
        with self._lock:
            with self._readers_lock:
                self._closed = True
                idle, self._readers = self._readers or [], None
            for reader in idle:
                reader.close()
            self._conn.close()
