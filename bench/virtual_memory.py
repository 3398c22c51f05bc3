"""Virtual-time memory: peak RSS of ``simulate`` on 1,000,000 and on 10,000,000 messages.

What is measured: peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, KiB on Linux) of
fresh child interpreters (``python -c``, the same interpreter as this script). Every child
imports ``sms_sim`` (and ``sms_sim.sim.virtual.run``) and builds its config: a burst of N
messages on 4 senders ``SenderConfig(0, 0, 0)`` (zero send time, no failures), seed 1. Then:

* baseline: nothing else (N = 1,000,000 in the config, never run);
* small: ``simulate(config, output=None)`` with N = 1,000,000;
* large: the same with N = 10,000,000.

Each child prints its peak RSS at the end. Figures are medians over the runs; the growth of
a workload is its median minus the median baseline. The order of the children rotates from
run to run.

Why: the virtual-time loop keeps at most one event per sender, a burst is one batch and the
times to send are kept only up to 2**20 of them (8 MiB; a run with more is replayed to find
its exact percentiles, see ``sim/virtual/percentiles.py``), so ten times the messages
should cost about ten times the time and no more memory. Both sizes therefore sit about
8 MiB over the baseline (the 1M run keeps its million times).

Target: |large growth - small growth| <= 5 MiB.

Command (from the repo root): python3 bench/virtual_memory.py [--runs 3] [--quick]
(``--quick`` uses N = 100,000 and 1,000,000.)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import partial

from _common import (
    child_code,
    parse_args,
    peak_rss_mib,
    print_header,
    print_runs,
    print_target,
    rotate,
)

# The parent never imports sms_sim; each child puts the repo root on its own path.
SENDERS = 4
SEED = 1
TARGET_DIFFERENCE_MIB = 5.0

_IMPORTS = "import sms_sim\nfrom sms_sim.sim.virtual.run import simulate"
_WORKLOAD = """\
if {run}:
    report = simulate(config, output=None)
    assert report.is_accounted, report
    count = report.sent
"""


def _peak_rss_mib(num_messages: int, run: bool) -> float:
    """Run one child and return its peak RSS; raises if it failed or sent too few."""
    code = child_code(_IMPORTS, num_messages, SENDERS, SEED, _WORKLOAD.format(run=run))
    return peak_rss_mib(code, num_messages if run else 0, "child sent")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv, runs=3, runs_help="children of each kind",
                      quick_help="N = 100000 and 1000000")
    small_n, large_n = (100_000, 1_000_000) if args.quick else (1_000_000, 10_000_000)

    peaks = rotate({
        "baseline": partial(_peak_rss_mib, small_n, False),
        "small": partial(_peak_rss_mib, small_n, True),
        "large": partial(_peak_rss_mib, large_n, True),
    }, args.runs)

    print_header(f"virtual memory: peak RSS of a child running simulate, burst on {SENDERS} "
                 f"senders at zero latency", args.runs)
    baseline = print_runs("baseline (import + config) peak MiB", peaks["baseline"], ".1f")
    small = print_runs(f"N={small_n} peak MiB", peaks["small"], ".1f")
    large = print_runs(f"N={large_n} peak MiB", peaks["large"], ".1f")
    small_growth = small - baseline
    large_growth = large - baseline
    difference = large_growth - small_growth
    print(f"  N={small_n} over baseline MiB: {small_growth:.1f}")
    print(f"  N={large_n} over baseline MiB: {large_growth:.1f}")
    print(f"  difference (N={large_n} - N={small_n}) MiB: {difference:.1f}")
    print_target(f"target |difference| <= {TARGET_DIFFERENCE_MIB:g} MiB",
                 abs(difference) <= TARGET_DIFFERENCE_MIB)
    return 0


if __name__ == "__main__":
    sys.exit(main())
