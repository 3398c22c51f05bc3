"""The simulation command (the default one): ``start.py 10000 4 0.01 0.001 0.2 [--virtual]``.

Parses, wires a threaded or virtual run, installs the signal handlers for it, prints the
report and chooses the exit code. Every bad input becomes one ``<prog>: error: ...`` line on
stderr and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from sms_sim.cli.common import (
    ExitCode,
    OneLineParser,
    SignalRecorder,
    configure_logging,
    emit,
    exit_code,
    int_at_least,
    json_text,
    non_negative_float,
    positive_float,
    probability,
    silence_stdout,
)
from sms_sim.cli.model_args import (
    add_model_arguments,
    in_option_words,
    load_senders_file,
    retry_from_args,
    sender_count,
    sender_from_args,
    sender_spec,
    sms_from_args,
)
from sms_sim.config import (
    MESSAGES_MAX,
    TIME_MAX_S,
    SenderConfig,
    SimulationConfig,
    check_sender_total,
)
from sms_sim.errors import ConfigError, SmsSimError
from sms_sim.policy import capacity_per_s
from sms_sim.report import StopReason
from sms_sim.sim.threaded.run import run
from sms_sim.sim.virtual.run import simulate

__all__ = ["main", "build_parser"]

log = logging.getLogger(__name__)

DEFAULT_POSITIONALS = ("10000", "4", "0.01", "0.001", "0.2")
_POSITIONAL_NAMES = (
    "num_messages",
    "num_senders",
    "mean_processing_time",
    "max_deviation",
    "failure_rate",
)


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description=(
            "Simulate sending SMS messages: a producer queues random messages, N sender "
            "threads send them with the given latency and failure rate, and a monitor "
            "prints progress and a final report. With no positional arguments it runs "
            f"the defaults {' '.join(DEFAULT_POSITIONALS)}."
        ),
        epilog=(
            "exit codes: 0 done (simulated failures included), 1 a worker thread failed, "
            "2 bad usage, 3 threads did not stop in time, 130 stopped by SIGINT, "
            "141 output closed, 143 stopped by SIGTERM"
        ),
    )
    positional = parser.add_argument_group("simulation (all five, or none for the defaults)")
    positional.add_argument("num_messages", nargs="?", type=int_at_least(0, MESSAGES_MAX),
                            help="messages to produce (default 10000)")
    positional.add_argument("num_senders", nargs="?", type=sender_count,
                            help="identical sender threads (default 4)")
    positional.add_argument("mean_processing_time", nargs="?", type=non_negative_float,
                            help="mean send time per message, seconds (default 0.01)")
    positional.add_argument("max_deviation", nargs="?", type=non_negative_float,
                            help="send time is uniform in mean +/- this, seconds (default 0.001)")
    positional.add_argument("failure_rate", nargs="?", type=probability,
                            help="probability a send fails, 0-1 (default 0.2)")
    parser.add_argument("--sender", action="append", type=sender_spec, default=[],
                        metavar="MEAN,DEV,RATE[,DIST[,LIMIT]]",
                        help="add one sender with its own settings (repeatable)")
    parser.add_argument("--senders-file", type=Path, metavar="FILE.toml",
                        help="add the senders listed as [[sender]] tables (mean, deviation, "
                             "failure_rate; optional count, distribution, rate_limit)")
    parser.add_argument("--virtual", action="store_true",
                        help="run on a simulated clock: same messages and outcomes for a seed, "
                             "in seconds of wall time whatever the simulated length")
    parser.add_argument("--interval", type=positive_float, metavar="SECONDS",
                        help="seconds between progress lines (default 1.0; with --virtual, "
                             "simulated seconds, about a tenth of the expected makespan)")
    parser.add_argument("--seed", type=int_at_least(0), metavar="N",
                        help="seed for messages and send outcomes (default: random, "
                             "printed); the same outcomes with --virtual, on threads the "
                             "scheduler decides which sender takes which message")
    parser.add_argument("--duration", type=positive_float, metavar="SECONDS",
                        help="stop after this many seconds (simulated with --virtual); "
                             "the rest is reported unsent")
    parser.add_argument("--json", action="store_true",
                        help="print the final report as one JSON object on stdout; "
                             "progress goes to stderr")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="no progress lines, only the final report")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging on stderr")
    add_model_arguments(parser)
    return parser


def _config_from_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> SimulationConfig:
    given = [getattr(args, name) for name in _POSITIONAL_NAMES]
    if all(value is None for value in given):
        given = [
            action.type(text) if callable(action.type) else text
            for action, text in zip(_positional_actions(parser), DEFAULT_POSITIONALS, strict=True)
        ]
    elif any(value is None for value in given):
        count = sum(value is not None for value in given)
        parser.error(
            f"expected 5 positional arguments ({' '.join(_POSITIONAL_NAMES)}) or none "
            f"(got {count})"
        )
    num_messages, num_senders, mean_s, deviation_s, failure_rate = given
    senders: list[SenderConfig] = []
    try:
        # Zero identical senders is allowed only when --sender/--senders-file add some; the
        # positional settings are still validated so a typo is not silently ignored.
        identical = sender_from_args(args, mean_s, deviation_s, failure_rate)
        sms = sms_from_args(args)
        from_file = [] if args.senders_file is None else load_senders_file(args.senders_file)
        # One cap on the total, checked before the identical senders are multiplied out.
        check_sender_total(num_senders + len(args.sender) + len(from_file))
        senders.extend([identical] * num_senders)
        senders.extend(args.sender)
        senders.extend(from_file)
        if not senders:
            raise ConfigError(f"num_senders must be >= 1 (got {num_senders})")
        config = SimulationConfig(
            num_messages=num_messages,
            senders=senders,
            monitor_interval_s=args.interval or 1.0,
            seed=args.seed,
            duration_s=args.duration,
            arrivals=args.arrivals,
            retry=retry_from_args(args),
            content=sms.content,
            receipts=sms.receipts,
            valid_for_s=sms.valid_for_s,
        )
        if args.virtual and args.interval is None:
            config = replace(config, monitor_interval_s=_auto_interval_s(config))
        return config
    except ConfigError as exc:
        parser.error(in_option_words(str(exc)))


def _auto_interval_s(config: SimulationConfig) -> float:
    """About a tenth of the expected makespan, rounded to 1, 2 or 5 times a power of ten
    (at most ``TIME_MAX_S``, however long the run)."""
    fixed = None if config.content is None else config.content.fixed
    expected_s = config.num_messages / capacity_per_s(config.senders,
                                                      1 if fixed is None else fixed.count)
    if config.arrivals.rate_per_s:
        expected_s = max(expected_s, config.num_messages / config.arrivals.rate_per_s)
    if config.arrivals.schedule:
        expected_s = max(expected_s, config.arrivals.schedule[-1][0])
    target = max(expected_s / 10, 1e-3)
    power = 10.0 ** math.floor(math.log10(target))
    rounded = next(step * power for step in (1, 2, 5, 10) if step * power >= target)
    return min(rounded, TIME_MAX_S)


def _positional_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    by_dest = {action.dest: action for action in parser._actions}
    return [by_dest[name] for name in _POSITIONAL_NAMES]


def main(argv: Sequence[str], *, prog: str) -> int:
    """Run the simulation command and return the process exit code (see ``ExitCode``)."""
    parser = build_parser(prog)
    args = parser.parse_args(list(argv))
    config = _config_from_args(parser, args)
    configure_logging(args.verbose)
    signals = SignalRecorder()
    signals.install()
    try:
        report = (simulate if args.virtual else run)(
            config,
            output=sys.stderr if args.json else sys.stdout,
            show_progress=not args.quiet,
            stop_requests=lambda: signals.count,
        )
        if args.json:
            emit(json_text(report.to_dict()))
    except ConfigError as exc:  # refused before the run could start (too many threads)
        log.debug("run refused", exc_info=True)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except SmsSimError as exc:
        log.debug("run failed", exc_info=True)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return ExitCode.ERROR
    finally:
        signals.restore()
    if report.stopped_by is StopReason.OUTPUT_CLOSED:
        silence_stdout()
    return exit_code(report.stopped_by, report.threads_alive, signals)
