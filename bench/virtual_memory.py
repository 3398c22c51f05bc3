"""Virtual-time memory: peak RSS of ``simulate`` on 1,000,000 and on 10,000,000 messages.

What is measured: peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, KiB on Linux) of
fresh child interpreters (``python -c``, the same interpreter as this script). Every child
imports ``sms_sim`` (and ``sms_sim.des``) and builds its config: a burst of N messages on 4
senders ``SenderConfig(0, 0, 0)`` (zero send time, no failures), seed 1. Then:

* baseline: nothing else (N = 1,000,000 in the config, never run);
* small: ``simulate(config, output=None)`` with N = 1,000,000;
* large: the same with N = 10,000,000.

Each child prints its peak RSS at the end. Figures are medians over the runs; the growth of
a workload is its median minus the median baseline. The order of the children rotates from
run to run.

Why: the virtual-time loop keeps at most one event per sender, a burst is one batch and the
time-to-send record is capped, so ten times the messages should cost ten times the time
and no more memory.

Target: |large growth - small growth| <= 5 MiB.

Command (from the repo root): python3 bench/virtual_memory.py [--runs 3] [--quick]
(``--quick`` uses N = 100,000 and 1,000,000.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

# The parent never imports sms_sim; each child puts the repo root on its own path.
ROOT = Path(__file__).resolve().parent.parent

SENDERS = 4
SEED = 1
TARGET_DIFFERENCE_MIB = 5.0
KIB_PER_MIB = 1024

_CHILD = """\
import json, resource, sys
sys.path.insert(0, {root!r})
import sms_sim
from sms_sim.des import simulate
config = sms_sim.SimulationConfig(
    num_messages={n}, senders=[sms_sim.SenderConfig(0.0, 0.0, 0.0)] * {senders}, seed={seed}
)
count = 0
if {run}:
    report = simulate(config, output=None)
    assert report.is_accounted, report
    count = report.sent
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"maxrss_kib": usage.ru_maxrss, "count": count}}))
"""


def _peak_rss_mib(num_messages: int, run: bool) -> float:
    """Run one child and return its peak RSS; raises if it failed or sent too few."""
    code = _CHILD.format(root=str(ROOT), n=num_messages, senders=SENDERS, seed=SEED, run=run)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    expected = num_messages if run else 0
    if figures["count"] != expected:
        raise RuntimeError(f"child sent {figures['count']} of {expected} messages")
    return float(figures["maxrss_kib"]) / KIB_PER_MIB


def _fmt_runs(values: Sequence[float]) -> str:
    return " ".join(f"{v:.1f}" for v in values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="children of each kind (default 3)")
    parser.add_argument("--quick", action="store_true", help="N = 100000 and 1000000")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1 (got {args.runs})")
    small_n, large_n = (100_000, 1_000_000) if args.quick else (1_000_000, 10_000_000)

    kinds: dict[str, tuple[int, bool]] = {
        "baseline": (small_n, False),
        "small": (small_n, True),
        "large": (large_n, True),
    }
    names = list(kinds)
    peaks: dict[str, list[float]] = {name: [] for name in names}
    for run in range(args.runs):
        shift = run % len(names)
        for name in names[shift:] + names[:shift]:
            peaks[name].append(_peak_rss_mib(*kinds[name]))

    median = {name: statistics.median(values) for name, values in peaks.items()}
    small_growth = median["small"] - median["baseline"]
    large_growth = median["large"] - median["baseline"]
    difference = large_growth - small_growth
    passed = abs(difference) <= TARGET_DIFFERENCE_MIB
    print(f"virtual memory: peak RSS of a child running simulate, burst on {SENDERS} senders "
          f"at zero latency, median of {args.runs} runs")
    print(f"  baseline (import + config) peak MiB: {median['baseline']:.1f} "
          f"(runs {_fmt_runs(peaks['baseline'])})")
    print(f"  N={small_n} peak MiB: {median['small']:.1f} (runs {_fmt_runs(peaks['small'])})")
    print(f"  N={large_n} peak MiB: {median['large']:.1f} (runs {_fmt_runs(peaks['large'])})")
    print(f"  N={small_n} over baseline MiB: {small_growth:.1f}")
    print(f"  N={large_n} over baseline MiB: {large_growth:.1f}")
    print(f"  difference (N={large_n} - N={small_n}) MiB: {difference:.1f}")
    print(f"  target |difference| <= {TARGET_DIFFERENCE_MIB:g} MiB: "
          f"{'PASS' if passed else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
