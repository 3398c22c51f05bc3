"""Pieces shared by the PostgreSQL benches: the server, scratch databases, the worker command,
a bare per-row queue loop, and the figures read back from the store's tables.

A plain module like ``_common``; it imports psycopg (the ``postgres`` extra) but never
``sms_sim``: what is measured runs in child processes (``python -m sms_sim ...`` from the
repository root), and a script that calls the store in-process imports it itself.

* ``server(dsn)``: the given server, or a throwaway one from ``scripts/pg_server.py`` that is
  stopped (and its directory removed) when the block ends, however it ends.
* ``Scratch``: fresh databases on that server, one per side and run, dropped on exit, so no
  side measures another's rows, dead tuples or bloat.
* ``start_workers`` / ``finish_workers``: ``python -m sms_sim worker --db URL`` processes
  with zero-latency senders and their JSON reports.
* ``run_bare``: the per-row ``FOR UPDATE SKIP LOCKED`` claim/complete loop on the store's
  own ``deliveries`` table, a batch of rows a claim, in processes of its own.
* ``drain_span``: first claim and last settle as the table recorded them, so every side's
  rate is taken the same way, without interpreter start-up.
* ``CpuMeter``: the CPU a side used, its own processes' and the server's (when the server
  runs on this machine), so a rate can be read as the work each delivery cost.
* ``--baseline DIR`` (``add_baseline_option``): another checkout of sms_sim (a ``git
  worktree`` of an older commit) whose ``python -m sms_sim`` runs as one more side, in
  databases of its own, so old and new code are measured in one run on one server. Every
  helper that runs the CLI takes ``root``, the checkout to run it from.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from _common import command_line

ROOT = Path(__file__).resolve().parent.parent
PG_SERVER = ROOT / "scripts" / "pg_server.py"
SERVER_START_TIMEOUT_S = 600  # pg_server.py may install postgresql-15 with apt first
WORKER_TIMEOUT_S = 3600.0
START_DELAY_S = 2.0  # bare children begin together this long after launch (start-up)

Connection = psycopg.Connection[TupleRow]
_PASSWORD_RE = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@")

# The bare queue: one statement leases the oldest due rows, up to a batch (through the due
# index such a queue keeps, ``_BARE_INDEX``; each row found and locked on its own by ``FOR
# UPDATE SKIP LOCKED`` in a materialised CTE, run once, so never more than the batch: the
# form PostgreSQL bug #15715 calls for), one settles them, fenced by owner and attempt as
# the store's settle is. Autocommit: two round trips and two commits a batch (with a batch
# of 1, the loop every Postgres queue starts from).
#
# The store's own due index no longer serves it: since schema 3 it holds no fresh row (a
# broadcast's are claimed by chunk), since 4 it keys on the generated ``waiting`` column,
# which this predicate does not imply; without an index of its own each claim was a
# sequential scan of the table.
_BARE_INDEX = ("CREATE INDEX IF NOT EXISTS bare_due ON deliveries (next_attempt_at) "
               "WHERE status IN ('pending', 'retrying')")
_BARE_CHILD = """\
import json, sys, time
import psycopg
url, owner, start_at, batch = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
conn = psycopg.connect(url, autocommit=True)
claim = ("WITH picked AS MATERIALIZED (SELECT id FROM deliveries "
         "WHERE status IN ('pending', 'retrying') AND next_attempt_at <= %(now)s "
         "ORDER BY next_attempt_at LIMIT %(batch)s FOR UPDATE SKIP LOCKED) "
         "UPDATE deliveries AS d SET status = 'leased', lease_owner = %(owner)s, "
         "lease_until = %(until)s, leased_at = %(now)s, attempts = d.attempts + 1 "
         "FROM picked WHERE d.id = picked.id RETURNING d.id, d.attempts")
