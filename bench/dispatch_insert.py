"""Insert speed: one submit of 100,000 recipients, against a bare executemany on the same schema.

What is measured, alternating which goes first: ours = ``SqliteStore.submit`` of one
message with N recipients (one ``BEGIN IMMEDIATE`` transaction: the message row with its
unique idempotency key, then ``executemany`` of N delivery rows into a table with its
unique (message, recipient) constraint and three indexes); bare = one transaction of
``executemany`` inserting the same N rows into the same schema. Validation of the N numbers
(``NewMessage.validated``) is timed separately and not included in either rate.

Command (from the repo root): python3 bench/dispatch_insert.py [--runs 3] [--recipients N]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sms_sim.dispatch.requests import NewMessage  # noqa: E402
from sms_sim.dispatch.stores import SqliteStore  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--recipients", type=int, default=100_000)
    args = parser.parse_args(argv)
    numbers = [f"555-{i // 10000:03d}-{i % 10000:04d}" for i in range(args.recipients)]
    ours: list[float] = []
    bare: list[float] = []
    validate: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            start = time.perf_counter()
            message = NewMessage.validated(content="broadcast", recipients=numbers)
            validate.append(time.perf_counter() - start)
            for side in (("ours", "bare") if run % 2 == 0 else ("bare", "ours")):
                store = SqliteStore(Path(tmp) / f"{side}-{run}.db")
                if side == "ours":
                    start = time.perf_counter()
                    store.submit(message, 1.0)
                    ours.append(args.recipients / (time.perf_counter() - start))
                    store.close()
                    continue
                store.close()
                conn = sqlite3.connect(Path(tmp) / f"{side}-{run}.db", isolation_level=None)
                conn.execute("PRAGMA synchronous = FULL")  # as SqliteStore
                start = time.perf_counter()
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO messages (id, content, status, scheduled_at, "
                             "created_at, updated_at, version, uid) VALUES (1, 'b', "
                             "'scheduled', 1, 1, 1, 1, 'bare-1')")
                conn.executemany("INSERT INTO deliveries (message_id, recipient, status, "
                                 "attempts, next_attempt_at) VALUES (1, ?, 'pending', 0, 1)",
                                 ((n,) for n in numbers))
                conn.execute("COMMIT")
                bare.append(args.recipients / (time.perf_counter() - start))
                conn.close()
            print(f"run {run + 1}: ours {ours[-1]:,.0f} rows/s  bare {bare[-1]:,.0f} rows/s")
    ours_rate, bare_rate = statistics.median(ours), statistics.median(bare)
    print(f"{args.recipients:,} recipients in one submit, median of {args.runs}")
    print(f"ours   {ours_rate:>10,.0f} rows/s  ({args.recipients / ours_rate:.3f} s per submit)")
    print(f"bare   {bare_rate:>10,.0f} rows/s")
    print(f"ratio  {ours_rate / bare_rate:>10.2f}")
    print(f"validation of the numbers: {statistics.median(validate):.3f} s "
          f"({args.recipients / statistics.median(validate):,.0f} numbers/s), not included")
    return 0


if __name__ == "__main__":
    sys.exit(main())
