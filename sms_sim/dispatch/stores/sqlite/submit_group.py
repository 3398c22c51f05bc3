"""Concurrent small submits of one ``SqliteStore`` committed together: one write
transaction and one fsync for all of them (group commit).

Why: a 1-recipient submit's own statements take about a tenth of a millisecond of CPU time;
its COMMIT, which writes the WAL frames of a dozen pages and waits for the fsync
(``synchronous = FULL``), took 0.16-0.21 ms more, and with two server processes each
submit also fought the other process for SQLite's write lock (0.8 failed tries a submit).
Submits arriving together (issue 12's API benchmark: 8 clients) share the pages they
change, so one transaction writes them once and syncs once.

How: a submit queues itself and, unless another submit of this store object is leading,
leads: it takes the write transaction (``Database.write``: this object's lock, then
SQLite's), and only once it holds it takes every submit queued by then, its own among
them, and runs each in a savepoint of that transaction. Submits arriving meanwhile wait,
and the first of them leads the next group when this one is done. A submit alone is a
group of one and waits for nobody.

What it keeps:

* Durable: no submit returns before its group's COMMIT has returned.
* Isolated: a submit refused for itself (a reused idempotency key, a key whose first
  message is still loading) is rolled back to its savepoint and refused alone.
* Never lost, never doubled: if a statement fails for the store (an SQLite error: a full
  disk, an I/O error), the group's transaction is rolled back whole, so nothing of it was
  written, and each of its submits runs again alone, in a transaction of its own, with
  its own outcome. A failed BEGIN or COMMIT is every member's error, as it would have been
  alone, and nothing is run again.
* One key, one message: a submit whose key an earlier member of its group used sees that
  member's message in the transaction, as it would after its commit: not created.
"""

from __future__ import annotations

import copy
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sms_sim.dispatch.contract import SubmitResult
from sms_sim.dispatch.errors import StoreError
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.stores.sqlite.database import Write

__all__ = ["SubmitGroup", "Insert"]

# One submit inside the caller's write transaction (``submit.insert_message``).
Insert = Callable[[sqlite3.Connection, NewMessage, float], SubmitResult]
_Outcome = SubmitResult | Exception


@dataclass(slots=True, eq=False)
class _Queued:
    """A submit waiting for its group: its arguments, then its outcome."""

    message: NewMessage
    now: float
    outcome: _Outcome | None = None
    shared: bool = False  # the outcome is the whole group's error: raise a copy
    done: bool = False


class _Abandoned(Exception):
    """A statement failed for the store: the group's transaction is rolled back whole."""


class SubmitGroup:
    """Submits through ``write`` and ``insert``, those in flight together in one
    transaction (see the module's docstring). Thread-safe: that is its purpose."""

    def __init__(self, write: Write, insert: Insert) -> None:
        self._write = write
        self._insert = insert
        self._changed = threading.Condition()
        self._queue: list[_Queued] = []
        self._leading = False

    def submit(self, message: NewMessage, now: float) -> SubmitResult:
        """``insert`` of ``message`` at ``now``, committed with whatever submits came
        with it; raises what it would raise alone."""
        mine = _Queued(message, now)
        with self._changed:
            self._queue.append(mine)
            self._queued()
            while self._leading and not mine.done:
                self._changed.wait()
            lead = not mine.done
            if lead:
                self._leading = True
        if lead:
            self._lead()
        if isinstance(mine.outcome, SubmitResult):
            return mine.outcome
        assert mine.outcome is not None  # every member of a group gets an outcome
        if mine.shared:
            raise copy.copy(mine.outcome) from mine.outcome
        raise mine.outcome

    def _queued(self) -> None:
        """Called as each submit queues (lock held): a test's hook for knowing who waits."""

    def _lead(self) -> None:
        """Commit one group, then let the next leader in."""
        group: list[_Queued] = []

        def take() -> list[_Queued]:
            with self._changed:
                group.extend(self._queue)
                self._queue.clear()
            return group

        try:
            self._commit(take)
        except BaseException as exc:  # BEGIN or COMMIT failed, or this thread was stopped
            error = exc if isinstance(exc, Exception) else StoreError(
                "the submit was interrupted before its commit; nothing was stored")
            for queued in group or take():
                if queued.outcome is None:  # never one committed alone after an abandon
                    queued.outcome, queued.shared = error, True
            if not isinstance(exc, Exception):
                raise
        finally:
            with self._changed:
                for queued in group:
                    queued.done = True
                self._leading = False
                self._changed.notify_all()

    def _commit(self, take: Callable[[], list[_Queued]]) -> None:
        """One transaction for every submit queued once the write lock is held; each
        outcome is set only after the COMMIT (or, abandoned, after its own)."""
        try:
            with self._write() as conn:
                group = take()
                outcomes = [self._one(conn, queued) for queued in group]
        except _Abandoned:
            for queued in group:  # nothing of the group was written: each alone, once
                queued.outcome = self._alone(queued)
            return
        for queued, outcome in zip(group, outcomes, strict=True):
            queued.outcome = outcome

    def _one(self, conn: sqlite3.Connection, queued: _Queued) -> _Outcome:
        try:
            conn.execute("SAVEPOINT submit")
            try:
                result = self._insert(conn, queued.message, queued.now)
            except sqlite3.Error:
                raise
            except Exception as exc:  # refused for itself: undo its part, keep the rest
                conn.execute("ROLLBACK TO submit")
                conn.execute("RELEASE submit")
                return exc
            conn.execute("RELEASE submit")
            return result
        except sqlite3.Error as exc:
            raise _Abandoned() from exc

    def _alone(self, queued: _Queued) -> _Outcome:
        """One submit in a transaction of its own, after its group was abandoned."""
        try:
            with self._write() as conn:
                return self._insert(conn, queued.message, queued.now)
        except Exception as exc:
            return exc