settle = ("UPDATE deliveries AS d SET status = 'sent', sent_at = %s, lease_owner = NULL, "
          "lease_until = NULL FROM unnest(%s::bigint[], %s::bigint[]) AS s(id, attempts) "
          "WHERE d.id = s.id AND d.status = 'leased' AND d.lease_owner = %s "
          "AND d.attempts = s.attempts")
time.sleep(max(0.0, start_at - time.time()))
done = 0
while True:
    now = time.time()
    rows = conn.execute(claim, {"owner": owner, "until": now + 60.0, "now": now,
                                "batch": batch}).fetchall()
    if not rows:
        break
    conn.execute(settle, (time.time(), [r[0] for r in rows], [r[1] for r in rows], owner))
    done += len(rows)
conn.close()
print(json.dumps({"done": done}))
"""


# ---- options -------------------------------------------------------------------------------


def add_baseline_option(parser: argparse.ArgumentParser) -> None:
    """``--baseline DIR``: another checkout run as the side ``baseline`` (old vs new)."""
    parser.add_argument("--baseline", metavar="DIR", type=Path,
                        help="another checkout of sms_sim (e.g. a git worktree of the parent "
                             "commit): its code runs as one more side, 'baseline', with the "
                             "same options, and ours/baseline is printed")


def check_baseline(parser: argparse.ArgumentParser, baseline: Path | None) -> None:
    """Refuse a ``--baseline`` that holds no sms_sim package (one usage line)."""
    if baseline is not None and not (baseline / "sms_sim" / "__main__.py").is_file():
        parser.error(f"--baseline must be a checkout of sms_sim (got {str(baseline)!r})")


def add_dsn_option(parser: argparse.ArgumentParser) -> None:
    """``--dsn URL``: a server to use (the bench makes and drops databases on it; the role
    needs CREATEDB) instead of a throwaway one."""
    parser.add_argument("--dsn", metavar="URL", type=_server_url,
                        help="an existing PostgreSQL server (postgresql://...; the role must "
                             "be allowed to create databases); default: start a throwaway one "
                             "with scripts/pg_server.py and stop it at the end")


def _server_url(text: str) -> str:
    """``--dsn``'s value: a PostgreSQL URL (an empty one, an unset variable's, would connect
    to whatever the local socket serves, or fail there with a driver traceback)."""
    if not text.startswith(("postgresql://", "postgres://")):
        raise argparse.ArgumentTypeError(f"not a postgresql:// URL: {text!r}")
    return text


def shown(text: str) -> str:
    """``text`` with the password of any ``postgresql://`` URL in it replaced by ``***``."""
    return _PASSWORD_RE.sub(r"\1***@", text)


def shown_command_line() -> str:
    """``_common.command_line`` without passwords (``shown``)."""
    return shown(command_line())


# ---- the server and its databases ----------------------------------------------------------


@contextlib.contextmanager
def server(dsn: str | None) -> Iterator[str]:
    """The server ``dsn`` names, or a throwaway one, stopped and removed on exit."""
    if dsn is not None:
        yield dsn
        return
    started = subprocess.run([sys.executable, str(PG_SERVER), "start"], capture_output=True,
                             text=True, timeout=SERVER_START_TIMEOUT_S)
    if started.returncode != 0:
        raise RuntimeError(f"scripts/pg_server.py start failed: {started.stderr.strip()}")
    found = dict(line.split("=", 1) for line in started.stdout.splitlines() if "=" in line)
    try:
        yield found["SMS_SIM_PG_DSN"]
    finally:
        subprocess.run([sys.executable, str(PG_SERVER), "stop", found["SMS_SIM_PG_DIR"]],
                       capture_output=True, timeout=300, check=False)


