"""``sms-sim plan``: the sizing question answered from the command line.

"How many senders deliver 95 % of 1M messages within 600 s, with 95 % confidence?" The
answer line comes with the rows of the counts that decided it (the answer and the count
below it), or the rows of ``--table`` / ``--senders``; ``--json`` and ``--csv`` give them
to programs. Progress goes to stderr (one redrawn line on a terminal); Ctrl-C prints the
bracket known so far and exits 130. Every bad value, the ``--plot`` file included, is
refused in one line with exit 2 before any work; ``--plot`` needs the optional ``[plot]``
extra (matplotlib), imported only then.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from sms_sim.cli.common import (
    ExitCode,
    OneLineParser,
    Terminated,
    emit,
    finite_float,
    int_at_least,
    json_text,
    non_negative_float,
    positive_float,
    probability,
    stop_code,
)
from sms_sim.cli.model_args import (
    SENDER_OPTIONS,
    add_model_arguments,
    in_option_words,
    retry_from_args,
    sender_from_args,
    sms_from_args,
)
from sms_sim.config import (
    SENDERS_MAX,
    DeliveryGoal,
    DeliveryTarget,
    ReceiptModel,
    SenderConfig,
    SimulationConfig,
)
from sms_sim.errors import ConfigError
from sms_sim.policy import never_delivered_probability
from sms_sim.sim.plan import (
    SWEEP_POINTS,
    PlanProgress,
    PlanResult,
    PlanRow,
    default_deliver,
    plan,
)

__all__ = ["main", "build_parser", "draw", "format_result", "format_progress", "format_bracket"]

TABLE_COUNTS_MAX = 1000  # rows --senders may ask for
JOBS_MAX = 256
PLOT_FORMATS = (".png", ".pdf", ".svg")
_COLUMNS = ("senders", "replications", "runs", "meets", "time_mean_s", "upper_s",
            "least_upper_s", "delivered_mean", "delivered_min", "failed_attempts", "dead")


def _sender_counts(text: str) -> list[int]:
    """``10,20,40`` or ``10:50:5`` (start:stop:step, stop included), each in
    1..SENDERS_MAX and at most TABLE_COUNTS_MAX of them (checked before any list is built)."""
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            start, stop, step = parts[0], parts[1], parts[2] if len(parts) == 3 else 1
            if step < 1 or stop < start:
                raise ValueError
            ends = [start, stop]
            size = (stop - start) // step + 1
        else:
            ends = [int(p) for p in text.split(",")]
            size = len(ends)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected counts like 10,20,40 or 10:50:5 (got {text!r})"
        ) from None
    if min(ends) < 1 or max(ends) > SENDERS_MAX:
        raise argparse.ArgumentTypeError(f"sender counts must be in 1..{SENDERS_MAX} "
                                         f"(got {text!r})")
    if size > TABLE_COUNTS_MAX:
        raise argparse.ArgumentTypeError(f"at most {TABLE_COUNTS_MAX} sender counts "
                                         f"(got {size} in {text!r})")
    return list(range(start, stop + 1, step)) if ":" in text else ends


def _fraction(text: str) -> float:
    value = finite_float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1] (got {text!r})")
    return value


def _confidence(text: str) -> float:
    value = finite_float(text)
    if not 0.5 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0.5 and below 1 (got {text!r})")
    return value


def _percentiles(text: str) -> list[float]:
    values = [finite_float(part) for part in text.split(",")]
    if any(not 0 < value <= 100 for value in values):
        raise argparse.ArgumentTypeError(f"percentiles must be in (0, 100] (got {text!r})")
    return values


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description="How many senders deliver the messages in time? The fewest identical "
                    "senders whose replications deliver --deliver of the messages within "
                    "--deadline with --confidence (an upper prediction bound of the time "
                    "the last of them is delivered: one more run meets it with that "
                    "probability). Failed or dead-lettered messages never count as "
                    "delivered.",
        epilog="exit codes: 0 answered (also when no count can meet the goal: the last line "
               "says why), 1 --plot without matplotlib, 2 bad usage, 130 interrupted "
               "(the bracket known so far is printed)",
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
                        help="the time from the start by which the messages must be delivered")
    parser.add_argument("--deliver", type=_fraction, metavar="FRACTION",
                        help="fraction of the messages that must be delivered by the deadline "
                             "(default 1 when retries deliver every message; otherwise "
                             "required, e.g. 0.95)")
    parser.add_argument("--percentile", type=_percentiles, default=[], metavar="P[,P...]",
                        help="also show when P %% of the messages had been delivered")
    parser.add_argument("--target", choices=[t.value for t in DeliveryTarget],
                        default=DeliveryTarget.ACCEPTED.value,
                        help="what delivered means: accepted by the provider (default), or "
                             "received: a delivery receipt said so (the receipt flags set its "
                             "model; --deadline and --percentile then time receipts)")
    parser.add_argument("--replications", type=int_at_least(2, 10_000), default=10,
                        metavar="R", help="runs per sender count (default 10)")
    parser.add_argument("--confidence", type=_confidence, default=0.95, metavar="LEVEL",
                        help="probability one more run meets the goal (default 0.95)")
    parser.add_argument("--table", action="store_true",
                        help=f"also tabulate about {SWEEP_POINTS} counts around the answer "
                             "(each fully replicated: slower)")
    parser.add_argument("--senders", type=_sender_counts, metavar="LIST|START:STOP[:STEP]",
                        help="also tabulate these counts (fully replicated)")
    parser.add_argument("--seed", type=int_at_least(0), default=1, metavar="N",
                        help="seed of replication 1 (default 1: plans are repeatable)")
    parser.add_argument("--jobs", type=int_at_least(1, JOBS_MAX), default=os.cpu_count() or 1,
                        metavar="N", help="processes running replications (default: all cores)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true",
                        help="one JSON object with min_senders, reason and rows")
    output.add_argument("--csv", action="store_true", help="the rows as CSV")
    parser.add_argument("--plot", type=Path, metavar="FILE.png|.pdf|.svg",
                        help="draw the time to deliver against senders with the deadline and "
                             "the answer (implies --table; needs sms_sim[plot])")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="no progress on stderr")
    add_model_arguments(parser)
    return parser


def main(argv: Sequence[str], *, prog: str) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.plot is not None:
        _check_plot_path(parser, args.plot)
    try:
        sender = sender_from_args(args, args.mean, args.deviation, args.failure_rate)
        sms = sms_from_args(args)
        target = DeliveryTarget(args.target)
        receipts = sms.receipts
        if target is DeliveryTarget.RECEIVED and receipts is None:
            receipts = ReceiptModel()
        base = SimulationConfig(num_messages=args.messages, senders=[sender], seed=args.seed,
                                arrivals=args.arrivals, retry=retry_from_args(args),
                                content=sms.content, receipts=receipts,
                                valid_for_s=sms.valid_for_s)
        deliver = (args.deliver if args.deliver is not None
                   else default_deliver(base, sender, target))
        if deliver is None:
            raise ConfigError(_say_deliver(args, base, sender, target))
        goal = DeliveryGoal(deadline_s=args.deadline, deliver=deliver, level=args.confidence,
                            replications=args.replications,
                            percentiles=tuple(args.percentile), target=target)
    except ConfigError as exc:
        parser.error(in_option_words(str(exc), _OPTIONS))
    pyplot = _import_pyplot(parser) if args.plot is not None else None
    progress = _Progress(sys.stderr, quiet=args.quiet)
    try:
        result = plan(base, sender, goal, jobs=args.jobs, table_counts=args.senders or (),
                      sweep=args.table or args.plot is not None, progress=progress)
    except (KeyboardInterrupt, Terminated) as exc:
        progress.finish()
        print(f"{parser.prog}: interrupted; {progress.bracket()}", file=sys.stderr)
        return stop_code(exc)
    progress.finish()
    if args.json:
        emit(json_text(result.to_dict()))
    elif args.csv:
        emit(_csv_text(result))
    else:
        emit(format_result(result))
    if pyplot is not None:
        try:
            _plot(pyplot, result, args.plot)
        except OSError as exc:  # the file became unwritable during the plan (a full disk)
            print(f"{parser.prog}: error: the plot could not be written to "
                  f"{str(args.plot)!r}: {exc.strerror or exc}", file=sys.stderr)
            return ExitCode.ERROR
    return ExitCode.OK


# The plan's own options beside the senders' (``model_args.SENDER_OPTIONS``).
_OPTIONS = {**SENDER_OPTIONS, "num_messages": "--messages", "deadline": "--deadline",
            "deliver": "--deliver", "confidence": "--confidence",
            "replications": "--replications", "percentile": "--percentile"}


def _say_deliver(args: argparse.Namespace, base: SimulationConfig, sender: SenderConfig,
                 target: DeliveryTarget) -> str:
    """Why --deliver must be given: how many messages are expected never delivered."""
    receipts = base.receipts if target is DeliveryTarget.RECEIVED else None
    lost = args.messages * never_delivered_probability(sender, args.max_attempts, receipts)
    about = f"{lost:,.0f}" if lost >= 10 else f"{lost:.2g}"
    received = " (receipts: undelivered or lost ones included)" if receipts else ""
    # Only failed sends are retried: receipts that never say delivered are not.
    retry = (" or retry with --max-attempts"
             if never_delivered_probability(sender, args.max_attempts, None) > 0 else "")
    return (
        f"say what fraction must be delivered: with failure rate {sender.failed_rate:g} "
        f"and {args.max_attempts} attempt{'s' if args.max_attempts > 1 else ''} about "
        f"{about} of {args.messages:,} messages are never delivered{received}; use "
        f"--deliver (e.g. --deliver 0.95){retry}"
    )


class _Progress:
    """Progress on stderr: one redrawn line on a terminal; otherwise a line when a count is
    settled or every ``LOG_INTERVAL_S`` of the plan's time. Remembers the last snapshot so
    an interruption can say what is known."""

    LOG_INTERVAL_S = 2.0

    def __init__(self, stream: TextIO, *, quiet: bool) -> None:
        self._stream = stream
        self._quiet = quiet
        self._tty = stream.isatty()
        self._drawn = False
        self._logged_at = 0.0
        self.last: PlanProgress | None = None

    def __call__(self, snapshot: PlanProgress) -> None:
        previous, self.last = self.last, snapshot
        if self._quiet:
            return
        line = format_progress(snapshot)
        if self._tty:
            self._stream.write(f"\r{line}\x1b[K")
            self._drawn = True
        elif (previous is None or snapshot.settled != previous.settled
              or snapshot.elapsed_s >= self._logged_at + self.LOG_INTERVAL_S):
            self._stream.write(line + "\n")
            self._logged_at = snapshot.elapsed_s
        self._stream.flush()

    def finish(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False

    def bracket(self) -> str:
        return "nothing evaluated yet" if self.last is None else format_bracket(self.last)


def format_bracket(snapshot: PlanProgress) -> str:
    """What is known about the answer, in words."""
    low = snapshot.ruled_out_to
    below = f"every count up to {low} misses" if low else "no count is ruled out yet"
    if snapshot.meets_at is None:
        return f"{below}; no count has met the goal yet"
    if snapshot.meets_at == low + 1:
        return f"{below}, {snapshot.meets_at} meets: the answer is {snapshot.meets_at}"
    return (f"{below}, {snapshot.meets_at} meets: the answer is in "
            f"{low + 1}..{snapshot.meets_at}")


def format_progress(snapshot: PlanProgress) -> str:
    current = ("" if snapshot.current is None else
               f"{snapshot.current} senders: run {snapshot.current_runs}/"
               f"{snapshot.replications}; ")
    eta = "" if snapshot.eta_s is None else f"; ETA for this count {snapshot.eta_s:.0f} s"
    return (f"plan: {current}{snapshot.settled} counts settled, {snapshot.runs} runs in "
            f"{_wall(snapshot.elapsed_s)}; {format_bracket(snapshot)}{eta}")


def format_result(result: PlanResult) -> str:
    """The rows and the answer line (or the reason no count meets)."""
    goal = result.goal
    level = _percent(goal.level)
    wanted = f"{_percent(goal.deliver)} of {result.messages} messages"
    if goal.target is DeliveryTarget.RECEIVED:
        wanted += " (received: delivered receipts)"
    lines = [
        f"goal: deliver {wanted} within {goal.deadline_s:g} s, {level} confidence "
        f"(up to {goal.replications} runs per count, seed {result.seed})",
    ]
    if result.rows:
        lines.append(_header(result))
    lines.extend(_row_line(row, result.goal.deadline_s) for row in result.rows)
    if result.min_senders is None:
        lines.append(result.reason or "no count meets the goal")
    else:
        below = result.min_senders - 1
        shown = f"; {below} misses" if below >= 1 else ""
        lines.append(f"min senders: {result.min_senders} deliver {wanted} within "
                     f"{goal.deadline_s:g} s with {level} confidence{shown} "
                     f"({result.runs} runs in {_wall(result.elapsed_s)})")
    return "\n".join(lines)


def _wall(seconds: float) -> str:
    return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.4g} %"


def _header(result: PlanResult) -> str:
    goal = result.goal
    extra = "".join(f" {f't{p:g}% s':>11}" for p in goal.percentiles)
    return (f"{'senders':>8} {'runs':>7} {f't{goal.deliver * 100:.4g}% s':>11} "
            f"{'bound s':>12} {f'by {goal.deadline_s:g}s':>10} {'lowest':>8}{extra} "
            f"{'failed':>10} {'dead':>8}  verdict")


def _row_line(row: PlanRow, deadline_s: float) -> str:
    def time(value: float) -> str:
        # A time some run had not reached when it stopped, past the deadline: later than
        # the deadline is all that is known ("never" was wrong for a run cut at its horizon).
        return f">{deadline_s:g}" if math.isinf(value) else f"{value:.3f}"

    bound = (time(row.upper_s) if row.upper_s is not None
             else time(row.least_upper_s) if math.isinf(row.least_upper_s)
             else ">=" + time(row.least_upper_s))
    extra = "".join(f" {time(t):>11}" for t in row.percentile_times_s)
    return (f"{row.senders:>8} {f'{row.runs}/{row.replications}':>7} "
            f"{time(row.time_mean_s):>11} {bound:>12} {row.delivered_mean:>10.2%} "
            f"{row.delivered_min:>8.2%}{extra} {row.failed_attempts:>10.1f} "
            f"{row.dead:>8.1f}  {'meets' if row.meets else 'misses'}")


def _csv_text(result: PlanResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    percentile_columns = [f"t{p:g}_s" for p in result.goal.percentiles]
    writer.writerow([*_COLUMNS, *percentile_columns])
    for row in result.rows:
        values = row.to_dict()
        times = values["percentile_times_s"]
        assert isinstance(times, list)
        writer.writerow([_cell(values[column]) for column in _COLUMNS]
                        + [_cell(t) for t in times])
    return buffer.getvalue().rstrip("\n")


def _cell(value: object) -> object:
    return "" if value is None else value


def _check_plot_path(parser: argparse.ArgumentParser, path: Path) -> None:
    """Refuse, before any work, a plot file that could not be written."""
    if path.suffix.lower() not in PLOT_FORMATS:
        parser.error(f"argument --plot: the file name must end in {', '.join(PLOT_FORMATS)} "
                     f"(got {str(path)!r})")
    directory = path.parent
    if not directory.is_dir():
        parser.error(f"argument --plot: no such directory {str(directory)!r}")
    if path.is_dir():
        parser.error(f"argument --plot: {str(path)!r} is a directory")
    if not os.access(directory, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        parser.error(f"argument --plot: cannot write {str(path)!r}")
    # Permissions do not tell it all (root passes them; /sys and /proc refuse new files,
    # a read-only mount refuses everything): open it as the plot will, and leave nothing.
    existed = path.exists()
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        parser.error(f"argument --plot: cannot write {str(path)!r}: {exc.strerror or exc}")
    if not existed:
        path.unlink(missing_ok=True)


def _import_pyplot(parser: argparse.ArgumentParser) -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display is needed or wanted
        import matplotlib.pyplot as pyplot
    except ImportError:
        parser.exit(ExitCode.ERROR, f"{parser.prog}: error: --plot needs matplotlib: "
                                    "pip install 'sms_sim[plot]'\n")
    return pyplot


def _plot(pyplot: Any, result: PlanResult, path: Path) -> None:
    figure = draw(pyplot, result)
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def draw(pyplot: Any, result: PlanResult) -> Any:
    """A figure of the time to deliver the goal against senders (mean and bound, integer
    ticks), the deadline and the answer, titled with the goal."""
    from matplotlib.ticker import MaxNLocator

    goal = result.goal
    rows = [row for row in result.rows if not math.isinf(row.time_mean_s)]
    figure, axes = pyplot.subplots(figsize=(8, 5))
    axes.plot([row.senders for row in rows], [row.time_mean_s for row in rows], marker="o",
              label=f"time to deliver {_percent(goal.deliver)} (mean of runs)")
    bounded = [row for row in rows if row.upper_s is not None and not math.isinf(row.upper_s)]
    axes.plot([row.senders for row in bounded], [row.upper_s for row in bounded],
              linestyle="--", marker="^", label=f"{_percent(goal.level)} prediction bound")
    axes.axhline(goal.deadline_s, color="red", linestyle=":",
                 label=f"deadline {goal.deadline_s:g} s")
    if result.min_senders is not None:
        axes.axvline(result.min_senders, color="green", linestyle="-.",
                     label=f"answer: {result.min_senders} senders")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("senders")
    axes.set_ylabel("seconds from the start")
    axes.set_title(f"Delivering {_percent(goal.deliver)} of {result.messages} messages "
                   f"within {goal.deadline_s:g} s")
    axes.legend()
    return figure
