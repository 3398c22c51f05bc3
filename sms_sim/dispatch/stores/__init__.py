"""Concrete ``DispatchStore`` implementations, and ``open_store``, the one place that picks one.

``MemoryStore`` is the reference; ``SqliteStore`` is the embedded durable store;
``PostgresStore`` (``stores.postgres``, the optional ``postgres`` extra) is the one for
workers on several hosts. Everything outside
this package asks ``open_store`` for a store by URL and sees only the ``DispatchStore``
protocol, so adding a backend changes this module and nothing that uses stores. A backend
that needs an optional driver is imported only in its own branch of ``open_store``, so
``import sms_sim`` and the SQLite path keep working without that driver installed.
"""

from __future__ import annotations

import os
import re
import urllib.parse

from sms_sim.dispatch.contract import DispatchStore
from sms_sim.dispatch.errors import StoreError
from sms_sim.dispatch.stores.memory import MemoryStore
from sms_sim.dispatch.stores.sqlite.schema import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from sms_sim.dispatch.stores.sqlite.store import SqliteStore
from sms_sim.dispatch.stores.transfer import (
    COPY_BATCH_ROWS,
    CopyResult,
    check_source,
    copy_store,
    same_database,
)
from sms_sim.dispatch.validation import InvalidRequestError, validate_storable
from sms_sim.errors import ConfigError

__all__ = ["MemoryStore", "SqliteStore", "open_store", "is_transient", "migrate_store",
           "display_url", "copy_database", "check_store_url"]

# RFC 3986 scheme: a letter, then letters, digits, "+", "-" or ".". A path such as
# "./a:b.db", "/tmp/x.db" or ":memory:" does not start with one, so it is never a URL.
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})
_KNOWN_SCHEMES = frozenset({"memory", "sqlite", *_POSTGRES_SCHEMES})
_SQLITE_MEMORY = ":memory:"  # SQLite's own name for a private in-memory database
_POSTGRES_DRIVERS = frozenset({"psycopg", "psycopg_pool"})


def open_store(url: str | os.PathLike[str], *, create: bool = False,
               read_only: bool = False) -> DispatchStore:
    """Open the store ``url`` names: ``memory:`` (empty, gone when closed),
    ``sqlite:///absolute/path``, ``sqlite:relative/path`` (URL forms are percent-decoded),
    ``postgresql://`` or ``postgres://`` (a libpq URL: PostgreSQL), or a plain file path,
    which means SQLite. An unknown ``scheme://`` is refused; an
    unknown prefix without ``//`` is a file name that happens to hold a colon.

    ``create=True`` makes a missing SQLite database (and its schema), or gives an empty
    PostgreSQL database the current schema (an older one is refused: ``migrate_store``
    upgrades it); ``create=False`` refuses a missing one with ``StoreError`` instead, so a
    mistyped path given to a command that only reads or changes existing messages leaves no
    new file behind. ``read_only=True`` opens
    an existing database without ever writing to it (an auditor, a backup copy in a
    directory the reader cannot write): every write then raises ``StoreError``; it cannot
    be combined with ``create``. Raises ``ConfigError`` for a URL that names no supported
    store: one line, never repeating a PostgreSQL URL, which may hold a password.
    """
    if create and read_only:
        raise ConfigError("a store opened read-only cannot be created")
    text = check_store_url(url)
    found = _SCHEME_RE.match(text)
    if found is None:
        return _sqlite(text, create=create, read_only=read_only)
    scheme, rest = found.group(1).lower(), text[found.end():]
    if scheme not in _KNOWN_SCHEMES and not rest.startswith("//"):
        # a file name with a colon: data:2024.db
        return _sqlite(text, create=create, read_only=read_only)
    if scheme == "memory":
        if rest:
            raise ConfigError(f"a memory store takes no path (got {text!r}; use 'memory:')")
        return MemoryStore()
    if scheme == "sqlite":
        return _sqlite(_sqlite_path(text, rest), create=create, read_only=read_only)
    if scheme in _POSTGRES_SCHEMES:
        try:  # here only: psycopg is an optional extra, and ``import sms_sim`` needs none
            from sms_sim.dispatch.stores.postgres import PostgresStore
        except ImportError as exc:
            raise _missing_driver(exc) from None
        # libpq knows the scheme in lower case only
        return PostgresStore(f"{scheme}:{rest}", create=create, read_only=read_only)
    raise AssertionError(f"check_store_url let the scheme {scheme!r} through")


