"""How driver errors leave ``PostgresStore``: as the contract's ``StoreError`` family, in one
line, naming the database without its password.

Transient means a retry can succeed without anyone doing anything: the server restarting
or refusing connections for a moment, a lost connection, a deadlock or serialization
failure PostgreSQL rolled back, a lock or statement timeout, a pool with no free
connection. Those are ``StoreBusyError``, which the worker's patience waits out; the rest
are ``StoreError`` (``StoreDamagedError`` for corrupt data), which no retry fixes.
"""

from __future__ import annotations

import urllib.parse

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict

from sms_sim.dispatch.errors import StoreBusyError, StoreDamagedError, StoreError

__all__ = ["safe_name", "store_error", "is_transient_error"]

# SQLSTATE classes and codes a retry can get past (PostgreSQL appendix A).
_TRANSIENT_CLASSES = frozenset({"08", "40"})  # connection exception, transaction rollback
_TRANSIENT_CODES = frozenset({
    "55P03",  # lock_not_available (lock_timeout)
    "57014",  # query_canceled (statement_timeout)
    "25P03",  # idle_in_transaction_session_timeout: the session was ended (a stalled claim)
    "57P01", "57P02", "57P03",  # admin / crash shutdown, cannot connect now
    "53300",  # too_many_connections
    "25006",  # read_only_sql_transaction after a failover, until the DSN points at the primary
})
_DAMAGED_CODES = frozenset({"XX001", "XX002"})  # data_corrupted, index_corrupted


def safe_name(dsn: str) -> str:
    """``postgresql://user@host:port/dbname`` from a DSN: what errors and logs may show
    (never the password, nor options that might carry one)."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.Error:  # libpq refuses it (an unknown parameter): name it as a URL
        return _url_name(dsn)
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = _bracketed(str(parts.get("host") or "localhost"))
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{host}{port}/{parts.get('dbname') or ''}"


def _url_name(dsn: str) -> str:
    """``safe_name`` of a URL libpq would not parse, read as a URL; the options are left
    out as there (they may carry a password)."""
    try:
        parts = urllib.parse.urlsplit(dsn)
        user = f"{parts.username}@" if parts.username else ""
        port = f":{parts.port}" if parts.port else ""
        host = _bracketed(parts.hostname or "localhost")
    except ValueError:  # a port that is no number, say
        parts = None
    if parts is None or not parts.scheme.startswith("postgres"):
        return "a PostgreSQL database (its URL could not be parsed)"
    return f"postgresql://{user}{host}{port}{parts.path or '/'}"


def _bracketed(host: str) -> str:
    """An IPv6 address as a URL writes it (``[::1]``), so the port after it reads as one."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def is_transient_error(exc: BaseException) -> bool:
    if isinstance(exc, psycopg_pool.PoolClosed):
        return False
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    code = exc.sqlstate
    if code is None:  # raised by the client: a connection lost, a server gone
        return isinstance(exc, psycopg.OperationalError)
    return code[:2] in _TRANSIENT_CLASSES or code in _TRANSIENT_CODES


def _first_line(exc: BaseException, password: str | None) -> str:
    """The error's own sentence: the server's primary message, not the CONTEXT and
    STATEMENT lines after it (they quote the SQL that failed: internals, not news to an
    operator, and ``store_error`` makes one line of what is left)."""
    primary = exc.diag.message_primary if isinstance(exc, psycopg.Error) else None
    lines = str(exc).strip().splitlines()
    text = " ".join((primary or (lines[0] if lines else "")).split()) or type(exc).__name__
    if password:
        text = text.replace(password, "***")
    return text


def store_error(dsn: str, exc: BaseException, *, doing: str = "") -> StoreError:
    """The contract's error for a driver error on the database ``dsn`` names."""
    try:
        password = conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        password = None
    where = safe_name(dsn)
    text = _first_line(exc, None if password is None else str(password))
    if isinstance(exc, psycopg_pool.PoolClosed):
        return StoreError(f"database {where}: the store is closed")
    if isinstance(exc, psycopg.Error) and exc.sqlstate in _DAMAGED_CODES:
        return StoreDamagedError(f"database {where} reports damaged data ({text}); stop "
                                 "using it and restore it from a backup")
    prefix = f"{doing} " if doing else ""
    if is_transient_error(exc):
        return StoreBusyError(f"{prefix}database {where}: {text}")
    return StoreError(f"{prefix}database {where}: {text}")
