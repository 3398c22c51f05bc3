"""Submit of a 1,000,000-recipient message into PostgreSQL against a bare COPY of the same rows.

What is measured, side by side on one server, alternating which side goes first:

* ours: ``PostgresStore.submit`` of one message to N recipients, in a child process (the
  store opened and the message validated before the clock starts): the idempotency check,
  the message row, the deliveries by ``COPY`` and the commit. Rows/s = N / its seconds.
* bare: the same N rows (the same message id, numbers, due time and ``fresh`` flag, already
  formatted as COPY text before the clock starts) by one ``COPY deliveries (message_id,
  recipient, next_attempt_at, fresh) FROM STDIN`` into a scratch schema's copy of the
  store's table (``LIKE ... INCLUDING ALL`` with its storage parameters: the same columns,
  defaults, constraints, indexes and fillfactor) and its commit, in a child process too.
  The floor any loader pays for these rows and indexes. (Without ``fresh`` every row went
  into the two partial claim indexes, which a submitted broadcast's rows stay out of: the
  bare side paid for two index entries a row that ours does not, and looked slower.)
* the command, for information: ``python -m sms_sim submit --recipients-file FILE`` from
  launch to exit (start-up, reading and validating the numbers, the submit).

Each side gets a fresh database per run and a ``CHECKPOINT`` before it.

Targets (issue 13): ours >= 100,000 rows/s and ours / bare >= 0.8.

Command (from the repo root): python3 bench/pg_submit.py [--recipients 1000000] [--runs 3]
[--dsn postgresql://...] [--quick]
(without --dsn a throwaway server is started with scripts/pg_server.py and stopped after)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from _common import print_header, print_runs, print_target, rotate
from _pg import (
    ROOT,
    Scratch,
    add_dsn_option,
    checkpoint,
    connect,
    scratch,
    server,
    server_version,
    shown_command_line,
    sms_sim,
    write_numbers,
)

TARGET_ROWS_PER_S = 100_000
TARGET_RATIO = 0.8
COPY_ROWS = 50_000  # rows per write to the COPY stream, as the store

# Ours: validate and open untimed, then time the store's submit alone.
_OURS_CHILD = """\
import json, sys, time
sys.path.insert(0, {root!r})
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.stores import open_store
url, path = sys.argv[1], sys.argv[2]
message = NewMessage.validated(content="bench", recipients=open(path).read().split())
store = open_store(url, create=True)
start = time.perf_counter()
result = store.submit(message, time.time())
elapsed = time.perf_counter() - start
store.close()
print(json.dumps({{"seconds": elapsed, "message_id": result.message_id}}))
"""
# Bare: the rows as COPY text first, then time one COPY and its commit.
_BARE_CHILD = """\
import json, sys, time
import psycopg
url, path, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
due = repr(time.time())
numbers = open(path).read().split()
chunks = ["".join(f"1\\t{n}\\t{due}\\tt\\n" for n in numbers[i:i + rows])
          for i in range(0, len(numbers), rows)]
conn = psycopg.connect(url)
start = time.perf_counter()
with conn.cursor() as cursor, cursor.copy(
        "COPY bare.deliveries (message_id, recipient, next_attempt_at, fresh) "
        "FROM STDIN") as copy:
    for chunk in chunks:
        copy.write(chunk)
