"""Peak memory: RSS growth of a 1,000,000-message run over the bare interpreter baseline.

What is measured: peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, KiB on Linux) of
three kinds of fresh child interpreter (``python -c``, the same interpreter as this script).
All three import ``sms_sim`` and build the config (N = 1,000,000, 4 senders
``SenderConfig(0, 0, 0)``), then:

* baseline: do nothing else;
* ours: ``sms_sim.run(config, output=None)``;
* prefilled: put all N messages from ``generate_messages(N, 1)`` into an unbounded
  ``queue.Queue()``. This is the naive design, shown for comparison.

Each child prints its peak RSS at the end. The figures are the medians over the runs, and
the growth is the median child minus the median baseline. The order of the children rotates
from run to run.

Why: the producer streams into a bounded queue and the outcomes are folded into counters, so
memory should not grow with the message count. The prefilled queue shows what it costs when
memory does grow with it.

Target: ours <= baseline + 10 MiB.

Command (from the repo root): python3 bench/memory.py [--runs 3] [--quick]
(``--quick`` uses N = 200,000, which makes the target easier to meet.)
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
TARGET_GROWTH_MIB = 10.0

_WORKLOADS = {
    "baseline": "",
    "ours": """\
report = sms_sim.run(config, output=None)
assert report.is_accounted, report
count = report.sent
""",
    "prefilled": """\
import queue
inbox = queue.Queue()
for message in sms_sim.generate_messages({n}, {seed}):
    inbox.put(message)
count = inbox.qsize()
""",
}


def _peak_rss_mib(workload: str, num_messages: int) -> float:
    """Run one child and return its peak RSS; raises if it failed or processed too little."""
    body = _WORKLOADS[workload].format(n=num_messages, seed=SEED)
    code = child_code("import sms_sim", num_messages, SENDERS, SEED, body)
    expected = 0 if workload == "baseline" else num_messages
    return peak_rss_mib(code, expected, f"{workload} child handled")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv, runs=3, runs_help="children of each kind",
                      messages=(1_000_000, 200_000))
    num_messages: int = args.messages

    peaks = rotate({kind: partial(_peak_rss_mib, kind, num_messages) for kind in _WORKLOADS},
                   args.runs)

    print_header(f"memory: peak RSS of a child, N={num_messages}, {SENDERS} senders at zero "
                 f"latency", args.runs)
    baseline = print_runs("baseline (import + config) peak MiB", peaks["baseline"], ".1f")
    ours = print_runs("ours peak MiB", peaks["ours"], ".1f")
    prefilled = print_runs("prefilled queue.Queue peak MiB", peaks["prefilled"], ".1f")
    ours_growth = ours - baseline
    prefilled_growth = prefilled - baseline
    print(f"  ours over baseline MiB: {ours_growth:.1f}")
    print(f"  prefilled over baseline MiB: {prefilled_growth:.1f}")
    if ours_growth > 0:
        print(f"  prefilled growth / ours growth: {prefilled_growth / ours_growth:.1f}x")
    print_target(f"target ours <= baseline + {TARGET_GROWTH_MIB:g} MiB",
                 ours_growth <= TARGET_GROWTH_MIB, f"{ours_growth:.1f} MiB over")
    return 0


if __name__ == "__main__":
    sys.exit(main())
