"""What a delivery's row writes cost the PostgreSQL server: leased per row, or by range.

The store's own statements, side by side on chunks of one broadcast.

Why: a delivery leased per row (a retry, a released or rescued one) is written twice, by
the claim that leases it (status, owner, lease end, attempt) and by the settle that
records its send. A broadcast's fresh deliveries are leased by range (schema version 5,
``stores/postgres/chunk.py``): the claim writes the chunk's first and last id on its row
of ``leases``, and the settle is the row's only write. This prints what each costs the
server, so the figure in docs/dispatch.md is one anyone can print.

What is measured, per run in a fresh database: N recipients submitted by the CLI (one
message), ``ANALYZE``, ``CHECKPOINT``; then C times, each on two chunks of B fresh ids
never touched before, ``EXPLAIN (ANALYZE)`` (planning and execution time, each statement
committed, a new ``leased_at`` per claim as in a drain) of

* per row: ``chunk._LEASE_SQL`` given the chunk's ids (the per-row path), then
  ``rows._SENT_BY[True]`` on them (the form the store uses when ids fill their range);
* by range: ``chunk._LEASE_SQL`` given the next chunk as a run (first and last id), then
  ``rows._SENT_BY[True]`` on it.

Each statement must change exactly its chunk (B rows written, or a lease row holding B),
or the run stops. Medians per run, then the median over runs. No target.

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
from sms_sim.dispatch.stores.postgres.schema import id_array, time_array  # noqa: E402

OWNER = "worker-00000000-0000-4000-8000-000000000000"  # as long as a worker's own
ROW_LEASE = "per row: the lease"
ROW_SETTLE = "per row: the settle after it"
RANGE_LEASE = "by range: the lease"
RANGE_SETTLE = "by range: the settle after it"


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
    """The median ms of each statement over ``chunks`` pairs of chunks, in a new broadcast."""
    submit_broadcast(url, numbers)
    times: dict[str, list[float]] = {name: [] for name in NAMES}
    with connect(url) as conn:
        conn.execute("ANALYZE")
        ((message_id,),) = conn.execute("SELECT id FROM messages").fetchall()
        ids = [int(r[0]) for r in conn.execute(
            "SELECT id FROM deliveries WHERE message_id = %s ORDER BY id", (message_id,))]
        conn.execute("CHECKPOINT")
        now = time.time()
        for k in range(chunks):
            per_row = ids[2 * k * batch:(2 * k + 1) * batch]
            ranged = ids[(2 * k + 1) * batch:(2 * k + 2) * batch]
            # (names, the chunk, its lease's start, the lease, the rows the lease returns:
            # those it wrote)
            for names, chunk_ids, leased_at, lease, returned in (
                    ((ROW_LEASE, ROW_SETTLE), per_row, now + k, by_rows(per_row), batch),
                    ((RANGE_LEASE, RANGE_SETTLE), ranged, now + k + 0.25,
                     by_range(message_id, ranged), 0)):
                params: dict[str, Any] = {"owner": OWNER, "now": leased_at,
                                          "until": leased_at + 30, "attempts": 1,
                                          "messages": [message_id]}
                times[names[0]].append(timed_ms(conn, chunk._LEASE_SQL, {**params, **lease},
                                                returned))
                (held,) = conn.execute("SELECT open FROM leases WHERE owner = %s AND "
                                       "leased_at = %s", (OWNER, leased_at)).fetchall()
                if held[0] != batch:
                    raise SystemExit(f"pg_row_writes: a lease holds {held[0]}, not {batch}")
                # As the store settles a broadcast's chunk: its ids fill their range.
                times[names[1]].append(timed_ms(conn, rows._SENT_BY[True], {
                    **params, "now": leased_at + 0.1, **rows_of(chunk_ids),
                    "ats": time_array([leased_at + 0.05] * batch)}, batch))
    return {name: statistics.median(values) for name, values in times.items()}


NAMES = (ROW_LEASE, ROW_SETTLE, RANGE_LEASE, RANGE_SETTLE)
_NO_RUNS: dict[str, list[int]] = {"runs": [], "run_sizes": [], "run_firsts": [],
                                  "run_lasts": []}


def rows_of(ids: list[int]) -> dict[str, Any]:
    return {"ids": id_array(ids), "least": ids[0], "greatest": ids[-1]}


def by_rows(ids: list[int]) -> dict[str, Any]:
    """``chunk._LEASE_SQL``'s parameters for leasing ``ids`` per row."""
    return {**rows_of(ids), **_NO_RUNS}


def by_range(message_id: int, ids: list[int]) -> dict[str, Any]:
    """``chunk._LEASE_SQL``'s parameters for leasing ``ids`` (a run) by range."""
    return {"ids": "{}", "least": 0, "greatest": 0, "runs": [message_id],
            "run_sizes": [len(ids)], "run_firsts": [ids[0]], "run_lasts": [ids[-1]]}


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
    results: dict[str, list[float]] = {name: [] for name in NAMES}
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
    per_row = medians[ROW_LEASE] + medians[ROW_SETTLE]
    by_range_ms = medians[RANGE_LEASE] + medians[RANGE_SETTLE]
    print(f"  a delivery's lease and settle: per row {1000 * per_row / args.batch:.1f} us, "
          f"by range {1000 * by_range_ms / args.batch:.1f} us of server time "
          f"(by range / per row {by_range_ms / per_row:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
