"""Crash soak: the CI crash test, larger. Worker processes on one SQLite file are SIGKILLed
at random moments and restarted, and SIGSTOPped for 1.5 leases, while they dispatch.

Prints the issue's figures: deliveries, kills, pauses, lost, ledger double-sends (provider
calls beyond the first per message and recipient), repeats absorbed by keys, effective
duplicates (must be 0), stale completions refused (summed over workers that exited
cleanly; killed ones cannot report), and the longest gap between two provider calls for one
recipient against the lease. ``--no-fencing`` runs the known-broken mode for contrast.

Command (from the repo root): python3 bench/dispatch_soak.py [--messages 10]
[--recipients 2000] [--workers 4] [--chaos 20] [--lease 1.0] [--seed 1] [--no-fencing]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.chaos_harness import run_chaos  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--recipients", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--chaos", type=float, default=20.0, help="seconds of kills and pauses")
    parser.add_argument("--lease", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-fencing", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_chaos(Path(tmp), messages=args.messages, recipients=args.recipients,
                           workers=args.workers, lease_s=args.lease, seed=args.seed,
                           fencing=not args.no_fencing, chaos_for_s=args.chaos,
                           deadline_s=args.chaos + 120.0)
    ledger = result.ledger
    double_sends = ledger.attempts - ledger.recipients_delivered
    print(f"fencing and keys: {'OFF (negative control)' if args.no_fencing else 'on'}")
    print(f"deliveries                 {result.deliveries:,} "
          f"({dict(sorted(result.statuses.items()))})")
    print(f"kills                      {result.kills} (SIGKILL, each followed by a restart)")
    print(f"pauses                     {result.pauses} (SIGSTOP for {1.5 * args.lease:.1f} s)")
    print(f"lost                       {result.lost}")
    print(f"ledger double-sends        {double_sends}")
    print(f"repeats absorbed by keys   {ledger.absorbed}")
    print(f"effective duplicates       {ledger.effective_duplicates}")
    print(f"stale completions refused  {result.refused} "
          f"(+{result.skipped_expired} sends skipped on an expired lease)")
    print(f"max redelivery delay       {ledger.max_resend_gap_s:.2f} s vs lease "
          f"{args.lease:.2f} s")
    print(f"integrity check            {result.integrity}; finished: {result.finished}")
    ok = result.finished and result.lost == 0 and result.integrity == "ok"
    if args.no_fencing:  # the check must be able to fail: duplicates are expected here
        ok = ok and ledger.effective_duplicates > 0
        print("PASS (duplicates detected, as expected without fencing)" if ok else "FAIL")
    else:
        ok = ok and ledger.effective_duplicates == 0
        print("PASS (zero effective duplicates, nothing lost)" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
