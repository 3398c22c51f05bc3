"""``SqliteStore.cancelled`` for the price of reading 8 bytes of shared memory per send.

Workers ask before every send whether its message was cancelled (``DispatchStore.cancel``).
An SQL read per send cost a third of the dispatch loop's speed with zero-latency senders
(48k -> 31k deliveries/s), and a ``stat`` of a side file still a fifth, although cancels are
rare. So every cancel writes a fresh random 8-byte token into a small side file,
``<database>-cancels``, which every store maps into memory (``mmap``, shared: a write by one
process is in every other's mapping at once): once before its transaction commits and once
after, before it returns. A store re-reads a message's status only when the token changed
since it last read it, or when that read is ``RECHECK_S`` old:

* a read made before a cancel began is followed by a token change (the first write), so the
  next question reads again;
* a read made between the first write and the commit is followed by the second, written
  before the cancel is acknowledged: once a cancel has returned, every worker reads again;
* random tokens, not a counter, so two cancels racing cannot write the same value twice and
  hide the second one (a repeat has probability 2**-64);
* a canceller that died between its commit and its second write never acknowledged the
  cancel; workers see it within ``RECHECK_S`` anyway.

A message seen cancelled stays cancelled (a cancel is final), so that answer is kept. An
in-memory database (``:memory:``, tests) has one connection and no other process: its token
is kept in this object and its reads go through that connection.
"""

from __future__ import annotations

import mmap
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Collection

from sms_sim.clock import Clock
from sms_sim.dispatch.errors import StoreError
from sms_sim.dispatch.stores.sqlite.rows import store_error

__all__ = ["CancelWatch", "RECHECK_S", "mark_path"]

RECHECK_S = 1.0
_TOKEN_BYTES = 8


def mark_path(database: str) -> str:
    """Beside the file itself: a symlink or another spelling of the path names one file."""
    return f"{os.path.realpath(database)}-cancels"


def _map(path: str, database: str) -> mmap.mmap:
    """The side file, created if missing with the database file's mode and owner (as SQLite
    makes ``-wal`` and ``-shm``, so a cancel run as root does not lock the workers out),
    mapped shared and writable."""
    owner = os.stat(database)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, owner.st_mode & 0o666)
    try:
        if os.geteuid() == 0:
            os.fchown(fd, owner.st_uid, owner.st_gid)
        if os.fstat(fd).st_size < _TOKEN_BYTES:
            os.ftruncate(fd, _TOKEN_BYTES)  # idempotent: racing creators agree
        return mmap.mmap(fd, _TOKEN_BYTES)
    finally:
        os.close(fd)


class CancelWatch:
    """One store's answers to ``cancelled``, on a read-only connection of its own (so a
    sender's question never waits behind a claim waiting for another process's lock)."""

    def __init__(self, path: str, clock: Clock,
                 when_free: Callable[[Callable[[], set[int]]], set[int]],
                 read_main: Callable[[Callable[[sqlite3.Connection], set[int]]], set[int]]
                 ) -> None:
        self._path = path
        self._clock = clock
        self._when_free = when_free
        self._read_main = read_main
        self._in_memory = path in ("", ":memory:")
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()  # the read-only connection, one reader at a time
        self._tokens: mmap.mmap | bytearray | None = None
        self._inode: int | None = None  # of the side file mapped
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._cancelled: set[int] = set()
        self._token: bytes | bytearray = b""  # the token when ``_not_cancelled`` was valid
        self._not_cancelled: dict[int, float] = {}  # id -> when read not cancelled

    def prepare(self) -> None:
        """Map the side file now (a store opened for writing does, so a worker that cannot
        use it fails as it starts instead of at every send)."""
        with self._lock:
            self._shared()

    def mark(self) -> None:
        """Called by ``cancel`` before its commit and again after (see the module doc)."""
        with self._lock:
            self._shared()[:_TOKEN_BYTES] = os.urandom(_TOKEN_BYTES)

    def cancelled(self, message_ids: Collection[int]) -> set[int]:
        with self._lock:
            tokens = self._tokens
            if tokens is None or self._closed:
                tokens = self._shared()  # maps it, or raises for a closed store
            # Before any read, so a later change is seen. Slicing copies (bytes from the
            # mmap, a bytearray in memory): the comparison below holds whatever follows.
            token = tokens[:_TOKEN_BYTES]
            if token != self._token:
                self._token = token
                self._not_cancelled.clear()  # a cancel happened since: ask the database
            now = self._clock.monotonic()
            verified, cancelled = self._not_cancelled, self._cancelled
            if len(message_ids) == 1:  # the hot path: one send's question
                (only,) = message_ids
                if only in cancelled:
                    return {only}
                if now - verified.get(only, -RECHECK_S) < RECHECK_S:
                    return set()
            unknown = [i for i in message_ids if i not in cancelled
                       and now - verified.get(i, -RECHECK_S) >= RECHECK_S]
            if not unknown:
                return {i for i in message_ids if i in cancelled}
            self._follow_the_file()
            token = self._token
        # The read runs without this object's lock: an in-memory store's read takes the
        # store's own lock, which ``cancel`` holds while it calls ``mark``.
        found = self._read(unknown)
        with self._lock:
            cancelled |= found
            if self._token == token:  # no cancel seen since the read began: "no" holds
                for message_id in unknown:
                    if message_id not in found:
                        verified[message_id] = now
            return {i for i in message_ids if i in cancelled}

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
            if isinstance(self._tokens, mmap.mmap):
                self._tokens.close()

    def _follow_the_file(self) -> None:
        """Map the side file again if it was replaced or deleted since it was mapped (a
        cancel then writes to a file this store no longer sees): checked whenever the
        database is read anyway, so at least every ``RECHECK_S`` while sends go on."""
        if self._in_memory or not isinstance(self._tokens, mmap.mmap):
            return
        try:
            current = os.stat(mark_path(self._path)).st_ino
        except FileNotFoundError:
            current = None
        if current != self._inode:
            self._tokens.close()
            self._tokens = None
            self._shared()

    def _shared(self) -> mmap.mmap | bytearray:
        """The mapped token (lock held)."""
        if self._closed:
            raise StoreError(f"database {self._path!r}: the store is closed")
        if self._tokens is None and self._in_memory:
            self._tokens = bytearray(_TOKEN_BYTES)
        if self._tokens is None:
            try:
                self._tokens = _map(mark_path(self._path), self._path)
                self._inode = os.stat(mark_path(self._path)).st_ino
            except (OSError, ValueError) as exc:
                raise StoreError(f"cannot open the cancel marks beside {self._path!r} "
                                 f"({exc}); workers need them to stop sends at once") from exc
        return self._tokens

    def _read(self, message_ids: list[int]) -> set[int]:
        with self._read_lock:
            return self._read_held(message_ids)

    def _read_held(self, message_ids: list[int]) -> set[int]:
        if self._closed:
            raise StoreError(f"database {self._path!r}: the store is closed")
        placeholders = ",".join("?" * len(message_ids))
        query = f"SELECT id FROM messages WHERE status = 'cancelled' AND id IN ({placeholders})"
        if self._in_memory:
            return self._read_main(
                lambda conn: {row[0] for row in conn.execute(query, message_ids)})
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(
                    f"file:{urllib.parse.quote(self._path)}?mode=ro", uri=True, timeout=0,
                    isolation_level=None, check_same_thread=False)
            conn = self._conn
            return self._when_free(lambda: {row[0] for row in conn.execute(query, message_ids)})
        except sqlite3.Error as exc:
            raise store_error(self._path, exc) from exc
