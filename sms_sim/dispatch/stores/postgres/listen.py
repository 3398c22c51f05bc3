"""Wake-ups by ``LISTEN/NOTIFY``: what lets idle workers on many hosts wait without polling.

The store sends ``NOTIFY`` (``notify``, inside the writing transaction, so it goes out at
commit or not at all) on submit, edit, cancel and requeue: the operations that make work due
or move it earlier; and on a settle that gives work back (a release: a worker stopping with
claims it did not send), once per settle. Never per delivery or per claim: ``NOTIFY`` takes
a database-wide lock at commit, which serialises every notifying commit (the queues that
notify per job stall on it under load), and any other settle or a claim tells no idle
worker anything it needs (a retry's due time is known to the worker that set it, a lease's
end to whoever reads ``next_due_at``).

One channel per schema (``sms_sim_wake_`` and the md5 of ``current_schema()``: a name
always within PostgreSQL's 63 bytes), so stores in different schemas of one database never
wake each other. Each worker's ``ListenChannel`` holds one connection of its own, outside the
pool, in autocommit, and blocks in ``select`` on it and on a pipe that ``close`` writes to.
A lost connection (a restart, ``pg_terminate_backend``, a failover) is noticed when its
socket closes (or by TCP keepalives when a peer vanishes silently), and replaced with
backoff; meanwhile the worker polls (``DispatchConfig.fallback_poll_s``).

PgBouncer: ``LISTEN`` needs the same server session for as long as it listens, which only
session pooling gives. Behind transaction pooling the store is opened with
``sms_sim_pooling=transaction`` in its URL and offers no channel: workers poll.
"""

from __future__ import annotations

import logging
import os
import select
import threading

import psycopg
from psycopg import sql

from sms_sim.dispatch.stores.postgres.errors import safe_name
from sms_sim.dispatch.stores.postgres.schema import Connection

__all__ = ["ListenChannel", "notify", "CHANNEL_SQL", "LISTENER_NAME"]

log = logging.getLogger(__name__)

# The channel of the schema a connection's search_path leads to (an SQL expression).
CHANNEL_SQL = "'sms_sim_wake_' || md5(current_schema())"
LISTENER_NAME = "sms_sim listener"  # application_name: how an operator (or a test) finds it
RECONNECT_FIRST_S = 0.1
RECONNECT_CAP_S = 5.0
_CONNECT_TIMEOUT_S = 10


def notify(conn: Connection) -> None:
    """Wake this schema's listeners when the caller's transaction commits. Notifications of
    one transaction with the same (empty) payload are delivered once."""
    conn.execute(f"SELECT pg_notify({CHANNEL_SQL}, '')")


class ListenChannel:
    """``dispatch.wake.WakeChannel`` over one listening connection to ``dsn``."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._name = safe_name(dsn)
        self._listening = False
        self._closing = threading.Event()
        self._lock = threading.Lock()  # guards the pipe against close() racing run()'s end
        self._pipe: tuple[int, int] | None = None

    def is_listening(self) -> bool:
        return self._listening

    def close(self) -> None:
        with self._lock:
            self._closing.set()
            if self._pipe is not None:
                os.write(self._pipe[1], b"x")

    def run(self, wake: threading.Event) -> None:
        with self._lock:
            if self._closing.is_set():
                return
            self._pipe = os.pipe()
        try:
            self._listen_until_closed(wake)
        finally:
            with self._lock:
                pipe, self._pipe = self._pipe, None
            if pipe is not None:
                os.close(pipe[0])
                os.close(pipe[1])

    def _listen_until_closed(self, wake: threading.Event) -> None:
        pause_s = RECONNECT_FIRST_S
        down_since_logged = False
        while not self._closing.is_set():
            try:
                conn = self._connect()
            except psycopg.Error as exc:
                if not down_since_logged:
                    log.warning("cannot listen for wake-ups on %s (%s); polling until it "
                                "can", self._name, " ".join(str(exc).split()))
                    down_since_logged = True
                self._closing.wait(pause_s)
                pause_s = min(2 * pause_s, RECONNECT_CAP_S)
                continue
            if down_since_logged:
                log.warning("listening for wake-ups on %s again", self._name)
                down_since_logged = False
            pause_s = RECONNECT_FIRST_S
            try:
                self._listening = True
                wake.set()  # anything submitted while nobody listened is looked for now
                self._serve(conn, wake)
            except psycopg.Error as exc:
                log.warning("lost the wake-up connection to %s (%s); polling until it is "
                            "back", self._name, " ".join(str(exc).split()))
                down_since_logged = True
            finally:
                self._listening = False
                wake.set()  # the dispatcher's idle cap changes: let it recompute
                conn.close()
            self._closing.wait(pause_s)

    def _connect(self) -> Connection:
        # TCP keepalives: a server that vanished without closing the socket is noticed in
        # about 25 s (10 idle, then 3 probes 5 s apart).
        conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S,
                               application_name=LISTENER_NAME, keepalives=1,
                               keepalives_idle=10, keepalives_interval=5, keepalives_count=3)
        try:
            row = conn.execute(f"SELECT {CHANNEL_SQL}").fetchone()
            assert row is not None  # an expression always gives a row
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(row[0])))
        except BaseException:
            conn.close()
            raise
        return conn

    def _serve(self, conn: Connection, wake: threading.Event) -> None:
        """Wait on the connection's socket and the close pipe; set ``wake`` for every
        notification. Returns once closing; raises ``psycopg.Error`` when the connection is
        lost (the server's goodbye is read first, then the closed socket fails)."""
        assert self._pipe is not None
        stop_fd, conn_fd = self._pipe[0], conn.fileno()
        while not self._closing.is_set():
            readable, _, _ = select.select([conn_fd, stop_fd], [], [])
            if stop_fd in readable:
                return
            for _ in conn.notifies(timeout=0):
                wake.set()
