"""Crash soak: the CI crash test, larger. Worker processes on one SQLite file are SIGKILLed
at random moments and restarted, and SIGSTOPped for 1.5 leases, while they dispatch.

Prints the issue's figures: deliveries, kills, pauses, lost, ledger double-sends (provider
calls beyond the first per message and recipient), repeats absorbed by keys, effective
duplicates (must be 0), stale completions refused (summed over workers that exited
cleanly; killed ones cannot report), and the longest gap between two provider calls for one
recipient against the lease. ``--no-fencing`` runs the known-broken mode for contrast.

Then the same for two setups of issue 11, each judged on its own:

* mixed leases: every other worker runs with ``--lease 300`` (``--long-lease``) beside
  short-lease ones; only the short-lease workers are killed and paused. A long-lease
  worker's report refused, or a send it skipped, means a live claim of its was taken
  (must be 0; its lease cannot run out during the run).
* two databases, one ledger: two new files with the same message ids and numbers, workers
  on each, one provider. Every delivery of both must reach the ledger under its own key
  (recipients delivered = deliveries sent in both; lost 0).

``--db postgresql://...`` runs every scenario on PostgreSQL instead (issue 13): each gets
fresh schemas in that database (one, or two for two-databases; ``search_path`` through the
URL's ``options``), dropped at the end, and the figures are the same. The integrity line
then reads "ok": PostgreSQL has no file check of its own.

Command (from the repo root): python3 bench/dispatch_soak.py [--messages 10]
[--recipients 2000] [--workers 4] [--chaos 20] [--lease 1.0] [--long-lease 300] [--seed 1]
[--only classic|mixed|two-databases] [--no-fencing] [--db postgresql://...]
(about 2 minutes with the defaults)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.chaos_harness import ChaosResult, run_chaos  # noqa: E402

SCENARIOS = ("classic", "mixed", "two-databases")


@contextlib.contextmanager
def _schemas(db: str | None, count: int, name: str) -> Iterator[list[str]]:
    """``count`` URLs of fresh schemas in the PostgreSQL database ``db``, dropped on exit;
    none for SQLite (``db`` None: the harness makes its own files)."""
    if db is None:
        yield []
        return
    from _pg import connect, derive_url  # psycopg: only the PostgreSQL soak needs it

    made = [f"soak_{os.getpid()}_{name.replace('-', '_')}_{d + 1}" for d in range(count)]
    with connect(db) as conn:
        try:
            for schema in made:
                conn.execute(f"CREATE SCHEMA {schema}")
            yield [derive_url(db, options=f"-csearch_path={schema}") for schema in made]
        finally:
            for schema in made:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def run(name: str, args: argparse.Namespace) -> ChaosResult:
    databases = 2 if name == "two-databases" else 1
    with tempfile.TemporaryDirectory() as tmp, _schemas(args.db, databases, name) as urls:
        return run_chaos(Path(tmp), messages=args.messages, recipients=args.recipients,
                         workers=args.workers, lease_s=args.lease, seed=args.seed,
                         fencing=not args.no_fencing, chaos_for_s=args.chaos,
                         deadline_s=args.chaos + 120.0,
                         long_lease_s=args.long_lease if name == "mixed" else None,
                         databases=databases, urls=urls)


def report(name: str, result: ChaosResult, args: argparse.Namespace) -> bool:
    """Print one scenario's figures and verdict; True if it passed."""
    ledger = result.ledger
    if name == "mixed":
        print(f"\nmixed leases: {args.workers} workers, every other one with lease "
              f"{args.long_lease:g} s and never killed or paused")
    elif name == "two-databases":
        print(f"\ntwo databases, one ledger: {args.workers} workers on each, the same message "
              "ids and numbers in both")
    print(f"fencing and keys: {'OFF (negative control)' if args.no_fencing else 'on'}")
    print(f"deliveries                 {result.deliveries:,} "
          f"({dict(sorted(result.statuses.items()))})")
    print(f"kills                      {result.kills} (SIGKILL, each followed by a restart)")
    print(f"pauses                     {result.pauses} (SIGSTOP for {1.5 * args.lease:.1f} s)")
    print(f"lost                       {result.lost}")
    print(f"ledger double-sends        {result.repeats}")
    print(f"repeats absorbed by keys   {ledger.absorbed}")
    print(f"effective duplicates       {ledger.effective_duplicates}")
    print(f"stale completions refused  {result.refused} "
          f"(+{result.skipped_expired} sends skipped on an expired lease)")
    print(f"max redelivery delay       {ledger.max_resend_gap_s:.2f} s vs lease "
          f"{args.lease:.2f} s")
    print(f"integrity check            {result.integrity}; finished: {result.finished}")
    ok = result.finished and result.lost == 0 and result.integrity == "ok"
    if name == "mixed":
        print(f"live claims taken          {result.long_refused} long-lease reports refused, "
              f"{result.long_skipped_expired} long-lease sends skipped (must be 0)")
        ok = ok and result.long_refused == 0 and result.long_skipped_expired == 0
    elif name == "two-databases":
        sent = result.statuses.get("sent", 0)
        print(f"recipients delivered       {ledger.recipients_delivered:,} of {sent:,} sent "
              "in both databases")
        ok = ok and ledger.recipients_delivered == sent
    if args.no_fencing:  # the check must be able to fail: duplicates are expected here
        ok = ok and ledger.effective_duplicates > 0
        print("PASS (duplicates detected, as expected without fencing)" if ok else "FAIL")
    else:
        ok = ok and ledger.effective_duplicates == 0
        print("PASS (zero effective duplicates, nothing lost)" if ok else "FAIL")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--recipients", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4, help="per database (default 4)")
    parser.add_argument("--chaos", type=float, default=20.0, help="seconds of kills and pauses")
    parser.add_argument("--lease", type=float, default=1.0)
    parser.add_argument("--long-lease", type=float, default=300.0,
                        help="the mixed scenario's long lease (default 300)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=SCENARIOS, help="run one scenario (default: all)")
    parser.add_argument("--no-fencing", action="store_true")
    parser.add_argument("--db", metavar="URL",
                        help="run on PostgreSQL: fresh schemas in this database "
                             "(postgresql://...; default: new SQLite files)")
    args = parser.parse_args(argv)
    if args.db is not None and not args.db.startswith(("postgresql://", "postgres://")):
        parser.error(f"--db must be a postgresql:// URL (got {args.db!r})")
    if args.db is not None:
        from _pg import shown

        print(f"PostgreSQL: {shown(args.db)}")
    outcomes = [report(name, run(name, args), args)
                for name in (SCENARIOS if args.only is None else (args.only,))]
    return 0 if all(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
