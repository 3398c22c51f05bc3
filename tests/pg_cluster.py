"""The PostgreSQL server the tests use, and a fresh schema per store.

``SMS_SIM_PG_DSN`` set: that server, which must be reachable (the Postgres tests fail, not
skip, when it is not: a CI that points them at a server must not pass by skipping them).
Unset: ``scripts/pg_server.py`` starts a throwaway server for the session (installing
postgresql-15 with apt when missing and running as root) and stops it at the end.

Every test session works in a database of its own, ``sms_sim_test_<pid>``, dropped at the
end (or, where the role may not create databases, in the given one); every store a test
asks for gets a new schema in it (``search_path`` through the URL's ``options``), which is
much faster than a database per test and as isolated for the store, whose tables live in
the first schema of its ``search_path``.

``PgCluster(private=True)`` always starts a server of its own, which the fault tests may
crash, stop and start again (``restart``, ``down``, ``up``) without disturbing the session's;
its own connections are made again after such a fault.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from tests.conftest import ROOT

__all__ = ["PgCluster", "DSN_VARIABLE", "with_settings"]

DSN_VARIABLE = "SMS_SIM_PG_DSN"
_SERVER_SCRIPT = ROOT / "scripts" / "pg_server.py"


def url_of(params: dict[str, Any]) -> str:
    """A ``postgresql://`` URL from libpq parameters (the store routes on the scheme)."""
    user = urllib.parse.quote(str(params.get("user") or ""), safe="")
    password = params.get("password")
    auth = f"{user}:{urllib.parse.quote(str(password), safe='')}@" if password else \
        (f"{user}@" if user else "")
    host = str(params.get("host") or "localhost")
    port = f":{params['port']}" if params.get("port") else ""
    rest = {k: str(v) for k, v in params.items()
            if k not in {"user", "password", "host", "port", "dbname"}}
    # %20, not "+", for spaces: libpq decodes percent escapes only.
    query = f"?{urllib.parse.urlencode(rest, quote_via=urllib.parse.quote)}" if rest else ""
    return f"postgresql://{auth}{host}{port}/{params.get('dbname') or ''}{query}"


def with_settings(url: str, *settings: str) -> str:
    """``url`` (one of ``PgCluster``'s) with ``settings`` (``"statement_timeout=200"``) added
    to every session it opens: the same schema, other limits."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query["options"] = " ".join([query.get("options", ""), *(f"-c{s}" for s in settings)])
    rest = urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
    return urllib.parse.urlunsplit(parts._replace(query=rest))


class PgCluster:
    """A started (or given) server and this session's test database."""

    def __init__(self, *, private: bool = False) -> None:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        self._server_dir: Path | None = None
        given = None if private else os.environ.get(DSN_VARIABLE)
        if given:
            self.admin_dsn = given
        else:
            self.admin_dsn, self._server_dir = _start_server()
        try:
            self._admin = psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            self._stop_server()
            raise RuntimeError(f"PostgreSQL for the tests is unreachable ({exc})") from exc
        self._params: dict[str, Any] = conninfo_to_dict(self.admin_dsn)
        self._database: str | None = f"sms_sim_test_{os.getpid()}"
        try:
            self._admin.execute(f"DROP DATABASE IF EXISTS {self._database}")
            self._admin.execute(f"CREATE DATABASE {self._database}")
            self._params["dbname"] = self._database
        except psycopg.errors.InsufficientPrivilege:
            self._database = None  # schemas in the given database, dropped at the end
        self._db = psycopg.connect(url_of(self._params), autocommit=True, connect_timeout=10)
        self._schemas: list[str] = []
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The test database, with the default ``search_path``."""
        return url_of(self._params)

    def fresh_url(self) -> str:
        """A URL whose ``search_path`` is a new, empty schema."""
        with self._lock:
            schema = f"t{os.getpid()}_{next(self._numbers)}"
            self._run(f"CREATE SCHEMA {schema}")
            self._schemas.append(schema)
        return url_of({**self._params, "options": f"-csearch_path={schema}"})

    def execute(self, statement: str) -> list[tuple[Any, ...]]:
        """Run one statement in the test database (as the tests' role), for fault tests."""
        with self._lock:
            return self._run(statement)

    def _run(self, statement: str) -> list[tuple[Any, ...]]:
        """``statement`` on the test connection, connecting again once if a fault test
        restarted the server under it. Lock held."""
        import psycopg

        try:
            cursor = self._db.execute(statement)
        except psycopg.OperationalError:
            if not self._db.closed and not self._db.broken:
                raise
            self._db = psycopg.connect(url_of(self._params), autocommit=True,
                                       connect_timeout=10)
            cursor = self._db.execute(statement)
        return cursor.fetchall() if cursor.description else []

    def restart(self) -> None:
        """Crash this private server and start it again (``pg_ctl restart -m immediate``);
        returns once it accepts connections."""
        self._server("restart")

    def down(self) -> None:
        """Stop this private server at once (``-m immediate``), keeping its data."""
        self._server("down")

    def up(self) -> None:
        """Start this private server again after ``down``; returns once it is ready."""
        self._server("up")

    def _server(self, verb: str) -> None:
        if self._server_dir is None:
            raise RuntimeError("only a server this session started can be restarted")
        done = subprocess.run([sys.executable, str(_SERVER_SCRIPT), verb, str(self._server_dir)],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"pg_server.py {verb} failed: {done.stderr.strip()}")

    def close(self) -> None:
        try:
            if self._server_dir is not None:
                return  # the whole server goes
            if self._database is None:
                for schema in self._schemas:
                    self._db.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            self._db.close()
            if self._database is not None:
                self._admin.execute(f"DROP DATABASE IF EXISTS {self._database} WITH (FORCE)")
            self._admin.close()
        finally:
            self._db.close()
            self._admin.close()
            self._stop_server()

    def _stop_server(self) -> None:
        if self._server_dir is not None:
            subprocess.run([sys.executable, str(_SERVER_SCRIPT), "stop", str(self._server_dir)],
                           check=False, capture_output=True, timeout=120)
            self._server_dir = None


def _start_server() -> tuple[str, Path]:
    started = subprocess.run([sys.executable, str(_SERVER_SCRIPT), "start"],
                             capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        raise RuntimeError(f"scripts/pg_server.py start failed: {started.stderr.strip()} "
                           f"(or set {DSN_VARIABLE} to a server the tests may use)")
    found = dict(line.split("=", 1) for line in started.stdout.splitlines() if "=" in line)
    return found["SMS_SIM_PG_DSN"], Path(found["SMS_SIM_PG_DIR"])
