"""Drain throughput on PostgreSQL while an open transaction holds back vacuum, against none.

What is measured, alternating which side goes first, each side in a fresh database with a
``CHECKPOINT`` before it: one message to N recipients drained by W processes of ``python -m
sms_sim worker --db URL --exit-when-idle`` (4 zero-latency senders each, ``--batch`` B), as
in ``pg_drain.py``; rate = N / (last settle - first claim) from the table.

* held: just before the workers start, a second connection runs ``BEGIN; SELECT
  txid_current();`` and stays idle in that transaction for ``--hold`` seconds (default 180,
  the issue's 3 minutes) or until the drain has finished, whichever comes first. Its xid
  holds the database's xmin horizon, so no row version the drain leaves behind (every
  claim and settle writes one) can be vacuumed away meanwhile: indexes and the heap keep
  the dead versions, and every scan walks past them. The share of the deliveries settled
  while it was open is printed; below 100 % the hold was shorter than the drain.
* free: the same without it (autovacuum visits ``deliveries`` at 1 % dead rows).

The dead tuples the statistics count at the end are printed beside each rate. ``--bare``
adds the bare per-row ``FOR UPDATE SKIP LOCKED`` loop of ``pg_drain.py`` held and free,
for information: the plain queue the issue quotes as losing 35 %.

``--baseline DIR`` adds the same two sides run with the code of another checkout (a ``git
worktree`` of an older commit): old vs new in one run.

Target (issue 13): held / free >= 0.9 (throughput drops by 10 % at most).

Command (from the repo root): python3 bench/pg_vacuum.py [--recipients 1000000] [--hold 180]
[--workers 2] [--batch 1000] [--runs 3] [--bare] [--baseline DIR] [--dsn postgresql://...]
[--quick]
(without --dsn a throwaway server is started with scripts/pg_server.py and stopped after)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from _common import git_commit, print_header, print_runs, print_target, rotate
from _pg import (
    ROOT,
    Scratch,
    add_baseline_option,
    add_dsn_option,
    check_baseline,
    checkpoint,
    connect,
    dead_tuples,
    drain_span,
    run_bare,
    run_workers,
    scratch,
    server,
    server_version,
    shown_command_line,
    submit_broadcast,
    write_numbers,
)

TARGET_RATIO = 0.9


class Holder:
    """A transaction with an xid, open on its own connection until ``release`` or ``hold_s``
    has passed (a thread ends it then, so a hold shorter than the drain really ends)."""

    def __init__(self, url: str, hold_s: float) -> None:
        self._conn = connect(url)
        self._conn.execute("BEGIN")
        row = self._conn.execute("SELECT txid_current()").fetchone()
        self.xid = 0 if row is None else int(row[0])
        self.opened_at = time.time()
        self.released_at = float("inf")
        self._hold_s = hold_s
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._wait, name="holder")
        self._thread.start()

    def _wait(self) -> None:
        try:
            self._release.wait(self._hold_s)
            self._conn.execute("ROLLBACK")
            self.released_at = time.time()
        finally:
            self._conn.close()

    def release(self) -> None:
        self._release.set()
        self._thread.join()


@dataclass(frozen=True, slots=True)
class Drain:
    """One side's run: its rate, dead tuples at the end, and the share sent under the hold."""

    rate: float
    dead: int
    held_share: float


def _drain(dbs: Scratch, numbers: Path, args: argparse.Namespace, tmp: Path, *, held: bool,
           bare: bool, root: Path = ROOT) -> Drain:
    url = dbs.database()
    try:
        submit_broadcast(url, numbers, root=root)
        checkpoint(url)
        holder = Holder(url, args.hold) if held else None
        try:
            if bare:
                sent = run_bare(url, args.workers, args.batch)
            else:
                sent = run_workers(url, args.workers, batch=args.batch, log_dir=tmp,
                                   root=root).sent
        finally:
            if holder is not None:
                holder.release()
        span = drain_span(url)
        dead = dead_tuples(url)
        share = 0.0
        if holder is not None:
            with connect(url) as conn:
                row = conn.execute("SELECT count(*) FROM deliveries WHERE status = 'sent' "
                                   "AND sent_at <= %s", (holder.released_at,)).fetchone()
            share = (0 if row is None else int(row[0])) / args.recipients
    finally:
        dbs.drop(url)
    if sent != args.recipients or span.sent != args.recipients:
        raise RuntimeError(f"sent {sent}, the table has {span.sent} sent, of {args.recipients}")
    return Drain(rate=span.rate, dead=dead, held_share=share)


