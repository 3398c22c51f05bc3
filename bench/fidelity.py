"""Real-time fidelity: threaded-run wall time against the ideal N * mean / S, beside a naive loop.

What is measured: for S = 4, 100 and 1000 senders that each take exactly 5 ms per send
(deviation 0, failure rate 0), ``report.elapsed_s`` of ``sms_sim.run`` (and the wall time
around the call) divided by the ideal ``N * mean / S``. In the same run, a naive loop: S
threads draining a prefilled ``queue.Queue`` with ``get_nowait()`` and ``time.sleep(mean)``
until it is empty, timed the same way. Runs alternate which side goes first.

Why: the simulator claims to keep real time. S senders at mean m should finish N messages in
N * m / S seconds. When the host cannot keep up, the report has to say so
(``report.max_lag_s`` above ``sms_sim.report.LAG_WARNING_S``).

Target: ours <= 1.02 x ideal for S <= 100. For S > 100 there is no time target (a 2-core host
cannot start 200,000 sends a second). Instead the check is that the report flags lagging in
every run that missed 1.02 x ideal.

Sizes: N gives an ideal of ``--ideal-s`` (3 s) for S <= 100, that is N = 3 * S / 0.005. For
S > 100 the ideal is ``--large-ideal-s`` (0.5 s, N = 100,000 at S = 1000). At that size the run
is throughput-bound, so the ratio hardly depends on N, and 600,000 messages would take minutes
per run. ``--quick`` uses ideals of 1 s and 0.2 s.

Command (from the repo root): python3 bench/fidelity.py [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import (  # noqa: E402
    alternate,
    parse_args,
    print_header,
    print_runs,
    print_target,
    verdict,  # noqa: E402
)

import sms_sim  # noqa: E402
from sms_sim.report import LAG_WARNING_S  # noqa: E402

MEAN_S = 0.005
TARGET_RATIO = 1.02
TARGET_MAX_SENDERS = 100  # the time target applies up to this many senders


@dataclass(frozen=True, slots=True)
class _OursRun:
    elapsed_s: float
    wall_s: float
    max_lag_s: float


def _run_ours(num_messages: int, senders: int) -> _OursRun:
    config = sms_sim.SimulationConfig(
        num_messages=num_messages,
        senders=[sms_sim.SenderConfig(MEAN_S, 0.0, 0.0)] * senders,
        seed=1,
    )
    started = time.perf_counter()
    report = sms_sim.run(config, output=None)
    wall_s = time.perf_counter() - started
    if report.sent != num_messages or not report.is_accounted:
        raise RuntimeError(f"ours sent {report.sent} of {num_messages} ({report.stopped_by})")
    return _OursRun(report.elapsed_s, wall_s, report.max_lag_s)


def _run_naive(num_messages: int, senders: int) -> float:
    """Wall seconds for ``senders`` threads to drain a prefilled queue, sleeping per item."""
    inbox: queue.Queue[int] = queue.Queue()
    for item in range(num_messages):
        inbox.put(item)

    def drain() -> None:
        while True:
            try:
                inbox.get_nowait()
            except queue.Empty:
                return
            time.sleep(MEAN_S)

    threads = [threading.Thread(target=drain, name=f"naive-{i}") for i in range(senders)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def _bench_senders(senders: int, ideal_s: float, runs: int) -> bool:
    """Measure one sender count, print its lines, and return whether it met its target."""
    num_messages = round(ideal_s * senders / MEAN_S)
    ideal_s = num_messages * MEAN_S / senders
    ours, naive_s = alternate(
        lambda: _run_ours(num_messages, senders), lambda: _run_naive(num_messages, senders), runs
    )

    ours_ratios = [r.elapsed_s / ideal_s for r in ours]
    wall_ratios = [r.wall_s / ideal_s for r in ours]
    naive_ratios = [s / ideal_s for s in naive_s]
    max_lag_s = statistics.median(r.max_lag_s for r in ours)
    flagged = [r.max_lag_s > LAG_WARNING_S for r in ours]
    missed = [ratio > TARGET_RATIO for ratio in ours_ratios]
    tag = f"S={senders}"

    print_header(f"{tag}: N={num_messages}, mean {MEAN_S * 1000:g} ms, ideal {ideal_s:.3f} s",
                 runs)
    ours_ratio = print_runs(f"{tag} ours report.elapsed_s/ideal", ours_ratios, ".4f")
    print(f"  {tag} ours wall/ideal: {statistics.median(wall_ratios):.4f}")
    naive_ratio = print_runs(f"{tag} naive wall/ideal", naive_ratios, ".4f")
    print(f"  {tag} ours/naive: {ours_ratio / naive_ratio:.3f}")
    print(f"  {tag} ours report.max_lag_s: {max_lag_s:.4f} s "
          f"(flags lagging above {LAG_WARNING_S:g} s)")
    print(f"  {tag} ours report flagged lagging: {'yes' if any(flagged) else 'no'} "
          f"in {sum(flagged)}/{runs} runs")
    if senders <= TARGET_MAX_SENDERS:
        passed = ours_ratio <= TARGET_RATIO
        print_target(f"{tag} target ours report.elapsed_s/ideal <= {TARGET_RATIO}", passed,
                     f"{ours_ratio:.4f}")
    else:
        unflagged = sum(m and not f for m, f in zip(missed, flagged, strict=True))
        passed = unflagged == 0
        print_target(f"{tag} target report flags lagging in every run above {TARGET_RATIO} x "
                     f"ideal", passed, f"{sum(missed)}/{runs} runs above, "
                     f"{unflagged} of them unflagged")
    return passed


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--senders", type=int, nargs="+", default=[4, 100, 1000])
    parser.add_argument("--ideal-s", type=float, default=3.0,
                        help=f"ideal run time for S <= {TARGET_MAX_SENDERS} (default 3)")
    parser.add_argument("--large-ideal-s", type=float, default=0.5,
                        help=f"ideal run time for S > {TARGET_MAX_SENDERS} (default 0.5)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv, runs=3, quick_help="ideals of 1 s and 0.2 s",
                      add_options=_add_options)
    ideal_s: float = 1.0 if args.quick else args.ideal_s
    large_ideal_s: float = 0.2 if args.quick else args.large_ideal_s

    print(f"fidelity: wall time / ideal (N * mean / S); target <= {TARGET_RATIO} for "
          f"S <= {TARGET_MAX_SENDERS}")
    results = [
        _bench_senders(s, ideal_s if s <= TARGET_MAX_SENDERS else large_ideal_s, args.runs)
        for s in args.senders
    ]
    print(f"fidelity overall: {verdict(all(results))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