def check_store_url(url: str | os.PathLike[str]) -> str:
    """``url`` as text if it could name a store ``open_store`` opens, without opening it;
    otherwise ``ConfigError`` in one line (an edge's usage error): an unknown ``scheme://``,
    a ``sqlite:`` URL with options, a host or no path, a ``postgresql://`` URL that does
    not parse (never repeated: it may hold a password), or a path that is not text (bytes
    that are not UTF-8 in a command-line argument)."""
    text = os.fspath(url)
    try:
        validate_storable(text, "the database path or URL")
    except InvalidRequestError as exc:
        raise ConfigError(str(exc)) from None
    found = _SCHEME_RE.match(text)
    if found is None:
        return text
    scheme, rest = found.group(1).lower(), text[found.end():]
    if scheme == "sqlite":
        _sqlite_path(text, rest)
    elif scheme in _POSTGRES_SCHEMES:
        problem = _postgres_url_problem(rest)
        if problem is None:
            try:
                urllib.parse.urlsplit(text)
            except ValueError as exc:
                problem = str(exc)
        if problem is not None:  # never the URL itself: it may hold a password
            raise ConfigError(f"not a valid {scheme}:// URL ({problem})")
    elif scheme not in _KNOWN_SCHEMES and rest.startswith("//"):
        raise ConfigError(f"unknown store URL scheme {scheme!r} (use a SQLite path, "
                          "sqlite:///path or postgresql://...)")
    return text


# RFC 3986 userinfo: unreserved, sub-delims, ":" and percent-encoded octets.
_USERINFO_RE = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:]|%[0-9A-Fa-f]{2})*")
_PORT_RE = re.compile(r"[0-9]*")


def _postgres_url_problem(rest: str) -> str | None:
    """What makes ``postgresql:`` + ``rest`` unreadable without quoting it, or None. A
    password holding a space, "/", "@", "?", "#" or a bare "%" must be percent-encoded;
    unencoded, libpq read part of it as the host or port and its error quoted it."""
    if not rest.startswith("//"):
        return None
    body = rest[2:]
    cut = re.search(r"[/?#]", body)
    authority, tail = (body, "") if cut is None else (body[:cut.start()], body[cut.start():])
    userinfo, at, hosts = authority.rpartition("@")
    if "@" in tail:
        return ("an '@' after the host: a password holding '/', '?' or '#' must be "
                "percent-encoded")
    if at and (_USERINFO_RE.fullmatch(userinfo) is None):
        return ("the user or password holds a character that must be percent-encoded "
                "(a space, '@', '%' not followed by two hex digits, ...)")
    for host in hosts.split(","):
        port = host.rpartition("]")[2] if host.startswith("[") else host
        if ":" in port and _PORT_RE.fullmatch(port.rpartition(":")[2]) is None:
            return "a port that is not a number (is a password holding '/' not encoded?)"
    return None


def migrate_store(url: str | os.PathLike[str]) -> str:
    """Create or upgrade the schema of the store ``url`` names, and say what was done in one
    line. PostgreSQL: the numbered migrations (``stores.postgres.schema``), which nothing
    else applies. SQLite upgrades a file whenever it is opened for writing, so this opens it
    once; a missing file is refused, as by every command but ``init`` and ``submit`` (a
    mistyped path made a new empty file and said its schema was current). Raises
    ``StoreError``, or ``ConfigError`` for a bad URL."""
    text = os.fspath(url)
    found = _SCHEME_RE.match(text)
    if found is not None and found.group(1).lower() in _POSTGRES_SCHEMES:
        try:
            from sms_sim.dispatch.stores.postgres import migrate_database
        except ImportError as exc:
            raise _missing_driver(exc) from None
        return migrate_database(f"{found.group(1).lower()}:{text[found.end():]}")
    if is_transient(text):
        raise ConfigError(f"{text!r} keeps nothing after this command; nothing to migrate")
    store = open_store(text)
    store.close()
    upgraded_from = getattr(store, "upgraded_from", None)  # a SqliteStore's
    if upgraded_from is not None:
        return f"{text!r}: upgraded schema {upgraded_from} to {SQLITE_SCHEMA_VERSION}"
    return f"{text!r}: schema {SQLITE_SCHEMA_VERSION} is current"


