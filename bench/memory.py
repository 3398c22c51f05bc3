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
TARGET_GROWTH_MIB = 10.0
KIB_PER_MIB = 1024

_PREAMBLE = """\
import json, resource, sys
sys.path.insert(0, {root!r})
import sms_sim
config = sms_sim.SimulationConfig(
    num_messages={n}, senders=[sms_sim.SenderConfig(0.0, 0.0, 0.0)] * {senders}, seed={seed}
)
count = 0
"""
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
_EPILOGUE = """\
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"maxrss_kib": usage.ru_maxrss, "count": count}))
"""


def _peak_rss_mib(workload: str, num_messages: int) -> float:
    """Run one child and return its peak RSS; raises if it failed or processed too little."""
    fields = {"root": str(ROOT), "n": num_messages, "senders": SENDERS, "seed": SEED}
    code = (
        _PREAMBLE.format(**fields) + _WORKLOADS[workload].format(**fields) + _EPILOGUE
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    expected = 0 if workload == "baseline" else num_messages
    if figures["count"] != expected:
        raise RuntimeError(f"{workload} child handled {figures['count']} of {expected} messages")
    return float(figures["maxrss_kib"]) / KIB_PER_MIB


def _fmt_runs(values: Sequence[float]) -> str:
    return " ".join(f"{v:.1f}" for v in values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="children of each kind (default 3)")
    parser.add_argument("--messages", type=int, default=1_000_000, help="N (default 1000000)")
    parser.add_argument("--quick", action="store_true", help="N = 200000")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1 (got {args.runs})")
    num_messages: int = 200_000 if args.quick else args.messages

    kinds = list(_WORKLOADS)
    peaks: dict[str, list[float]] = {kind: [] for kind in kinds}
    for run in range(args.runs):
        shift = run % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            peaks[kind].append(_peak_rss_mib(kind, num_messages))

    median = {kind: statistics.median(values) for kind, values in peaks.items()}
    ours_growth = median["ours"] - median["baseline"]
    prefilled_growth = median["prefilled"] - median["baseline"]
    passed = ours_growth <= TARGET_GROWTH_MIB
    print(f"memory: peak RSS of a child, N={num_messages}, {SENDERS} senders at zero latency, "
          f"median of {args.runs} runs")
    print(f"  baseline (import + config) peak MiB: {median['baseline']:.1f} "
          f"(runs {_fmt_runs(peaks['baseline'])})")
    print(f"  ours peak MiB: {median['ours']:.1f} (runs {_fmt_runs(peaks['ours'])})")
    print(f"  prefilled queue.Queue peak MiB: {median['prefilled']:.1f} "
          f"(runs {_fmt_runs(peaks['prefilled'])})")
    print(f"  ours over baseline MiB: {ours_growth:.1f}")
    print(f"  prefilled over baseline MiB: {prefilled_growth:.1f}")
    if ours_growth > 0:
        print(f"  prefilled growth / ours growth: {prefilled_growth / ours_growth:.1f}x")
    print(f"  target ours <= baseline + {TARGET_GROWTH_MIB:g} MiB: "
          f"{'PASS' if passed else 'FAIL'} ({ours_growth:.1f} MiB over)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
