"""``sms-sim plan``: the sizing question answered from the command line.

Prints a table (or ``--json`` / ``--csv``) of sender counts with their makespan and its
confidence interval, and the fewest senders that finish within the deadline with the
requested confidence. ``--plot`` needs the optional ``[plot]`` extra (matplotlib), imported
only here and only when asked for.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sms_sim.cli.common import (
    ExitCode,
    OneLineParser,
    emit,
    int_at_least,
    json_text,
    non_negative_float,
    positive_float,
    probability,
)
from sms_sim.cli.model_args import add_model_arguments, retry_from_args, sender_from_args
from sms_sim.config import SimulationConfig
from sms_sim.errors import ConfigError
from sms_sim.sim.plan import PlanResult, plan

__all__ = ["main"]

_COLUMNS = (
    "senders", "makespan_mean_s", "makespan_ci_s", "makespan_upper_s", "p50_send_s",
    "p95_send_s", "p99_send_s", "utilisation", "failed_attempts", "dead_lettered",
    "meets_deadline",
)


def _sender_counts(text: str) -> list[int]:
    """``10,20,40`` or ``10:50:5`` (start:stop:step, stop included)."""
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            start, stop, step = parts[0], parts[1], parts[2] if len(parts) == 3 else 1
            if step < 1 or stop < start:
                raise ValueError
            counts = list(range(start, stop + 1, step))
        else:
            counts = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected counts like 10,20,40 or 10:50:5 (got {text!r})"
        ) from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"sender counts must be >= 1 (got {text!r})")
    return counts


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description="How many senders finish the messages within the deadline? Runs the "
                    "virtual-time model R times per sender count and reports the makespan "
                    "with its confidence interval.",
    )
    parser.add_argument("--messages", type=int_at_least(1), required=True, metavar="N",
                        help="messages to send (required)")
    parser.add_argument("--mean", type=non_negative_float, required=True, metavar="SECONDS",
                        help="mean send time of one sender")
    parser.add_argument("--deviation", type=non_negative_float, default=0.0, metavar="SECONDS",
                        help="max deviation (uniform) or standard deviation (lognormal) "
                             "(default 0)")
    parser.add_argument("--failure-rate", type=probability, default=0.0, metavar="P",
                        help="probability one send fails, 0-1 (default 0)")
    parser.add_argument("--deadline", type=positive_float, required=True, metavar="SECONDS",
                        help="the time by which every message must be done")
    parser.add_argument("--replications", type=int_at_least(2), default=10, metavar="R",
                        help="independent runs per sender count (default 10)")
    parser.add_argument("--confidence", type=probability, default=0.95, metavar="LEVEL",
                        help="confidence of the interval and the deadline bound (default 0.95)")
    parser.add_argument("--senders", type=_sender_counts, metavar="LIST|START:STOP:STEP",
                        help="sender counts to tabulate (default: about 20 around the answer)")
    parser.add_argument("--seed", type=int_at_least(0), default=1, metavar="N",
                        help="seed of replication 1 (default 1: plans are repeatable)")
    parser.add_argument("--jobs", type=int_at_least(1), default=os.cpu_count() or 1,
                        metavar="N", help="processes running replications (default: all cores)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true",
                        help="one JSON object with min_senders and rows")
    output.add_argument("--csv", action="store_true", help="the rows as CSV")
    parser.add_argument("--plot", type=Path, metavar="FILE.png",
                        help="draw makespan against senders with the deadline (needs "
                             "sms_sim[plot])")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="no progress lines on stderr")
    add_model_arguments(parser)
    return parser


def main(argv: Sequence[str], *, prog: str) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    pyplot = _import_pyplot(parser) if args.plot else None
    try:
        sender = sender_from_args(args, args.mean, args.deviation, args.failure_rate)
        base = SimulationConfig(num_messages=args.messages, senders=[sender], seed=args.seed,
                                arrivals=args.arrivals, retry=retry_from_args(args))
    except ConfigError as exc:
        parser.error(str(exc))
    progress = (lambda line: None) if args.quiet else _stderr_line
    try:
        result = plan(base, sender, deadline_s=args.deadline, replications=args.replications,
                      level=args.confidence, sender_counts=args.senders, jobs=args.jobs,
                      progress=progress)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return ExitCode.SIGINT
    if args.json:
        emit(json_text(result.to_dict()))
    elif args.csv:
        emit(_csv(result))
    else:
        emit(_table(result, args.messages))
    if pyplot is not None:
        _plot(pyplot, result, args.plot)
    return ExitCode.OK


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _import_pyplot(parser: argparse.ArgumentParser) -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display is needed or wanted
        import matplotlib.pyplot as pyplot
    except ImportError:
        parser.exit(ExitCode.ERROR, f"{parser.prog}: error: --plot needs matplotlib: "
                                    "pip install 'sms_sim[plot]'\n")
    return pyplot


def _table(result: PlanResult, messages: int) -> str:
    level = f"{result.level:.0%}"
    lines = [
        f"{'senders':>8} {'makespan s':>12} {f'+/- {level} CI':>11} {f'upper {level}':>11} "
        f"{'p50 s':>9} {'p95 s':>9} {'p99 s':>9} {'util':>6} {'failures':>10} "
        f"{'dead':>8}  deadline",
    ]
    for row in result.rows:
        lines.append(
            f"{row.senders:>8} {row.makespan_mean_s:>12.3f} {row.makespan_ci_s:>11.3f} "
            f"{row.makespan_upper_s:>11.3f} {row.p50_send_s:>9.3f} {row.p95_send_s:>9.3f} "
            f"{row.p99_send_s:>9.3f} {row.utilisation:>6.1%} {row.failed_attempts:>10.1f} "
            f"{row.dead_lettered:>8.1f}  {'meets' if row.meets_deadline else 'misses'}"
        )
    if result.min_senders is None:
        lines.append(f"no sender count meets the {result.deadline_s:g}s deadline "
                     f"with {level} confidence")
    else:
        lines.append(f"min senders: {result.min_senders} finish {messages} messages within "
                     f"{result.deadline_s:g}s with {level} confidence (seed {result.seed}, "
                     f"{result.rows[0].replications} replications per count)")
    return "\n".join(lines)


def _csv(result: PlanResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_COLUMNS)
    for row in result.rows:
        values = row.to_dict()
        writer.writerow([values[column] for column in _COLUMNS])
    return buffer.getvalue().rstrip("\n")


def _plot(pyplot: Any, result: PlanResult, path: Path) -> None:
    figure, axes = pyplot.subplots(figsize=(8, 5))
    senders = [row.senders for row in result.rows]
    axes.errorbar(senders, [row.makespan_mean_s for row in result.rows],
                  yerr=[row.makespan_ci_s for row in result.rows], marker="o", capsize=3,
                  label=f"makespan (mean, {result.level:.0%} CI)")
    axes.axhline(result.deadline_s, color="red", linestyle="--", label="deadline")
    if result.min_senders is not None:
        axes.axvline(result.min_senders, color="green", linestyle=":",
                     label=f"min senders = {result.min_senders}")
    axes.set_xlabel("senders")
    axes.set_ylabel("makespan (s)")
    axes.legend()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
