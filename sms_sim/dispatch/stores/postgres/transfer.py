"""``PostgresStore.transfer``: the PostgreSQL end of ``stores.transfer.copy_store``.

The source is read on a connection of its own in one ``REPEATABLE READ READ ONLY``
transaction (one snapshot, which holds no lock that a worker or submit waits for); the
target is written in one transaction, by ``COPY``, after which the identity sequences are
moved past every id the source ever handed out, and idle workers are woken.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from sms_sim.dispatch.stores.postgres.chunk import RANGE_LEASED
from sms_sim.dispatch.stores.postgres.database import Database
from sms_sim.dispatch.stores.postgres.errors import store_error
from sms_sim.dispatch.stores.postgres.listen import notify
from sms_sim.dispatch.stores.postgres.schema import Connection
from sms_sim.dispatch.stores.transfer import COLUMNS, Snapshot

__all__ = ["PostgresTransfer"]

Row = tuple[Any, ...]
_CONNECT_TIMEOUT_S = 10
_SET_SEQUENCE_SQL = ("SELECT setval(pg_get_serial_sequence(%s, 'id'), "
                     "GREATEST(%s, (SELECT COALESCE(max(id), 0) FROM {table}), 1), "
                     "GREATEST(%s, (SELECT COALESCE(max(id), 0) FROM {table})) > 0)")


class _PostgresSnapshot:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def _one(self, query: str) -> int:
        row = self._conn.execute(query).fetchone()
        assert row is not None  # an aggregate always gives a row
        return int(row[0])

    def leased(self) -> int:
        return self._one(f"SELECT count(*) FROM deliveries AS d JOIN messages AS m "
                         f"ON m.id = d.message_id WHERE d.status = 'leased' OR {RANGE_LEASED}")

    def loading(self) -> frozenset[int]:
        return frozenset()  # a submit is one transaction here: never seen half loaded

    def page(self, table: str, after: int, limit: int) -> list[Row]:
        return self._conn.execute(f"SELECT {', '.join(COLUMNS[table])} FROM {table} "
                                  "WHERE id > %s ORDER BY id LIMIT %s",
                                  (after, limit)).fetchall()

    def all_rows(self, table: str) -> list[Row]:
        return self._conn.execute(f"SELECT {', '.join(COLUMNS[table])} FROM {table} "
                                  "ORDER BY 1").fetchall()

    def id_floors(self) -> tuple[int, int]:
        # A sequence never goes back: its last value (None before its first use), or a
        # larger id written past it (a copy in), is the largest id ever handed out.
        floors = [self._one(
            f"SELECT GREATEST(pg_sequence_last_value(pg_get_serial_sequence({table!r}, 'id')"
            f"::regclass), (SELECT COALESCE(max(id), 0) FROM {table}))")
            for table in ("messages", "deliveries")]
        return floors[0], floors[1]


class PostgresTransfer:
    """``stores.transfer.TransferEnd`` over one ``PostgresStore``'s database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        self._db.check_open()
        try:
            with psycopg.connect(self._db.dsn, connect_timeout=_CONNECT_TIMEOUT_S) as conn:
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True
                with conn.transaction():
                    yield _PostgresSnapshot(conn)
        except psycopg.Error as exc:
            raise store_error(self._db.dsn, exc) from exc

    def held(self) -> int:
        counts = " + ".join(f"(SELECT count(*) FROM {table})" for table in COLUMNS)
        row = self._db.run(lambda conn: conn.execute(f"SELECT {counts}").fetchone())
        assert row is not None
        return int(row[0])

    def load(self, batches: Iterator[tuple[str, Sequence[Row]]],
             id_floors: tuple[int, int]) -> None:
        with self._db.transaction() as conn:
            for table, rows in batches:
                with conn.cursor() as cursor, cursor.copy(
                        f"COPY {table} ({', '.join(COLUMNS[table])}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            for table, floor in zip(("messages", "deliveries"), id_floors, strict=True):
                conn.execute(_SET_SEQUENCE_SQL.format(table=table), (table, floor, floor))
            notify(conn)
