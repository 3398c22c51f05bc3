"""The store's connections: a ``psycopg_pool.ConnectionPool``, each call one transaction on one
connection, every driver error leaving as a ``StoreError`` (``errors.store_error``).

Connections are in autocommit mode, so a one-statement read costs one round trip (no BEGIN,
no COMMIT); calls with several statements run in ``transaction``, READ COMMITTED, with the
row and advisory locks the store takes making each call atomic against the others. Each
session waits at most ``lock_timeout_s`` for a lock (then ``StoreBusyError``, which a
worker waits out) and is ended by the server if it idles in a transaction for a minute, so
a stuck client cannot hold back vacuum on the hot tables for long.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import psycopg
import psycopg_pool

from sms_sim.dispatch.errors import StoreError
from sms_sim.dispatch.stores.postgres.errors import safe_name, store_error
from sms_sim.dispatch.stores.postgres.schema import Connection, migrate, prepare

__all__ = ["Database", "migrate_database", "DEFAULT_LOCK_TIMEOUT_S", "DEFAULT_POOL_SIZE"]

DEFAULT_LOCK_TIMEOUT_S = 30.0
DEFAULT_POOL_SIZE = 4
_CONNECT_TIMEOUT_S = 10
_IDLE_IN_TRANSACTION_S = 60
_T = TypeVar("_T")


class Database:
    """A pool of connections to ``dsn``; see ``PostgresStore`` for the options."""

    def __init__(self, dsn: str, *, create: bool, read_only: bool, pool_size: int,
                 lock_timeout_s: float, prepare_threshold: int | None) -> None:
        self.dsn = dsn
        self.name = safe_name(dsn)
        self._closed = False
        self._close_lock = threading.Lock()
        settings = [f"SET lock_timeout = {int(lock_timeout_s * 1000)}",
                    f"SET idle_in_transaction_session_timeout = {_IDLE_IN_TRANSACTION_S * 1000}",
                    "SET application_name = 'sms_sim'"]
        if read_only:
            settings.append("SET default_transaction_read_only = on")

        def configure(conn: Connection) -> None:
            for statement in settings:
                conn.execute(statement)

        kwargs: dict[str, object] = {"autocommit": True, "prepare_threshold": prepare_threshold,
                                     "connect_timeout": _CONNECT_TIMEOUT_S}
        # One connection first, outside the pool: a wrong password or host fails here with
        # the server's own words (a pool would only time out), and the schema is checked.
        try:
            with psycopg.connect(dsn, **kwargs) as first:  # type: ignore[arg-type]
                configure(first)
                prepare(first, create=create and not read_only, name=self.name)
        except psycopg.Error as exc:
            raise store_error(dsn, exc, doing="cannot open") from exc
        self._pool: psycopg_pool.ConnectionPool[Connection] = psycopg_pool.ConnectionPool(
            dsn, min_size=1, max_size=max(1, pool_size), kwargs=kwargs, configure=configure,
            timeout=lock_timeout_s, open=True, name="sms_sim")

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction on a pooled connection: committed when the block ends, rolled back
        if it raises."""
        self.check_open()
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield conn
        except psycopg.Error as exc:
            raise store_error(self.dsn, exc) from exc

    def run(self, body: Callable[[Connection], _T]) -> _T:
        """``body`` on a pooled connection in autocommit: for one-statement reads."""
        self.check_open()
        try:
            with self._pool.connection() as conn:
                return body(conn)
        except psycopg.Error as exc:
            raise store_error(self.dsn, exc) from exc

    def check_open(self) -> None:
        """``StoreError`` once the store is closed (for calls that need no database)."""
        if self._closed:
            raise StoreError(f"database {self.name}: the store is closed")

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._pool.close()


def migrate_database(dsn: str) -> str:
    """Create or upgrade the schema at ``dsn`` (``schema.migrate``); one line saying what
    was done. Raises ``StoreError``."""
    name = safe_name(dsn)
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S) as conn:
            before, after = migrate(conn)
    except psycopg.Error as exc:
        raise store_error(dsn, exc, doing="cannot migrate") from exc
    if before == after:
        return f"{name}: sms_sim schema version {after} is current; nothing to do"
    if before is None:
        return f"{name}: created sms_sim schema version {after}"
    return f"{name}: upgraded sms_sim schema from version {before} to {after}"
