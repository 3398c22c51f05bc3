"""The simulated provider shared by worker processes: its own SQLite file, kept apart from the
store's, so the crash and chaos tests can count what reached the phones independently of
what the store believes.

A ledger file is marked as one (``PRAGMA application_id``), and ``LedgerProvider`` opens
nothing else: not the store (``--ledger`` given the ``--db`` path), not another application's
database, not a file that is no database at all (issue 11, item 7). A new or empty file
becomes a ledger; a file holding exactly the ledger's two tables is one made before the mark,
and is marked.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from sms_sim.clock import Clock
from sms_sim.dispatch.transport import LedgerSummary, TransportError

__all__ = ["LedgerProvider", "LEDGER_APPLICATION_ID"]

LEDGER_APPLICATION_ID = 0x534D534C  # "SMSL" in the header's application_id field
_LEDGER_TABLES = frozenset({"keys", "attempts"})
_CREATE_SQL = (
    "CREATE TABLE IF NOT EXISTS keys (key TEXT PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS attempts (seq INTEGER PRIMARY KEY, key TEXT NOT NULL,"
    " target TEXT NOT NULL, worker TEXT NOT NULL, delivered INTEGER NOT NULL, at REAL NOT NULL)",
    f"PRAGMA application_id = {LEDGER_APPLICATION_ID}",  # in the transaction: all or nothing
)


class LedgerProvider:
    """A provider shared by processes: an SQLite file of its own (never the store's file).

    Each send is one ``BEGIN IMMEDIATE`` transaction: the unique key table says whether the
    key is new, and the append-only ``attempts`` table logs the call either way. With
    ``dedup=False`` every call delivers (the negative control of the crash test).

    Raises ``TransportError`` (one line naming the path) if the file cannot be opened or is
    not a ledger; a refused file is left exactly as it was.
    """

    def __init__(self, path: str | Path, *, clock: Clock, dedup: bool = True, worker: str = "",
                 busy_timeout_s: float = 60.0) -> None:
        self._clock = clock
        self._dedup = dedup
        self._worker = worker
        self._lock = threading.Lock()
        where = str(path)
        try:
            self._conn = sqlite3.connect(where, timeout=busy_timeout_s,
                                         isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise TransportError(f"cannot open provider ledger {where!r}: {exc}") from exc
        try:
            self._prepare(where)
        except BaseException:
            self._conn.close()
            raise

    def _prepare(self, where: str) -> None:
        """Look (reading only), refuse what is not a ledger, then create or mark it under the
        write lock, looking again there (another process may have made it meanwhile), and
        only then switch it to WAL: a refused file never sees a write or a journal change."""
        conn = self._conn
        try:
            _refuse_foreign(where, *_look(conn))
            conn.execute("BEGIN IMMEDIATE")
            try:
                application_id, names = _look(conn)
                _refuse_foreign(where, application_id, names)
                if application_id != LEDGER_APPLICATION_ID:
                    for statement in _CREATE_SQL:
                        conn.execute(statement)
                conn.execute("COMMIT")
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            self._use_wal()
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_NOTADB:
                raise TransportError(f"{where!r} is not an SQLite database, so not a provider "
                                     "ledger") from exc
            raise TransportError(f"cannot open provider ledger {where!r}: {exc}") from exc

    def _use_wal(self) -> None:
        """WAL, so senders in other processes read while one writes; asked only of a file
        not in WAL yet (a new ledger), within the busy timeout like any other lock wait."""
        if self._conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self._conn.execute("PRAGMA journal_mode = WAL")

    def send(self, key: str, recipient: str, content: str) -> None:
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                fresh = True
                if self._dedup:
                    fresh = conn.execute("INSERT OR IGNORE INTO keys (key) VALUES (?)",
                                         (key,)).rowcount == 1
                conn.execute("INSERT INTO attempts (key, target, worker, delivered, at) "
                             "VALUES (?, ?, ?, ?, ?)",
                             (key, _target(key), self._worker, fresh, self._clock.now()))
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise TransportError(f"provider ledger unavailable: {exc}") from exc

    def summary(self) -> LedgerSummary:
        with self._lock:
            rows = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(delivered), 0) FROM attempts").fetchone()
            per_target = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(n - 1), 0) FROM (SELECT target, COUNT(*) AS n "
                "FROM attempts WHERE delivered = 1 GROUP BY target)").fetchone()
            (gap,) = self._conn.execute(
                "SELECT MAX(at - previous) FROM (SELECT at, LAG(at) OVER (PARTITION BY target "
                "ORDER BY seq) AS previous FROM attempts)").fetchone()
        attempts, delivered = rows
        return LedgerSummary(attempts=attempts, delivered=delivered,
                             absorbed=attempts - delivered,
                             effective_duplicates=per_target[1],
                             recipients_delivered=per_target[0],
                             max_resend_gap_s=gap or 0.0)

    def delivered_targets(self) -> set[str]:
        """Every target (a key without its per-attempt suffix: "<message uid>:<recipient>")
        the phone network received at least once."""
        with self._lock:
            return {row[0] for row in self._conn.execute(
                "SELECT DISTINCT target FROM attempts WHERE delivered = 1")}

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _look(conn: sqlite3.Connection) -> tuple[int, frozenset[str]]:
    """The file's application id and its table names (SQLite's own ``sqlite_*`` left out)."""
    (application_id,) = conn.execute("PRAGMA application_id").fetchone()
    names = frozenset(row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' "
        "ESCAPE '\\'"))
    return int(application_id), names


def _refuse_foreign(where: str, application_id: int, names: frozenset[str]) -> None:
    """Raise ``TransportError`` unless the file is a ledger, one from before the mark
    (exactly the ledger's tables), or has no tables and no other application's mark."""
    if application_id == LEDGER_APPLICATION_ID and names <= _LEDGER_TABLES:
        return
    if application_id not in (0, LEDGER_APPLICATION_ID):
        what = f"belongs to another application (application_id {application_id:#010x})"
    elif "sms_sim_meta" in names:
        what = "is an sms_sim store"
    elif names and names != _LEDGER_TABLES:
        listed = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
        what = f"is an SQLite database with other tables ({listed})"
    else:
        return
    raise TransportError(f"{where!r} {what}, not a provider ledger (a ledger needs a file of "
                         "its own)")


def _target(key: str) -> str:
    """The (message, recipient) a key addresses: keys may carry a per-attempt suffix."""
    return key.split("#", 1)[0]