def url_of(params: dict[str, Any]) -> str:
    """A ``postgresql://`` URL from libpq parameters (the store chooses itself by scheme)."""
    user = urllib.parse.quote(str(params.get("user") or ""), safe="")
    password = params.get("password")
    auth = (f"{user}:{urllib.parse.quote(str(password), safe='')}@" if password
            else (f"{user}@" if user else ""))
    host = str(params.get("host") or "localhost")
    port = f":{params['port']}" if params.get("port") else ""
    rest = {k: str(v) for k, v in params.items()
            if k not in {"user", "password", "host", "port", "dbname"} and v is not None}
    query = f"?{urllib.parse.urlencode(rest)}" if rest else ""
    return f"postgresql://{auth}{host}{port}/{params.get('dbname') or ''}{query}"


def derive_url(dsn: str, **changes: str) -> str:
    """``dsn`` as a URL with libpq parameters changed (``dbname``, ``options``, ...)."""
    return url_of({**conninfo_to_dict(dsn), **changes})


def connect(url: str) -> Connection:
    """An autocommit connection (the benches' own reads and set-up)."""
    return psycopg.connect(url, autocommit=True, connect_timeout=10)


class Scratch:
    """Fresh databases on one server, named ``sms_bench_<pid>_<n>``; ``close`` drops those
    still there (``WITH (FORCE)``: a killed child's session does not keep one alive)."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self._admin = connect(admin_dsn)
        self._made: list[str] = []

    def database(self) -> str:
        """A new, empty database; its URL."""
        name = f"sms_bench_{os.getpid()}_{len(self._made) + 1}"
        self._admin.execute(f"CREATE DATABASE {name}")
        self._made.append(name)
        return derive_url(self.admin_dsn, dbname=name)

    def drop(self, url: str) -> None:
        name = str(conninfo_to_dict(url)["dbname"])
        self._admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if name in self._made:
            self._made.remove(name)

    def close(self) -> None:
        try:
            for name in list(self._made):
                self._admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            self._made.clear()
        finally:
            self._admin.close()


@contextlib.contextmanager
def scratch(admin_dsn: str) -> Iterator[Scratch]:
    databases = Scratch(admin_dsn)
    try:
        yield databases
    finally:
        databases.close()


def checkpoint(url: str) -> None:
    """``CHECKPOINT`` before a timed side, so no side pays for the one before's WAL; skipped
    where the role may not (it needs superuser or pg_checkpoint)."""
    with contextlib.suppress(psycopg.Error), connect(url) as conn:
        conn.execute("CHECKPOINT")


def server_version(url: str) -> str:
    with connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return "?" if row is None else str(row[0])


# ---- recipients and the CLI ----------------------------------------------------------------


def numbers(first: int, count: int) -> list[str]:
    """``count`` distinct valid numbers ``<first>-xxx-xxxx`` (the first group counting up
    past 10**7)."""
    return [f"{first + i // 10**7:03d}-{i // 10**4 % 1000:03d}-{i % 10**4:04d}"
            for i in range(count)]


def write_numbers(path: Path, first: int, count: int) -> Path:
    path.write_text("".join(f"{number}\n" for number in numbers(first, count)))
    return path


def sms_sim(*args: str, timeout_s: float = WORKER_TIMEOUT_S, root: Path = ROOT) -> str:
    """Run ``python -m sms_sim ARGS`` of the checkout ``root``; its stdout, or raise with
    stderr."""
    result = subprocess.run([sys.executable, "-m", "sms_sim", *args], capture_output=True,
                            text=True, cwd=root, timeout=timeout_s)
    if result.returncode != 0:
        raise RuntimeError(f"sms_sim {args[0]} exited {result.returncode}: "
                           f"{result.stderr.strip()[-500:]}")
    return result.stdout


def submit_broadcast(url: str, recipients_file: Path, *, tenant: str = "default",
                     content: str = "broadcast", root: Path = ROOT) -> None:
    """Submit one message to every number in the file, through the CLI (creates the schema)."""
    sms_sim("submit", content, "--db", url, "--recipients-file", str(recipients_file),
            "--tenant", tenant, root=root)


# ---- worker processes ----------------------------------------------------------------------


def worker_command(url: str, *, batch: int, seed: int, exit_when_idle: bool = True,
                   senders: int = 4, extra: Sequence[str] = ()) -> list[str]:
    """``python -m sms_sim worker`` with zero-latency senders, quiet, JSON report."""
    command = [sys.executable, "-m", "sms_sim", "worker", "--db", url, "--quiet", "--json",
               "--senders", str(senders), "--mean", "0", "--deviation", "0", "--batch",
               str(batch), "--interval", "3600", "--seed", str(seed), *extra]
    return [*command, "--exit-when-idle"] if exit_when_idle else command


def start_workers(url: str, count: int, *, batch: int, log_dir: Path,
                  exit_when_idle: bool = True, extra: Sequence[str] = (),
                  root: Path = ROOT) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` workers; each one's stdout (its JSON report) and stderr (its first
    line, errors) go to files in ``log_dir``, read by ``finish_workers``."""
    procs = []
    for i in range(count):
        with (log_dir / f"worker-{i}.out").open("wb") as out, \
                (log_dir / f"worker-{i}.err").open("wb") as err:
            procs.append(subprocess.Popen(
                worker_command(url, batch=batch, seed=i + 1, exit_when_idle=exit_when_idle,
                               extra=extra), stdout=out, stderr=err, cwd=root))
    return procs