conn.commit()
elapsed = time.perf_counter() - start
conn.close()
print(json.dumps({"seconds": elapsed}))
"""


def _child(code: str, *args: str) -> dict[str, float]:
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                            text=True, cwd=ROOT, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"child exited {result.returncode}: {result.stderr.strip()[-500:]}")
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def _count(url: str, table: str) -> int:
    with connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return 0 if row is None else int(row[0])


def rate_ours(dbs: Scratch, numbers: Path, recipients: int) -> float:
    url = dbs.database()
    try:
        sms_sim("migrate", "--db", url)
        checkpoint(url)
        seconds = _child(_OURS_CHILD.format(root=str(ROOT)), url, str(numbers))["seconds"]
        if _count(url, "deliveries") != recipients:
            raise RuntimeError("ours stored the wrong number of deliveries")
    finally:
        dbs.drop(url)
    return recipients / seconds


def rate_bare(dbs: Scratch, numbers: Path, recipients: int) -> float:
    url = dbs.database()
    try:
        sms_sim("migrate", "--db", url)  # the store's table, to copy the shape of
        with connect(url) as conn:
            conn.execute("CREATE SCHEMA bare")
            # LIKE copies columns, indexes and generated columns but not the storage
            # parameters (fillfactor, autovacuum's), which decide how many pages a COPY
            # fills: the bare table takes the store's own.
            row = conn.execute("SELECT array_to_string(reloptions, ', ') FROM pg_class "
                               "WHERE oid = 'public.deliveries'::regclass").fetchone()
            options = f" WITH ({row[0]})" if row is not None and row[0] else ""
            conn.execute("CREATE TABLE bare.deliveries (LIKE public.deliveries INCLUDING ALL)"
                         + options)
        checkpoint(url)
        seconds = _child(_BARE_CHILD, url, str(numbers), str(COPY_ROWS))["seconds"]
        if _count(url, "bare.deliveries") != recipients:
            raise RuntimeError("bare stored the wrong number of rows")
    finally:
        dbs.drop(url)
    return recipients / seconds


def rate_command(dbs: Scratch, numbers: Path, recipients: int) -> float:
    url = dbs.database()
    try:
        sms_sim("migrate", "--db", url)
        checkpoint(url)
        start = time.perf_counter()
        sms_sim("submit", "bench", "--db", url, "--recipients-file", str(numbers))
        elapsed_s = time.perf_counter() - start
    finally:
        dbs.drop(url)
    return recipients / elapsed_s


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="runs per side (default 3)")
    parser.add_argument("--recipients", type=int, default=1_000_000,
                        help="N (default 1,000,000)")
    add_dsn_option(parser)
    parser.add_argument("--quick", action="store_true", help="20,000 recipients, 1 run")
    args = parser.parse_args(argv)
    if args.quick:
        args.recipients, args.runs = 20_000, 1
    if args.runs < 1 or args.recipients < 1:
        parser.error("--runs and --recipients must be >= 1")
    print(__doc__.splitlines()[0] if __doc__ else "")
    print(f"command: {shown_command_line()}")
    with server(args.dsn) as admin, scratch(admin) as dbs, \
            tempfile.TemporaryDirectory(prefix="sms_sim-pg-submit-") as tmp:
        print(f"PostgreSQL {server_version(admin)}; {args.recipients:,} recipients")
        numbers = write_numbers(Path(tmp) / "numbers.txt", 700, args.recipients)
        results = rotate({
            "ours": lambda: rate_ours(dbs, numbers, args.recipients),
            "bare": lambda: rate_bare(dbs, numbers, args.recipients),
            "command": lambda: rate_command(dbs, numbers, args.recipients),
        }, args.runs)
    print_header("submit rows/s", args.runs)
    ours = print_runs("ours (PostgresStore.submit)", results["ours"], ",.0f")
    bare = print_runs("bare COPY", results["bare"], ",.0f")
    command = print_runs("the submit command, end to end (for information)",
                         results["command"], ",.0f")
    ratio = ours / bare
    print(f"  ours/bare: {ratio:.2f}; the command / ours: {command / ours:.2f}")
    print_target(f"target ours >= {TARGET_ROWS_PER_S:,} rows/s", ours >= TARGET_ROWS_PER_S,
                 f"{ours:,.0f}")
    print_target(f"target ours/bare >= {TARGET_RATIO:g}", ratio >= TARGET_RATIO, f"{ratio:.2f}")
    return 0 if ours >= TARGET_ROWS_PER_S and ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