def _report(label: str, free: Sequence[Drain], held: Sequence[Drain]) -> float:
    """Print both sides' lines and their ratio; returns the ratio of the medians."""
    free_rate = print_runs(f"{label}, free", [d.rate for d in free], ",.0f")
    held_rate = print_runs(f"{label}, held", [d.rate for d in held], ",.0f")
    print(f"    dead tuples at the end: free {', '.join(f'{d.dead:,}' for d in free)}; held "
          f"{', '.join(f'{d.dead:,}' for d in held)}; settled under the hold: "
          f"{', '.join(f'{d.held_share:.0%}' for d in held)}")
    ratio = held_rate / free_rate
    print(f"    held/free: {ratio:.2f} (a drop of {1 - ratio:.0%})")
    return ratio


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="runs per side (default 3)")
    parser.add_argument("--recipients", type=int, default=1_000_000, help="N (default 1,000,000)")
    parser.add_argument("--hold", type=float, default=180.0, metavar="SECONDS",
                        help="the longest the transaction stays open (default 180)")
    parser.add_argument("--workers", type=int, default=2, help="W processes (default 2)")
    parser.add_argument("--batch", type=int, default=1000, help="B (default 1000)")
    parser.add_argument("--bare", action="store_true",
                        help="also the bare SKIP LOCKED loop, held and free")
    add_baseline_option(parser)
    add_dsn_option(parser)
    parser.add_argument("--quick", action="store_true",
                        help="20,000 recipients, --hold 30, 1 run")
    args = parser.parse_args(argv)
    if args.quick:
        args.recipients, args.hold, args.runs = 20_000, 30.0, 1
    if min(args.runs, args.recipients, args.workers, args.batch) < 1 or args.hold <= 0:
        parser.error("--runs, --recipients, --workers, --batch and --hold must be positive")
    check_baseline(parser, args.baseline)
    print(__doc__.splitlines()[0] if __doc__ else "")
    print(f"command: {shown_command_line()}")
    with server(args.dsn) as admin, scratch(admin) as dbs, \
            tempfile.TemporaryDirectory(prefix="sms_sim-pg-vacuum-") as tmp_name:
        tmp = Path(tmp_name)
        print(f"PostgreSQL {server_version(admin)}; {args.recipients:,} recipients, "
              f"{args.workers} workers, batch {args.batch}; hold up to {args.hold:g} s")
        numbers = write_numbers(tmp / "numbers.txt", 500, args.recipients)

        def side(held: bool, bare: bool, root: Path = ROOT) -> Callable[[], Drain]:
            return lambda: _drain(dbs, numbers, args, tmp, held=held, bare=bare, root=root)

        sides = {"free": side(False, False), "held": side(True, False)}
        if args.baseline is not None:
            print(f"ours: {git_commit(ROOT)}; baseline: {args.baseline} at "
                  f"{git_commit(args.baseline)}")
            sides |= {"baseline free": side(False, False, args.baseline),
                      "baseline held": side(True, False, args.baseline)}
        if args.bare:
            sides |= {"bare free": side(False, True), "bare held": side(True, True)}
        results = rotate(sides, args.runs)
    print_header("drain deliveries/s (first claim to last settle)", args.runs)
    ratio = _report("ours", results["free"], results["held"])
    if args.baseline is not None:
        _report("baseline (the other checkout)", results["baseline free"],
                results["baseline held"])
    if args.bare:
        _report("bare SKIP LOCKED loop (for information)", results["bare free"],
                results["bare held"])
    print_target(f"target held/free >= {TARGET_RATIO:g}", ratio >= TARGET_RATIO, f"{ratio:.2f}")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