def finish_workers(procs: Sequence[subprocess.Popen[bytes]], log_dir: Path, *,
                   terminate: bool = False,
                   timeout_s: float = WORKER_TIMEOUT_S) -> list[dict[str, Any]]:
    """Wait for the workers (after SIGTERM if ``terminate``; SIGKILL past ``timeout_s``);
    their JSON reports. Raises if one failed: the exit code and its stderr's last line."""
    deadline = time.monotonic() + timeout_s
    if terminate:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
    try:
        for proc in procs:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        kill_all(procs)
    reports = []
    for i, proc in enumerate(procs):
        expected = (0, 143) if terminate else (0,)
        out = (log_dir / f"worker-{i}.out").read_text(errors="replace").strip()
        if proc.returncode not in expected or not out:
            err = (log_dir / f"worker-{i}.err").read_text(errors="replace").strip()
            raise RuntimeError(f"worker {i} exited {proc.returncode}: {err[-500:]}")
        reports.append(json.loads(out.splitlines()[-1]))
    return reports


def kill_all(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGKILL and reap every process still running (cleanup after an error)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@dataclass(frozen=True, slots=True)
class WorkerRun:
    """Worker processes run until idle: wall seconds from launch to the last exit (start-up
    included) and their reports."""

    wall_s: float
    reports: list[dict[str, Any]]

    @property
    def sent(self) -> int:
        return sum(int(report["sent"]) for report in self.reports)

    @property
    def claims(self) -> int:
        return sum(int(report["claims"]) for report in self.reports)

    @property
    def claim_round_s(self) -> float:
        """A worker's mean time from one claim to its next (elapsed / claims, averaged)."""
        rounds = [float(r["elapsed_s"]) / int(r["claims"]) for r in self.reports if r["claims"]]
        return sum(rounds) / len(rounds) if rounds else float("nan")


def run_workers(url: str, count: int, *, batch: int, log_dir: Path,
                extra: Sequence[str] = (), root: Path = ROOT) -> WorkerRun:
    """``count`` workers of the checkout ``root`` with ``--exit-when-idle`` until they have
    all exited."""
    start = time.perf_counter()
    procs = start_workers(url, count, batch=batch, log_dir=log_dir, extra=extra, root=root)
    reports = finish_workers(procs, log_dir)
    return WorkerRun(wall_s=time.perf_counter() - start, reports=reports)


# ---- the bare per-row queue ----------------------------------------------------------------


def run_bare(url: str, processes: int, batch: int) -> int:
    """Drain ``deliveries`` with the bare loop in ``processes`` processes that start together,
    ``batch`` rows a claim; how many rows they completed in all."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_BARE_INDEX)
        conn.execute("ANALYZE deliveries")
    start_at = f"{time.time() + START_DELAY_S!r}"
    procs = [subprocess.Popen([sys.executable, "-c", _BARE_CHILD, url, f"bare-{i}", start_at,
                              str(batch)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(processes)]
    done = 0
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=WORKER_TIMEOUT_S)
            if proc.returncode != 0:
                raise RuntimeError(f"bare loop exited {proc.returncode}: {err.strip()[-500:]}")
            done += int(json.loads(out.strip().splitlines()[-1])["done"])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return done


# ---- figures from the tables ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    """The sent deliveries: how many, the first claim and the last settle (epoch seconds)."""

    sent: int
    first_claim_at: float
    last_sent_at: float

    @property
    def seconds(self) -> float:
        return self.last_sent_at - self.first_claim_at

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else float("nan")


def drain_span(url: str, message_id: int | None = None) -> Span:
    """``Span`` of every sent delivery (of ``message_id`` only, if given)."""
    query = ("SELECT count(*), min(leased_at), max(sent_at) FROM deliveries "
             "WHERE status = 'sent'")
    params: tuple[int, ...] = ()
    if message_id is not None:
        query += " AND message_id = %s"
        params = (message_id,)
    with connect(url) as conn:
        row = conn.execute(query, params).fetchone()
    if row is None or not row[0]:
        raise RuntimeError("no delivery was sent")
    return Span(sent=int(row[0]), first_claim_at=float(row[1]), last_sent_at=float(row[2]))


def dead_tuples(url: str, table: str = "deliveries") -> int:
    """The statistics' dead-tuple count of ``table`` (approximate, for information)."""
    with connect(url) as conn:
        row = conn.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = %s",
                           (table,)).fetchone()
    return 0 if row is None else int(row[0])


