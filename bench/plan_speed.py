"""Planning speed: wall time of a 20-count, 10-replication capacity plan on 100,000 messages.

What is measured: ``sms_sim.sim.plan.plan`` with a burst of N = 100,000 messages (seed 1),
identical senders ``SenderConfig(0.08, 0.02, 0.03)``, deadline 600 s, 10 replications,
``sender_counts=list(range(6, 26))`` (20 counts) and ``jobs = os.cpu_count()``. That is 200
virtual-time runs of 100,000 messages each, plus whatever the bisection for the minimum
visits outside that range. Wall time is ``time.perf_counter`` around the call, including
starting and stopping the process pool; with ``--runs`` > 1 the median is reported.

Why: a plan is the question users actually ask ("how many senders do I need?"); it has to
come back while they wait.

Target: under 60 s.

Command (from the repo root): python3 bench/plan_speed.py [--runs 1] [--quick]
(``--quick`` uses N = 20,000.)
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import parse_args, print_header, print_runs, print_target  # noqa: E402

import sms_sim  # noqa: E402
from sms_sim.sim.plan import PlanResult, plan  # noqa: E402

SEED = 1
SENDER = sms_sim.SenderConfig(0.08, 0.02, 0.03)
DEADLINE_S = 600.0
REPLICATIONS = 10
SENDER_COUNTS = list(range(6, 26))
TARGET_S = 60.0


def _time_plan(num_messages: int, jobs: int) -> tuple[float, PlanResult]:
    base = sms_sim.SimulationConfig(num_messages=num_messages, seed=SEED)
    started = time.perf_counter()
    result = plan(base, SENDER, deadline_s=DEADLINE_S, replications=REPLICATIONS,
                  sender_counts=SENDER_COUNTS, jobs=jobs)
    elapsed_s = time.perf_counter() - started
    if len(result.rows) != len(SENDER_COUNTS):
        raise RuntimeError(f"plan returned {len(result.rows)} rows, not {len(SENDER_COUNTS)}")
    return elapsed_s, result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv, runs=1, runs_help="repetitions", quick_help="N = 20000")
    num_messages = 20_000 if args.quick else 100_000
    jobs = os.cpu_count() or 1

    times: list[float] = []
    result: PlanResult | None = None
    for _ in range(args.runs):
        elapsed_s, result = _time_plan(num_messages, jobs)
        times.append(elapsed_s)
    assert result is not None
    print_header(f"plan speed: N={num_messages}, {len(SENDER_COUNTS)} sender counts "
                 f"({SENDER_COUNTS[0]}-{SENDER_COUNTS[-1]}) x {REPLICATIONS} replications, "
                 f"jobs={jobs}", args.runs)
    seconds = print_runs("wall s", times, ".1f")
    print(f"  min senders meeting {DEADLINE_S:g} s: {result.min_senders}")
    print_target(f"target wall < {TARGET_S:g} s", seconds < TARGET_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
