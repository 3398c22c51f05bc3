"""Claim and settle cost on PostgreSQL with 10,000,000 finished deliveries in the store vs none.

What is measured, alternating which side goes first: a live broadcast of M recipients
(``sms_sim submit --recipients-file``) is drained by one ``PostgresStore`` in a child
process (of the checkout measured), a loop of ``claim(owner, B, lease 60 s, now)`` and
``settle`` of the whole batch as sent, each pair timed. Rate = M / the loop's seconds; the
pairs' p50 and p99 in ms beside it.

* finished: a database that already holds F finished deliveries (``--finished``, default
  10,000,000), F / ``--per-message`` completed messages of ``--per-message`` sent
  deliveries each, loaded once straight into the store's tables by ``INSERT ... SELECT``
  over ``generate_series`` (the columns a finished message and delivery have: completed,
  served, sent, one attempt), then ``VACUUM (ANALYZE)`` as autovacuum would have left them.
  Each run adds its own drained broadcast to them (printed).
* none: a fresh database per run holding only the live broadcast.

The statistics are left as they are, as on a live system: on the finished side they come
from the ``VACUUM (ANALYZE)`` after the load (nothing pending), and a live broadcast below
autovacuum's analyze threshold (2 % of the table) never changes them. ``--analyze-live``
runs ``ANALYZE`` after each live submit on both sides instead, to tell a plan chosen on
stale statistics from a cost that grows with the table.

``--baseline DIR`` runs both sides again with the code of another checkout (a ``git
worktree`` of an older commit), with finished rows of its own (loaded the same way), and
prints old vs new.

Target (issue 13): finished / none >= 0.8 (finished work does not slow the hot path).

Command (from the repo root): python3 bench/pg_claim_cost.py [--finished 10000000]
[--per-message 1000] [--live 100000] [--batch 1000] [--runs 3] [--analyze-live]
[--baseline DIR] [--dsn postgresql://...] [--quick]
(loading 10M rows takes a few minutes and about 2.5 GB of disk, for each checkout)
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from _common import git_commit, percentile, print_header, print_runs, print_target, rotate
from _pg import (
    ROOT,
    WORKER_TIMEOUT_S,
    Scratch,
    add_baseline_option,
    add_dsn_option,
    check_baseline,
    checkpoint,
    connect,
    scratch,
    server,
    server_version,
    shown_command_line,
    sms_sim,
    submit_broadcast,
    write_numbers,
)

TARGET_RATIO = 0.8
LEASE_S = 60.0
LOAD_ROWS = 1_000_000  # finished deliveries per INSERT statement
FINISHED_AGE_S = 40 * 86_400.0

_MESSAGES_SQL = """
INSERT INTO messages (tenant, content, status, scheduled_at, created_at, updated_at, version,
    dispatch_started_at, completed_at, priority, uid, served_seq, served_at)
SELECT 'default', 'finished ' || g, 'completed', %(at)s, %(at)s, %(at)s, 1, %(at)s, %(at)s, 0,
    md5('finished ' || g), g, %(at)s
FROM generate_series(1, %(count)s) AS g
"""
_DELIVERIES_SQL = """
INSERT INTO deliveries (message_id, recipient, status, attempts, next_attempt_at, leased_at,
    sent_at)
SELECT m.id, '800-' || lpad((g / 10000)::text, 3, '0') || '-' || lpad((g %% 10000)::text, 4, '0'),
    'sent', 1, %(at)s, %(at)s, %(at)s
FROM messages AS m CROSS JOIN generate_series(0, %(per)s - 1) AS g
WHERE m.id BETWEEN %(first)s AND %(last)s
ORDER BY m.id, g
"""


# The drain loop, run by the measured checkout's code (its directory first on sys.path).
# ``url live batch lease_s``; prints {"rate": deliveries/s, "pairs_s": [...]}.
_DRAIN_CHILD = """\
import json, sys, time
sys.path.insert(0, ".")
from sms_sim.dispatch.contract import SettleKind, Settlement
from sms_sim.dispatch.stores import open_store
url, live, batch, lease_s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
store = open_store(url)
pairs, done = [], 0
try:
    start = time.perf_counter()
    while True:
        began = time.perf_counter()
        claims = store.claim("bench", batch, lease_s, time.time())
        if not claims:
            break
        result = store.settle("bench", [
            Settlement(delivery_id=c.delivery_id, attempts=c.attempts, kind=SettleKind.SENT)
            for c in claims], time.time())
        pairs.append(time.perf_counter() - began)
        done += result.accepted
    elapsed_s = time.perf_counter() - start
finally:
    store.close()
if done != live:
    raise SystemExit(f"settled {done} of {live}")