# ---- CPU per side ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CpuUse:
    """CPU seconds used over a block: by the bench's child processes (reaped within it), and
    by the server's processes, None when the server is not on this machine."""

    client_s: float
    server_s: float | None


def _local(dsn: str) -> bool:
    host = str(conninfo_to_dict(dsn).get("host") or "")
    return host in ("", "localhost", "127.0.0.1", "::1") or host.startswith("/")


def _server_cpu() -> dict[int, float]:
    """Every ``postgres`` process's CPU seconds so far (user + system), by pid."""
    found: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{entry}/stat") as stat:
                name, _, rest = stat.read().partition(") ")
            if name.endswith("(postgres"):
                fields = rest.split()
                found[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    return found


class CpuMeter:
    """``with CpuMeter(dsn) as meter: ...`` then ``meter.use``. The children's CPU from
    ``getrusage`` (only those reaped inside the block count, so wait for them in it); the
    server's by sampling ``/proc`` every 50 ms, each process's last reading minus its
    first (0 for one started inside), so a backend that exits between two samples loses at
    most 50 ms. Linux only; the server's part is None for a server elsewhere."""

    SAMPLE_S = 0.05

    def __init__(self, dsn: str) -> None:
        self._watch = _local(dsn) and os.path.isdir("/proc")
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_until_stopped, daemon=True)
        self._children = 0.0
        self.use = CpuUse(client_s=0.0, server_s=None)

    def __enter__(self) -> CpuMeter:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._children = usage.ru_utime + usage.ru_stime
        if self._watch:
            self._first = _server_cpu()
            self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_s = None
        if self._watch:
            self._stop.set()
            self._sampler.join()
            self._last.update(_server_cpu())
            server_s = sum(cpu - self._first.get(pid, 0.0) for pid, cpu in self._last.items())
        self.use = CpuUse(client_s=usage.ru_utime + usage.ru_stime - self._children,
                          server_s=server_s)

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(self.SAMPLE_S):
            self._last.update(_server_cpu())
