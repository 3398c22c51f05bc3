"""Claim cost when many small messages are due at once, on SQLite and PostgreSQL.

A campaign of many 1-recipient messages is not one broadcast: every claim reads each due
message (its order, class and ready count) and splits the batch over all of them
(``stores.fairness``; on PostgreSQL inside the one statement that reads them), though at
most a batch of them gets anything. This prints how long that takes.

What is measured, in a child process running the store code of the checkout measured (so
``--baseline`` compares old and new), rotating which side goes first: N messages of one
recipient each, spread over T tenants, all due, submitted through ``open_store(...).submit``
(untimed), then C claims of B deliveries in a row, each timed; the median claim in ms per
side and run, and the median of those over the runs. Every claim must return B deliveries.

* sqlite: a fresh file in a temporary directory per run;
* postgres: a fresh database per run on the server (``--dsn``, or a throwaway one started
  with ``scripts/pg_server.py``); ``--no-postgres`` leaves it out.

No target: the figure the "fairness in one statement" work (issue 13) moves. Every claim
still reads all N due messages, so it grows with N.

Command (from the repo root): python3 bench/claim_many_due.py [--messages 10000]
[--tenants 3] [--batch 1000] [--claims 8] [--runs 3] [--baseline DIR] [--dsn URL]
[--no-postgres] [--quick]   (--quick: 2,000 messages, claims of 200, 1 run)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from _common import git_commit, print_header, print_runs, rotate
from _pg import (
    ROOT,
    WORKER_TIMEOUT_S,
    Scratch,
    add_baseline_option,
    add_dsn_option,
    check_baseline,
    scratch,
    server,
    server_version,
    shown_command_line,
)

# argv: root, store URL, messages, tenants, batch, claims. Prints {"each_ms": [...]}.
_CHILD = """\
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
root, url = sys.argv[1], sys.argv[2]
messages, tenants, batch, claims = (int(a) for a in sys.argv[3:7])
sys.path.insert(0, root)
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.stores import open_store
store = open_store(url, create=True)
t0 = time.time()
def submit(i):
    store.submit(NewMessage.validated(
        content=f"m{i}", tenant=f"t{i % tenants}",
        recipients=[f"900-{i // 10000:03d}-{i % 10000:04d}"]), t0)
threads = 8 if url.startswith("postgresql") else 1
with ThreadPoolExecutor(threads) as pool:
    list(pool.map(submit, range(messages)))
each = []
for k in range(claims):
    began = time.perf_counter()
    got = store.claim("bench", batch, 600.0, t0 + 1 + k * 0.001)
    each.append((time.perf_counter() - began) * 1000)
    if len(got) != batch:
        raise SystemExit(f"claim {k} returned {len(got)} of {batch}")
store.close()
print(json.dumps({"each_ms": each}))
"""


def claim_ms(url: str, args: argparse.Namespace, root: Path) -> float:
    """The median claim (ms) of one run against ``url`` with the code of ``root``."""
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(root), url, str(args.messages), str(args.tenants),
         str(args.batch), str(args.claims)],
        capture_output=True, text=True, cwd=ROOT, timeout=WORKER_TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError(f"child exited {result.returncode}: {result.stderr.strip()[-500:]}")
    each: list[float] = json.loads(result.stdout.strip().splitlines()[-1])["each_ms"]
    return statistics.median(each)


def on_sqlite(tmp: Path, args: argparse.Namespace, root: Path) -> Callable[[], float]:
    counter = iter(range(10**9))

    def run() -> float:
        return claim_ms(str(tmp / f"many-{next(counter)}.db"), args, root)
    return run


def on_postgres(dbs: Scratch, args: argparse.Namespace, root: Path) -> Callable[[], float]:
    def run() -> float:
        url = dbs.database()
        try:
            return claim_ms(url, args, root)
        finally:
            dbs.drop(url)
    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=10_000, help="N (default 10,000)")
    parser.add_argument("--tenants", type=int, default=3, help="T (default 3)")
    parser.add_argument("--batch", type=int, default=1000, help="B (default 1000)")
    parser.add_argument("--claims", type=int, default=8, help="C per run (default 8)")
    parser.add_argument("--runs", type=int, default=3, help="runs per side (default 3)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    add_baseline_option(parser)
    add_dsn_option(parser)
    parser.add_argument("--quick", action="store_true",
                        help="2,000 messages, claims of 200, 1 run")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.batch, args.runs = 2_000, 200, 1
    if min(args.messages, args.tenants, args.batch, args.claims, args.runs) < 1:
        parser.error("--messages, --tenants, --batch, --claims and --runs must be >= 1")
    if args.messages < args.batch * args.claims:
        parser.error("--messages must be at least --batch x --claims (every claim full)")
    check_baseline(parser, args.baseline)
    print(__doc__.splitlines()[0] if __doc__ else "")
    print(f"command: {shown_command_line()}")
    roots = {"ours": ROOT}
    if args.baseline is not None:
        roots["baseline"] = args.baseline
        print(f"ours: {git_commit(ROOT)}; baseline: {args.baseline} at "
              f"{git_commit(args.baseline)}")
    with tempfile.TemporaryDirectory(prefix="sms_sim-many-due-") as tmp_name:
        tmp = Path(tmp_name)
        sides = {f"{name}, sqlite": on_sqlite(tmp, args, root) for name, root in roots.items()}
        if args.no_postgres:
            results = rotate(sides, args.runs)
        else:
            with server(args.dsn) as admin, scratch(admin) as dbs:
                print(f"PostgreSQL {server_version(admin)}")
                sides.update({f"{name}, postgres": on_postgres(dbs, args, root)
                              for name, root in roots.items()})
                results = rotate(sides, args.runs)
    print(f"{args.messages:,} due messages of 1 recipient over {args.tenants} tenants; "
          f"{args.claims} claims of {args.batch} a run")
    print_header("claim ms (the median claim of each run)", args.runs)
    for name, values in results.items():
        print_runs(name, values, ",.1f")
    return 0


if __name__ == "__main__":
    sys.exit(main())