print(json.dumps({"rate": live / elapsed_s, "pairs_s": pairs}))
"""


def load_finished(url: str, finished: int, per_message: int,
                  root: Path = ROOT) -> tuple[int, float]:
    """The store's schema (of the checkout ``root``) and at least ``finished`` sent
    deliveries (whole messages); how many, and the seconds it took."""
    start = time.perf_counter()
    sms_sim("migrate", "--db", url, root=root)
    count = -(-finished // per_message)
    at = time.time() - FINISHED_AGE_S
    with connect(url) as conn:
        conn.execute(_MESSAGES_SQL, {"at": at, "count": count})
        step = max(1, LOAD_ROWS // per_message)
        for first in range(1, count + 1, step):
            conn.execute(_DELIVERIES_SQL, {"at": at, "per": per_message, "first": first,
                                           "last": min(count, first + step - 1)})
        conn.execute("VACUUM (ANALYZE) messages")
        conn.execute("VACUUM (ANALYZE) deliveries")
    return count * per_message, time.perf_counter() - start


@dataclass(frozen=True, slots=True)
class Cost:
    """One drain of the live broadcast: deliveries/s and each claim+settle pair (seconds)."""

    rate: float
    pairs_s: list[float]


def drain(url: str, live: int, batch: int, root: Path = ROOT) -> Cost:
    """The drain loop in a child process running the code of the checkout ``root``."""
    done = subprocess.run([sys.executable, "-c", _DRAIN_CHILD, url, str(live), str(batch),
                           str(LEASE_S)], capture_output=True, text=True, cwd=root,
                          timeout=WORKER_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"drain exited {done.returncode}: {done.stderr.strip()[-500:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return Cost(rate=float(report["rate"]), pairs_s=[float(s) for s in report["pairs_s"]])


def _submit_live(url: str, numbers: Path, args: argparse.Namespace,
                 root: Path = ROOT) -> None:
    submit_broadcast(url, numbers, content="live", root=root)
    if args.analyze_live:
        with connect(url) as conn:
            conn.execute("ANALYZE deliveries")
            conn.execute("ANALYZE messages")
    checkpoint(url)


def side_none(dbs: Scratch, numbers: Path, args: argparse.Namespace,
              root: Path = ROOT) -> Cost:
    url = dbs.database()
    try:
        _submit_live(url, numbers, args, root)
        return drain(url, args.live, args.batch, root)
    finally:
        dbs.drop(url)


def side_finished(url: str, numbers: Path, args: argparse.Namespace,
                  root: Path = ROOT) -> Cost:
    _submit_live(url, numbers, args, root)
    return drain(url, args.live, args.batch, root)


def _report(label: str, costs: Sequence[Cost]) -> float:
    rate = print_runs(label, [c.rate for c in costs], ",.0f")
    pairs = [s * 1000 for c in costs for s in c.pairs_s]
    print(f"    claim+settle of one batch: p50 {percentile(pairs, 0.5):.1f} ms, p99 "
          f"{percentile(pairs, 0.99):.1f} ms ({len(pairs):,} batches)")
    return rate


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="runs per side (default 3)")
    parser.add_argument("--finished", type=int, default=10_000_000,
                        help="F finished deliveries (default 10,000,000)")
    parser.add_argument("--per-message", type=int, default=1000,
                        help="finished deliveries per finished message (default 1000)")
    parser.add_argument("--live", type=int, default=100_000,
                        help="M recipients of the live broadcast (default 100,000)")
    parser.add_argument("--batch", type=int, default=1000, help="B (default 1000)")
    parser.add_argument("--analyze-live", action="store_true",
                        help="ANALYZE after each live submit (default: statistics as they are)")
    add_baseline_option(parser)
    add_dsn_option(parser)
    parser.add_argument("--quick", action="store_true",
                        help="--finished 200,000, --live 5,000, 1 run")
    args = parser.parse_args(argv)
    if args.quick:
        args.finished, args.live, args.runs = 200_000, 5_000, 1
    if min(args.runs, args.finished, args.per_message, args.live, args.batch) < 1:
        parser.error("--runs, --finished, --per-message, --live and --batch must be >= 1")
    if args.per_message > 10**7:
        parser.error(f"--per-message must be <= 10,000,000 (got {args.per_message})")
    check_baseline(parser, args.baseline)
    print(__doc__.splitlines()[0] if __doc__ else "")
    print(f"command: {shown_command_line()}")
    with server(args.dsn) as admin, scratch(admin) as dbs, \
            tempfile.TemporaryDirectory(prefix="sms_sim-pg-claim-cost-") as tmp_name:
        print(f"PostgreSQL {server_version(admin)}; live broadcast {args.live:,} recipients, "
              f"batch {args.batch}, one claimer; statistics "
              f"{'analyzed after each live submit' if args.analyze_live else 'as they are'}")
        numbers = write_numbers(Path(tmp_name) / "numbers.txt", 600, args.live)
        roots = {"": ROOT}
        if args.baseline is not None:
            print(f"ours: {git_commit(ROOT)}; baseline: {args.baseline} at "
                  f"{git_commit(args.baseline)}")
            roots["baseline "] = args.baseline
        sides: dict[str, Callable[[], Cost]] = {}
        for prefix, root in roots.items():
            loaded = dbs.database()
            rows, seconds = load_finished(loaded, args.finished, args.per_message, root)
            print(f"{prefix}loaded {rows:,} finished deliveries in "
                  f"{rows // args.per_message:,} messages in {seconds:.1f} s (each run's "
                  f"drained broadcast adds {args.live:,} more)")
            sides[f"{prefix}none"] = functools.partial(side_none, dbs, numbers, args, root)
            sides[f"{prefix}finished"] = functools.partial(side_finished, loaded, numbers,
                                                           args, root)
        results = rotate(sides, args.runs)
    print_header("claim+settle deliveries/s", args.runs)
    none = _report("no finished deliveries", results["none"])
    finished = _report(f"{args.finished:,} finished deliveries", results["finished"])
    ratio = finished / none
    print(f"  finished/none: {ratio:.2f}")
    if args.baseline is not None:
        base_none = _report("baseline: no finished deliveries", results["baseline none"])
        base_finished = _report(f"baseline: {args.finished:,} finished deliveries",
                                results["baseline finished"])
        print(f"  baseline finished/none: {base_finished / base_none:.2f}; ours/baseline: "
              f"none {none / base_none:.2f}, finished {finished / base_finished:.2f}")
    print_target(f"target finished/none >= {TARGET_RATIO:g}", ratio >= TARGET_RATIO,
                 f"{ratio:.2f}")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