def copy_database(source: str | os.PathLike[str], target: str | os.PathLike[str], *,
                  batch_rows: int = COPY_BATCH_ROWS) -> CopyResult:
    """Copy the whole database ``source`` names into the empty one ``target`` names (created
    if missing), with every message's and delivery's state, tenants' serve order and API
    keys (``stores.transfer``: what it promises and refuses). The source is only read."""
    if same_database(source, target):
        raise ConfigError("the source and the target are the same database")
    from_store = open_store(source, read_only=True)
    try:
        check_source(from_store)  # a refused copy makes no target (it left an empty one)
        to_store = open_store(target, create=True)
        try:
            return copy_store(from_store, to_store, batch_rows=batch_rows)
        finally:
            to_store.close()
    finally:
        from_store.close()


def display_url(url: str | os.PathLike[str]) -> str:
    """``url`` as output may show it: a PostgreSQL URL loses its password and its options
    (``postgresql://user@host:port/db``); anything else is shown as given."""
    text = os.fspath(url)
    found = _SCHEME_RE.match(text)
    if found is None or found.group(1).lower() not in _POSTGRES_SCHEMES:
        return text
    try:
        parts = urllib.parse.urlsplit(text)
        user = f"{parts.username}@" if parts.username else ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return f"a {found.group(1)}:// URL"
    return f"{found.group(1)}://{user}{host}{port}{parts.path}"


def _missing_driver(exc: ImportError) -> ConfigError:
    """The one-line refusal when psycopg is missing; any other import failure is a bug and
    is raised as it is."""
    if (exc.name or "").split(".")[0] not in _POSTGRES_DRIVERS:
        raise exc
    return ConfigError("PostgreSQL stores need psycopg and psycopg-pool: install "
                       "sms_sim[postgres] (pip install 'sms_sim[postgres]')")


def is_transient(url: str | os.PathLike[str]) -> bool:
    """True if ``url`` names a store that lasts only as long as the process that opens it:
    ``memory:``, and for SQLite an empty path (a temporary file) or ``:memory:``, however
    spelled. A command-line edge refuses these, since each command is its own process."""
    text = os.fspath(url)
    if not text.strip():
        return True
    found = _SCHEME_RE.match(text)
    if found is None:
        return text == _SQLITE_MEMORY
    scheme, rest = found.group(1).lower(), text[found.end():]
    if scheme == "memory":
        return True
    if scheme == "sqlite":
        try:
            return _sqlite_path(text, rest) == _SQLITE_MEMORY
        except ConfigError:
            return False  # not transient, just malformed: open_store says why
    return False


def _sqlite(path: str, *, create: bool, read_only: bool) -> SqliteStore:
    """A ``SqliteStore`` on ``path``. A file this process may not read, or may not write
    when it asked to, is named as such: SQLite says only "unable to open database file",
    which the store would report as a file that is not a database at all."""
    if os.path.exists(path):
        if not os.access(path, os.R_OK):
            raise StoreError(f"cannot read database {path!r}: permission denied")
        if not read_only and not _writable(path):
            raise StoreError(f"cannot write database {path!r}: the file or its directory is "
                             "read-only (list, show, deliveries, dead and check can still "
                             "read it)")
    return SqliteStore(path, create=create, read_only=read_only)


def _writable(path: str) -> bool:
    """Whether SQLite can write ``path`` in WAL mode: the file itself, and its ``-wal`` and
    ``-shm`` companions, which it creates in the file's directory when they are missing."""
    folder = os.path.dirname(path) or "."
    companions = [f"{path}-wal", f"{path}-shm"]
    if not all(os.path.exists(name) for name in companions) and not os.access(folder, os.W_OK):
        return False
    return all(os.access(name, os.W_OK) for name in [path, *companions]
               if os.path.exists(name))


def _sqlite_path(text: str, rest: str) -> str:
    """The file path of ``sqlite:`` + ``rest``: ``///abs`` or ``/abs`` is absolute,
    anything else without ``//`` is relative to the working directory."""
    if "?" in rest or "#" in rest:
        raise ConfigError(f"sqlite URLs take no options (got {text!r})")
    if rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        if authority:
            raise ConfigError(f"a sqlite URL names no host (got {text!r}; "
                              "use sqlite:///absolute/path or sqlite:relative/path)")
        rest = slash + path
    path = urllib.parse.unquote(rest)
    if not path.strip("/"):
        raise ConfigError(f"a sqlite URL needs a file path (got {text!r})")
    # sqlite:////abs (SQLAlchemy's spelling) is absolute too; SQLite itself would read
    # the host of a "//..." path as a URI authority and refuse it.
    return "/" + path.lstrip("/") if path.startswith("/") else path
