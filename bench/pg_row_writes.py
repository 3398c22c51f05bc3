"""What a delivery's row writes cost the PostgreSQL server: its lease, its settle, one write.

Three statements of the store: the lease, the settle after it, and a settle that is the
row's first write.

Why: a broadcast's delivery is written twice, once by the claim that leases it (status,
owner, lease end, attempt) and once by the settle that records its send. A lease kept as a
range (a chunk of a message's fresh ids recorded once, no row written until its settle)
would leave one write a delivery; this prints what the server would save, on the store's
own statements, so the case for that schema change rests on a figure anyone can print.

What is measured, per run in a fresh database: N recipients submitted by the CLI (one
message), ``ANALYZE``, ``CHECKPOINT``; then C times, each on chunks of B fresh ids never
touched before, ``EXPLAIN (ANALYZE)`` (planning and execution time, each statement
committed, a new ``leased_at`` per claim as in a drain) of

* the lease: ``chunk._LEASE_SQL``, the claim's write of a chunk;
* the settle after it: ``rows._SENT_SQL`` on the rows just leased;
* the settle as the first write: the same statement on the next chunk, never leased,
  fenced on ``pending`` and ``fresh`` instead of on a lease (what a settle would cost if
  the lease wrote no row; full-page images after the checkpoint included, as for the lease).

Each statement must change exactly B rows, or the run stops. Medians per run, then the
median over runs. No target: the figure the range-lease work would move (docs/dispatch.md).

Command (from the repo root): python3 bench/pg_row_writes.py [--recipients 300000]
[--batch 1000] [--chunks 15] [--runs 2] [--dsn URL]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import print_header, print_runs
from _pg import (
    ROOT,
    Connection,
    add_dsn_option,
    connect,
    scratch,
    server,
    server_version,
    shown_command_line,
    submit_broadcast,
    write_numbers,
)

sys.path.insert(0, str(ROOT))
from sms_sim.dispatch.stores.postgres import chunk, rows  # noqa: E402
from sms_sim.dispatch.stores.postgres.schema import id_array  # noqa: E402

OWNER = "worker-00000000-0000-4000-8000-000000000000"  # as long as a worker's own
LEASE = "the lease"
SETTLE = "the settle after it"
FIRST = "the settle as the first write"
_LEASE_FENCE = ("d.status = 'leased' AND d.lease_owner = %(owner)s "
                "AND d.lease_until > %(now)s")


def first_write_settle() -> str:
    """``rows._SENT_SQL`` fenced on a fresh, never-leased row (attempt 0) instead of on a
    lease; refuses to guess if the store's statement has changed shape."""
    sql = rows._SENT_SQL
    if _LEASE_FENCE not in sql or "d.attempts = %(attempts)s" not in sql:
        raise SystemExit("pg_row_writes: rows._SENT_SQL changed shape; update this bench")
    return (sql.replace(_LEASE_FENCE, "d.status = 'pending' AND d.fresh")
            .replace("d.attempts = %(attempts)s", "d.attempts = %(attempts)s - 1"))


def timed_ms(conn: Connection, sql: str, params: dict[str, Any], expected: int) -> float:
    """Planning plus execution time of ``sql`` run once and committed (autocommit); it must
    return ``expected`` rows."""
    row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params,
                       prepare=False).fetchone()
    if row is None:
        raise SystemExit("pg_row_writes: EXPLAIN returned nothing")
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    top = plan[0]
    if top["Plan"].get("Actual Rows") != expected:
        raise SystemExit(f"pg_row_writes: a statement changed {top['Plan'].get('Actual Rows')}"
                         f" rows, not {expected}: the measurement is not of what it says")
    return float(top["Planning Time"]) + float(top["Execution Time"])


def one_run(url: str, numbers: Path, batch: int, chunks: int) -> dict[str, float]:
    """The median ms of each statement over ``chunks`` chunks, in a new broadcast."""
    submit_broadcast(url, numbers)
    first_write = first_write_settle()
    times: dict[str, list[float]] = {LEASE: [], SETTLE: [], FIRST: []}
    with connect(url) as conn:
        conn.execute("ANALYZE")
        ((message_id,),) = conn.execute("SELECT id FROM messages").fetchall()
        ids = [int(r[0]) for r in conn.execute(
            "SELECT id FROM deliveries WHERE message_id = %s ORDER BY id", (message_id,))]
        conn.execute("CHECKPOINT")
        now = time.time()
        for k in range(chunks):
            leased = ids[2 * k * batch:(2 * k + 1) * batch]
            fresh = ids[(2 * k + 1) * batch:(2 * k + 2) * batch]
            params: dict[str, Any] = {"owner": OWNER, "now": now + k, "until": now + k + 30,
                                      "attempts": 1}
            times[LEASE].append(timed_ms(conn, chunk._LEASE_SQL, {**params, **ranged(leased)},
                                         batch))
            later = {**params, "now": now + k + 0.5}
            times[SETTLE].append(timed_ms(conn, rows._SENT_SQL, {**later, **ranged(leased)},
                                          batch))
            times[FIRST].append(timed_ms(conn, first_write, {**later, **ranged(fresh)}, batch))
    return {name: statistics.median(values) for name, values in times.items()}


def ranged(ids: list[int]) -> dict[str, Any]:
    return {"ids": id_array(ids), "least": ids[0], "greatest": ids[-1]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--recipients", type=int, default=300_000, help="N (default 300,000)")
    parser.add_argument("--batch", type=int, default=1000, help="B (default 1000)")
    parser.add_argument("--chunks", type=int, default=15, help="C per run (default 15)")
    parser.add_argument("--runs", type=int, default=2, help="runs (default 2)")
    add_dsn_option(parser)
    args = parser.parse_args(argv)
    if min(args.recipients, args.batch, args.chunks, args.runs) < 1:
        parser.error("--recipients, --batch, --chunks and --runs must be >= 1")
    if args.recipients < 2 * args.batch * args.chunks:
        parser.error("--recipients must be at least 2 x --batch x --chunks (fresh chunks)")
    print(__doc__.splitlines()[0] if __doc__ else "")
    print(f"command: {shown_command_line()}")
    results: dict[str, list[float]] = {LEASE: [], SETTLE: [], FIRST: []}
    with tempfile.TemporaryDirectory(prefix="sms_sim-row-writes-") as tmp, \
            server(args.dsn) as admin, scratch(admin) as dbs:
        print(f"PostgreSQL {server_version(admin)}; {args.recipients:,} recipients, "
              f"{args.chunks} chunks of {args.batch:,} a statement a run")
        numbers = write_numbers(Path(tmp) / "numbers.txt", 200, args.recipients)
        for _ in range(args.runs):
            url = dbs.database()
            try:
                for name, value in one_run(url, numbers, args.batch, args.chunks).items():
                    results[name].append(value)
            finally:
                dbs.drop(url)
    print_header(f"server ms per statement of {args.batch:,} rows (the median chunk of "
                 "each run)", args.runs)
    medians = {name: print_runs(name, values, ",.2f") for name, values in results.items()}
    both = medians[LEASE] + medians[SETTLE]
    per_delivery_us = 1000 * (both - medians[FIRST]) / args.batch
    print(f"  the lease and its settle: {both:,.2f} ms; one write (the settle as the first): "
          f"{medians[FIRST]:,.2f} ms; a range lease would save at most about "
          f"{per_delivery_us:.1f} us of server time a delivery (less its own bookkeeping)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
