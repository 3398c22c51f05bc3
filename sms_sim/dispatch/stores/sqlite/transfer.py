"""``SqliteStore.transfer``: the SQLite end of ``stores.transfer.copy_store``.

The source is read in one read transaction (a WAL snapshot: workers and submits on the file
are not held up, and what they write meanwhile is not in the copy); the target is written
in one write transaction, with its id floors (``prune``) raised to the source's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sms_sim.dispatch.stores.sqlite.database import Database, Write
from sms_sim.dispatch.stores.sqlite.prune import id_floors
from sms_sim.dispatch.stores.transfer import COLUMNS, Snapshot

__all__ = ["SqliteTransfer"]

Row = tuple[Any, ...]

_RAISE_FLOOR_SQL = """
INSERT INTO sms_sim_meta (key, value) VALUES (?, ?)
ON CONFLICT (key) DO UPDATE SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))
"""


class _SqliteSnapshot:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def leased(self) -> int:
        (count,) = self._conn.execute(
            "SELECT count(*) FROM deliveries WHERE status = 'leased'").fetchone()
        return int(count)

    def loading(self) -> frozenset[int]:
        return frozenset(row[0] for row in self._conn.execute(
            "SELECT id FROM messages WHERE status = 'loading'"))

    def page(self, table: str, after: int, limit: int) -> list[Row]:
        return self._conn.execute(f"SELECT {', '.join(COLUMNS[table])} FROM {table} "
                                  "WHERE id > ? ORDER BY id LIMIT ?", (after, limit)).fetchall()

    def all_rows(self, table: str) -> list[Row]:
        return self._conn.execute(f"SELECT {', '.join(COLUMNS[table])} FROM {table} "
                                  "ORDER BY 1").fetchall()

    def id_floors(self) -> tuple[int, int]:
        return id_floors(self._conn)


class SqliteTransfer:
    """``stores.transfer.TransferEnd`` over one ``SqliteStore``'s database."""

    def __init__(self, db: Database, write: Write) -> None:
        self._db = db
        self._write = write

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        with self._db.snapshot() as conn:
            yield _SqliteSnapshot(conn)

    def held(self) -> int:
        with self._db.snapshot() as conn:
            return sum(int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                       for table in COLUMNS)

    def load(self, batches: Iterator[tuple[str, Sequence[Row]]],
             id_floors: tuple[int, int]) -> None:
        with self._write() as conn:
            for table, rows in batches:
                columns = COLUMNS[table]
                conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                                 f"({', '.join('?' * len(columns))})", rows)
            # The kept counts are the target's own, counted once from what was loaded.
            conn.execute("DELETE FROM delivery_counts")
            conn.execute("INSERT INTO delivery_counts (message_id, status, n) SELECT "
                         "message_id, status, COUNT(*) FROM deliveries GROUP BY message_id, "
                         "status")
            for key, floor in zip(("message_id_floor", "delivery_id_floor"), id_floors,
                                  strict=True):
                if floor:
                    conn.execute(_RAISE_FLOOR_SQL, (key, floor))
