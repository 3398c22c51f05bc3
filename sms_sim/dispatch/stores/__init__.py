"""Concrete ``DispatchStore`` implementations, and ``open_store``, the one place that picks one.

``MemoryStore`` is the reference; ``SqliteStore`` is the durable store. Everything outside
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
from sms_sim.dispatch.stores.memory import MemoryStore
from sms_sim.dispatch.stores.sqlite.store import SqliteStore
from sms_sim.errors import ConfigError

__all__ = ["MemoryStore", "SqliteStore", "open_store"]

# RFC 3986 scheme: a letter, then letters, digits, "+", "-" or ".". A path such as
# "./a:b.db", "/tmp/x.db" or ":memory:" does not start with one, so it is never a URL.
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})
_KNOWN_SCHEMES = frozenset({"memory", "sqlite", *_POSTGRES_SCHEMES})


def open_store(url: str | os.PathLike[str], *, create: bool = False) -> DispatchStore:
    """Open the store ``url`` names: ``memory:`` (empty, gone when closed),
    ``sqlite:///absolute/path``, ``sqlite:relative/path`` (URL forms are percent-decoded),
    or a plain file path, which means SQLite. An unknown ``scheme://`` is refused; an
    unknown prefix without ``//`` is a file name that happens to hold a colon.

    ``create=True`` makes a missing SQLite database (and its schema); ``create=False``
    refuses one with ``StoreError`` instead, so a mistyped path given to a command that only
    reads or changes existing messages leaves no new file behind. Raises ``ConfigError``
    for a URL that names no supported store: one line, never repeating a PostgreSQL URL,
    which may hold a password.
    """
    text = os.fspath(url)
    found = _SCHEME_RE.match(text)
    if found is None:
        return SqliteStore(text, create=create)
    scheme, rest = found.group(1).lower(), text[found.end():]
    if scheme not in _KNOWN_SCHEMES and not rest.startswith("//"):
        return SqliteStore(text, create=create)  # a file name with a colon: data:2024.db
    if scheme == "memory":
        if rest:
            raise ConfigError(f"a memory store takes no path (got {text!r}; use 'memory:')")
        return MemoryStore()
    if scheme == "sqlite":
        return SqliteStore(_sqlite_path(text, rest), create=create)
    if scheme in _POSTGRES_SCHEMES:
        # The PostgreSQL issue adds ``sms_sim.dispatch.stores.postgres`` and imports it
        # here, never at module level: psycopg is an optional extra.
        raise ConfigError(f"PostgreSQL stores are not supported yet (got a {scheme}:// URL); "
                          "use a SQLite path, sqlite:///path or memory:")
    raise ConfigError(f"unknown store URL scheme {scheme!r} (use a SQLite path, "
                      "sqlite:///path or memory:)")


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
