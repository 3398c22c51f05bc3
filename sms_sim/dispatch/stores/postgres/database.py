"""The store's connections: a ``psycopg_pool.ConnectionPool``, each call one transaction on one
connection, every driver error leaving as a ``StoreError`` (``errors.store_error``).

Connections are in autocommit mode, so a one-statement read costs one round trip (no BEGIN,
no COMMIT); calls with several statements run in ``transaction``, READ COMMITTED, with the
row and advisory locks the store takes making each call atomic against the others. Each
session waits at most ``lock_timeout_s`` for a lock (then ``StoreBusyError``, which a
worker waits out) and is ended by the server if it idles in a transaction for a minute, so
a stuck client cannot hold back vacuum on the hot tables for long.

Behind PgBouncer in transaction pooling (``sms_sim_pooling=transaction`` in the URL, which
``pooling_of`` takes out before libpq sees it), consecutive transactions of one client run
on different server sessions, and a session setting would stay behind on a server
connection other clients then get (a read-only inspection command would leave it
read-only). So in that mode nothing is set per session: every call is a transaction that
starts by setting its limits for itself (``set_config(..., true)``, one statement), and no
statement is prepared (``prepare_threshold=None``: a prepared statement lives in one
session).
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import psycopg
import psycopg_pool

from sms_sim.dispatch.errors import StoreError
from sms_sim.dispatch.stores.postgres.errors import safe_name, store_error
from sms_sim.dispatch.stores.postgres.schema import Connection, migrate, prepare, refuse_newer
from sms_sim.errors import ConfigError

__all__ = ["Database", "migrate_database", "pooling_of", "DEFAULT_LOCK_TIMEOUT_S",
           "DEFAULT_POOL_SIZE", "POOLING_PARAMETER", "READ_WAIT_S"]

DEFAULT_LOCK_TIMEOUT_S = 30.0
# The longest a read waits for a pooled connection (a write waits the lock timeout). While
# the server is down, or every connection is busy, a portal's page, ``/metrics`` or a
# ``status`` answered 503 (or its one line) only after the lock timeout, 30 s; a submit
# or a claim waiting that long for a brief lock to pass is what the lock timeout is for.
READ_WAIT_S = 5.0
DEFAULT_POOL_SIZE = 4
_CONNECT_TIMEOUT_S = 10
_IDLE_IN_TRANSACTION_S = 60
_T = TypeVar("_T")
POOLING_PARAMETER = "sms_sim_pooling"
_POOLING_MODES = ("session", "transaction")


def pooling_of(dsn: str) -> tuple[str, bool]:
    """``dsn`` without sms_sim's own URL parameter ``sms_sim_pooling`` (``session``, the
    default, or ``transaction``: behind a transaction-pooling PgBouncer), and whether it asks
    for transaction pooling. A ``key=value`` connection string is returned as it is. Raises
    ``ConfigError`` for another value (one line, without the URL, which may hold a
    password)."""
    parts = urllib.parse.urlsplit(dsn) if "://" in dsn else None
    if parts is None or not parts.query:
        return dsn, False
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    modes = [value for name, value in query if name == POOLING_PARAMETER]
    if not modes:
        return dsn, False
    if any(mode not in _POOLING_MODES for mode in modes) or len(set(modes)) > 1:
        raise ConfigError(f"{POOLING_PARAMETER} must be one of {', '.join(_POOLING_MODES)} "
                          f"(got {', '.join(repr(mode) for mode in modes)})")
    # Percent escapes only ("%20", never "+" for a space): libpq decodes nothing else.
    rest = urllib.parse.urlencode([(n, v) for n, v in query if n != POOLING_PARAMETER],
                                  quote_via=urllib.parse.quote)
    return urllib.parse.urlunsplit(parts._replace(query=rest)), modes[0] == "transaction"


class Database:
    """A pool of connections to ``dsn``; see ``PostgresStore`` for the options."""

    def __init__(self, dsn: str, *, create: bool, read_only: bool, pool_size: int,
                 lock_timeout_s: float, prepare_threshold: int | None,
                 transaction_pooling: bool = False) -> None:
        self.dsn = dsn
        self.name = safe_name(dsn)
        self.transaction_pooling = transaction_pooling
        self._read_wait_s = min(lock_timeout_s, READ_WAIT_S)
        self._closed = False
        self._close_lock = threading.Lock()
        limits = {"lock_timeout": int(lock_timeout_s * 1000),
                  "idle_in_transaction_session_timeout": _IDLE_IN_TRANSACTION_S * 1000}
        settings = [f"SET {name} = {value}" for name, value in limits.items()]
        settings.append("SET application_name = 'sms_sim'")
        if read_only:
            settings.append("SET default_transaction_read_only = on")
        # Transaction pooling: the same limits, set by each transaction for itself.
        self._begin: str | None = None
        if transaction_pooling:
            local = [f"set_config({name!r}, {str(value)!r}, true)"
                     for name, value in limits.items()]
            if read_only:
                local.append("set_config('transaction_read_only', 'on', true)")
            self._begin = f"SELECT {', '.join(local)}"
            settings, prepare_threshold = [], None

        def configure(conn: Connection) -> None:
            for statement in settings:
                conn.execute(statement)

        kwargs: dict[str, object] = {"autocommit": True, "prepare_threshold": prepare_threshold,
                                     "connect_timeout": _CONNECT_TIMEOUT_S}
        if transaction_pooling:
            kwargs["application_name"] = "sms_sim"  # a startup parameter PgBouncer keeps
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
    def transaction(self, *, within_s: float | None = None) -> Iterator[Connection]:
        """One transaction on a pooled connection: committed when the block ends, rolled back
        if it raises. ``within_s``: wait at most that long for a free connection (None: the
        pool's timeout)."""
        self.check_open()
        try:
            with self._pool.connection(timeout=within_s) as conn, conn.transaction():
                if self._begin is not None:
                    conn.execute(self._begin)
                yield conn
        except psycopg.Error as exc:
            raise store_error(self.dsn, exc) from exc

    def run(self, body: Callable[[Connection], _T]) -> _T:
        """``body`` on a pooled connection in autocommit: for one-statement reads (a
        transaction of its own under transaction pooling, which sets its limits first),
        waiting at most ``READ_WAIT_S`` for the connection."""
        if self._begin is not None:
            with self.transaction(within_s=self._read_wait_s) as conn:
                return body(conn)
        self.check_open()
        try:
            with self._pool.connection(timeout=self._read_wait_s) as conn:
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
    dsn, pooled = pooling_of(dsn)  # sms_sim's own parameter, which libpq refuses
    try:
        # Behind a transaction-pooling PgBouncer a statement prepared on one server session
        # is missing from the next transaction's: prepare nothing there (as the store).
        with psycopg.connect(dsn, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S,
                             prepare_threshold=None if pooled else 5) as conn:
            before, after = migrate(conn)
    except psycopg.Error as exc:
        raise store_error(dsn, exc, doing="cannot migrate") from exc
    refuse_newer(name, after)  # it said "current", exit 0, and every other command refused
    if before == after:
        return f"{name}: sms_sim schema version {after} is current; nothing to do"
    if before is None:
        return f"{name}: created sms_sim schema version {after}"
    return f"{name}: upgraded sms_sim schema from version {before} to {after}"
