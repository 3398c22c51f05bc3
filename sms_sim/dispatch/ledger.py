"""The simulated provider shared by worker processes: its own SQLite file, kept apart from the
store's, so the crash and chaos tests can count what reached the phones independently of
what the store believes."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from sms_sim.clock import Clock
from sms_sim.dispatch.transport import LedgerSummary, TransportError

__all__ = ["LedgerProvider"]


class LedgerProvider:
    """A provider shared by processes: an SQLite file of its own (never the store's file).

    Each send is one ``BEGIN IMMEDIATE`` transaction: the unique key table says whether the
    key is new, and the append-only ``attempts`` table logs the call either way. With
    ``dedup=False`` every call delivers (the negative control of the crash test).
    """

    def __init__(self, path: str | Path, *, clock: Clock, dedup: bool = True, worker: str = "",
                 busy_timeout_s: float = 60.0) -> None:
        self._clock = clock
        self._dedup = dedup
        self._worker = worker
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(str(path), timeout=busy_timeout_s,
                                         isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.executescript(
                "BEGIN IMMEDIATE;"
                "CREATE TABLE IF NOT EXISTS keys (key TEXT PRIMARY KEY);"
                "CREATE TABLE IF NOT EXISTS attempts (seq INTEGER PRIMARY KEY, key TEXT NOT NULL,"
                " target TEXT NOT NULL, worker TEXT NOT NULL, delivered INTEGER NOT NULL, "
                "at REAL NOT NULL);"
                "COMMIT;"
            )
        except sqlite3.Error as exc:
            raise TransportError(f"cannot open provider ledger {str(path)!r}: {exc}") from exc

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
        """Every "message_id:recipient" the phone network received at least once."""
        with self._lock:
            return {row[0] for row in self._conn.execute(
                "SELECT DISTINCT target FROM attempts WHERE delivered = 1")}

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _target(key: str) -> str:
    """The (message, recipient) a key addresses: keys may carry a per-attempt suffix."""
    return key.split("#", 1)[0]
