"""The simulated SMS provider the dispatcher sends through, deduplicating by idempotency key.

A real provider that honours idempotency keys accepts a repeated key without delivering
again. That is the second half of "never sent twice": the store's fencing stops a stale
worker from *recording* a send, and the key stops a resend after a crash from *reaching the
phone* twice. Every provider here keeps a ledger of every attempt, outside the store under
test, so a test can count effective duplicates (a recipient of one message handed to the
phone network more than once) independently of what the store believes.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sms_sim.clock import Clock
from sms_sim.errors import SmsSimError

__all__ = [
    "Transport",
    "TransportError",
    "MemoryProvider",
    "LedgerProvider",
    "LedgerSummary",
]


class TransportError(SmsSimError):
    """The provider refused or failed one send; the message says why (kept as last_error)."""


class Transport(Protocol):
    """Where a delivery goes. ``send`` blocks until the provider answers.

    ``key`` is the idempotency key: the same on every attempt of one (message, recipient).
    Returns normally when the provider has the message (newly or by key); raises
    ``TransportError`` when it refused. Must be safe to call from several threads.
    """

    def send(self, key: str, recipient: str, content: str) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerSummary:
    """What a provider's ledger says happened.

    ``attempts``: every send call. ``delivered``: sends handed to the phone network.
    ``absorbed``: repeats of a known key, accepted without delivering. ``effective_duplicates``:
    deliveries beyond the first of one (message, recipient), the number that must be 0.
    """

    attempts: int
    delivered: int
    absorbed: int
    effective_duplicates: int
    recipients_delivered: int
    max_resend_gap_s: float = 0.0  # longest time between two attempts of one target


class MemoryProvider:
    """In-process provider with a set of seen keys behind a lock; zero latency.

    It keeps counts rather than a per-target tally, so ``send`` stays a few set operations
    (it is inside the dispatch benchmark's loop) and ``summary`` is O(1) (benchmarks poll it).
    """

    def __init__(self, *, dedup: bool = True) -> None:
        self._dedup = dedup
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._targets: set[str] = set()  # every "message_id:recipient" delivered to
        self.attempts = 0
        self.absorbed = 0
        self._delivered = 0
        self._duplicates = 0

    def send(self, key: str, recipient: str, content: str) -> None:
        with self._lock:
            self.attempts += 1
            if self._dedup:
                if key in self._seen:
                    self.absorbed += 1
                    return
                self._seen.add(key)
            self._delivered += 1
            target = key.partition("#")[0]  # as ``_target``, without a call per send
            if target in self._targets:
                self._duplicates += 1
            else:
                self._targets.add(target)

    def summary(self) -> LedgerSummary:
        with self._lock:
            return LedgerSummary(
                attempts=self.attempts,
                delivered=self._delivered,
                absorbed=self.absorbed,
                effective_duplicates=self._duplicates,
                recipients_delivered=len(self._targets),
            )


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
