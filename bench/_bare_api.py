"""The bare side of ``api_submit_rate``: a FastAPI app whose POST does one SQLite INSERT, and
the server that runs it the way ``serve`` runs the API.

``python bench/_bare_api.py --db FILE --port P --workers N`` binds 127.0.0.1:P itself and
hands the socket to uvicorn, as ``serve`` does: ``uvicorn.Server(...).run(sockets=...)`` for
one process, uvicorn's ``Multiprocess`` supervisor for N, the app built by a factory in each
process, log level info (one access line per request, as ``serve`` writes). One difference,
on purpose: the socket is made with ``IPPROTO_TCP``, so asyncio turns ``TCP_NODELAY`` on for
the connections it accepts (it checks the socket's ``proto``); ``serve`` makes it with proto
0 (as uvicorn's own ``--workers N`` does, uvicorn issue #3149), which leaves Nagle's
algorithm on, and then each answer on a kept-alive connection waits for the client's
delayed ACK, about 40 ms on Linux. The bare side is the floor as it should be.

SQLite as the store sets it up: WAL (set by the bench before the server starts),
``synchronous = FULL``, one connection per server process used under a lock, and ``BEGIN
IMMEDIATE`` tried again in pauses of 0.1 ms doubling to 1 ms while another process holds
the write lock (the store's ``Database.when_free``). No authentication.
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from uvicorn.supervisors import Multiprocess

__all__ = ["DB_VARIABLE", "PATH", "bare_app", "prepare_db", "main"]

DB_VARIABLE = "SMS_SIM_BENCH_BARE_DB"  # read by bare_app in each server process
PATH = "/v1/messages"
HOST = "127.0.0.1"
BUSY_TIMEOUT_S = 30.0
_FIRST_PAUSE_S = 0.0001
_MAX_PAUSE_S = 0.001
_SCHEMA = ("CREATE TABLE messages (id INTEGER PRIMARY KEY, content TEXT NOT NULL, "
           "recipient TEXT NOT NULL, created_at REAL NOT NULL)")


class BareBody(BaseModel):
    content: str
    recipients: list[str]


def prepare_db(path: Path) -> None:
    """The bare side's file: WAL (persistent, so every server process finds it) and its one
    table."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(_SCHEMA)
    finally:
        conn.close()


def bare_app() -> FastAPI:
    """The app over the file ``DB_VARIABLE`` names: one connection for this process."""
    conn = sqlite3.connect(os.environ[DB_VARIABLE], timeout=0, isolation_level=None,
                           check_same_thread=False)
    conn.execute("PRAGMA synchronous = FULL")
    lock = threading.Lock()  # the connection is used by FastAPI's pool threads
    app = FastAPI()

    @app.post(PATH, status_code=201)
    def submit(body: BareBody) -> dict[str, object]:
        with lock:
            _begin_immediate(conn)
            try:
                cursor = conn.execute(
                    "INSERT INTO messages (content, recipient, created_at) VALUES (?, ?, ?)",
                    (body.content, body.recipients[0], time.time()))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return {"id": cursor.lastrowid, "recipients": len(body.recipients)}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _begin_immediate(conn: sqlite3.Connection) -> None:
    pause_s = _FIRST_PAUSE_S
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            busy = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() >= deadline:
                raise
        time.sleep(pause_s)
        pause_s = min(2 * pause_s, _MAX_PAUSE_S)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the bare app (see the docstring).")
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ[DB_VARIABLE] = str(args.db)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, args.port))
    sock.set_inheritable(True)
    config = uvicorn.Config("_bare_api:bare_app", factory=True, host=HOST, port=args.port,
                            workers=args.workers, log_level="info")
    with sock:
        if args.workers == 1:
            server = uvicorn.Server(config)
            server.run(sockets=[sock])
            return 0 if server.started else 1
        Multiprocess(config, sockets=[sock]).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
