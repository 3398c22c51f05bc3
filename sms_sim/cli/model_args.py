"""Command-line pieces that describe the model: senders, arrivals, retries, and their files.

Shared by the simulator command and ``plan`` so both accept the same flags and files with
the same one-line errors; the dispatch ``worker`` takes the sender, carrier, error-class and
receipt flags from here too (``add_*_arguments``), so its simulated provider is described in
the same words. File loaders raise ``ConfigError``; argument types raise
``argparse.ArgumentTypeError`` quoting the bad value.
"""

from __future__ import annotations

import argparse
import csv
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TextIO

from dataclasses import dataclass

from sms_sim.cli.common import int_at_least, non_negative_float, positive_float, probability
from sms_sim.cli.when import duration_argument
from sms_sim.config import (
    SENDER_TYPE_RATES_PER_S,
    SENDERS_MAX,
    ArrivalKind,
    Arrivals,
    Content,
    Jitter,
    ReceiptModel,
    RetryPolicy,
    SenderConfig,
    SenderType,
    ServiceDistribution,
)
from sms_sim.errors import ConfigError

__all__ = [
    "sender_spec",
    "load_senders_file",
    "load_schedule_file",
    "arrivals_spec",
    "add_model_arguments",
    "retry_from_args",
    "sender_from_args",
    "sender_count",
    "SmsArgs",
    "sms_from_args",
    "receipts_from_args",
    "receipt_flags_given",
    "add_sender_model_arguments",
    "add_carrier_arguments",
    "add_error_class_arguments",
    "add_receipt_arguments",
    "TEXT_FILE_BYTES_MAX",
    "RETRY_AFTER_DEFAULT_S",
]

# An argument group (or a parser): what the ``add_*_arguments`` functions add flags to.
Group = argparse._ActionsContainer

TEXT_FILE_BYTES_MAX = 64 * 1024  # far above 255 segments of any encoding
# Far above 100,000 senders written one table each; what is bigger is not a senders file
# (``--senders-file /dev/zero`` read until memory ran out).
SENDERS_FILE_BYTES_MAX = 32 * 1024 * 1024
SCHEDULE_LINE_CHARS_MAX = 4096  # a time and a count; a longer line is not a schedule
# A simulated throttle's retry-after when --retry-after is not given (None in the
# namespace, so a command can tell whether it was: the worker refuses it with --provider).
RETRY_AFTER_DEFAULT_S = 1.0

SENDERS_PER_TABLE_MAX = SENDERS_MAX
_SENDER_FILE_KEYS = {"mean", "deviation", "failure_rate", "count", "distribution", "rate_limit"}
_DISTRIBUTIONS = [d.value for d in ServiceDistribution]


def sender_spec(text: str) -> SenderConfig:
    """``MEAN,DEV,RATE[,DISTRIBUTION[,RATE_LIMIT]]`` -> SenderConfig."""
    parts = text.split(",")
    if not 3 <= len(parts) <= 5:
        raise argparse.ArgumentTypeError(
            f"expected MEAN,DEV,RATE[,DISTRIBUTION[,RATE_LIMIT]] (got {text!r})"
        )
    try:
        mean, deviation = non_negative_float(parts[0]), non_negative_float(parts[1])
        rate = probability(parts[2])
        distribution = parts[3] if len(parts) > 3 else ServiceDistribution.UNIFORM
        limit = positive_float(parts[4]) if len(parts) > 4 else None
        return SenderConfig(mean, deviation, rate, distribution, limit)  # type: ignore[arg-type]
    except (argparse.ArgumentTypeError, ConfigError) as exc:
        raise argparse.ArgumentTypeError(f"{exc} in {text!r}") from None


def load_senders_file(path: Path) -> list[SenderConfig]:
    """Read ``[[sender]]`` tables from TOML: mean, deviation, failure_rate, and optionally
    count, distribution and rate_limit. Raises ``ConfigError`` with a one-line reason."""
    data = _read_senders_toml(path)
    unknown_top = set(data) - {"sender"}
    if unknown_top:
        raise ConfigError(f"senders file {str(path)!r}: unknown key {sorted(unknown_top)[0]!r}")
    tables = data.get("sender")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"senders file {str(path)!r} has no [[sender]] tables")
    senders: list[SenderConfig] = []
    for number, table in enumerate(tables, start=1):
        where = f"senders file {str(path)!r}, sender {number}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table")
        unknown = set(table) - _SENDER_FILE_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        missing = [key for key in ("mean", "deviation", "failure_rate") if key not in table]
        if missing:
            raise ConfigError(f"{where}: missing key {missing[0]!r}")
        count = table.get("count", 1)
        if (isinstance(count, bool) or not isinstance(count, int)
                or not 1 <= count <= SENDERS_PER_TABLE_MAX):
            raise ConfigError(f"{where}: count must be an integer in 1..{SENDERS_PER_TABLE_MAX} "
                              f"(got {count!r})")
        try:
            sender = SenderConfig(
                table["mean"],
                table["deviation"],
                table["failure_rate"],
                table.get("distribution", ServiceDistribution.UNIFORM),
                table.get("rate_limit"),
            )
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        if len(senders) + count > SENDERS_MAX:  # before the table is multiplied out
            raise ConfigError(f"senders file {str(path)!r} holds more than {SENDERS_MAX} "
                              "senders in all")
        senders.extend([sender] * count)
    return senders


def _read_senders_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as handle:
            raw = handle.read(SENDERS_FILE_BYTES_MAX + 1)
        if len(raw) > SENDERS_FILE_BYTES_MAX:
            raise ConfigError(f"senders file {str(path)!r} is over {SENDERS_FILE_BYTES_MAX} "
                              "bytes")
        return tomllib.loads(raw.decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read senders file {str(path)!r}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"senders file {str(path)!r} is not valid TOML: {exc}") from exc


def sender_count(text: str) -> int:
    """An argparse type for a number of senders: an integer in 0..``SENDERS_MAX``, checked
    before any list of that many senders is built."""
    return int_at_least(0, SENDERS_MAX)(text)


_SCHEDULE_HEADER = ["time_s", "count"]


def load_schedule_file(path: Path) -> tuple[tuple[float, int], ...]:
    """Read ``time_s,count`` rows (CSV; blank lines and ``#`` comments skipped, and a first
    row that is that header, as a spreadsheet exports it)."""
    rows: list[tuple[float, int]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            for line_number, row in enumerate(csv.reader(_bounded_lines(handle, path)),
                                              start=1):
                if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                    continue
                if not rows and [cell.strip().lower() for cell in row] == _SCHEDULE_HEADER:
                    continue
                where = f"schedule file {str(path)!r}, line {line_number}"
                if len(row) != 2:
                    raise ConfigError(f"{where}: expected time_s,count (got {','.join(row)!r})")
                try:
                    at_s = non_negative_float(row[0].strip())
                    count = int_at_least(0)(row[1].strip())
                except argparse.ArgumentTypeError as exc:
                    raise ConfigError(f"{where}: {exc}") from None
                rows.append((at_s, count))
    except OSError as exc:
        raise ConfigError(f"cannot read schedule file {str(path)!r}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"schedule file {str(path)!r} is not UTF-8 text: {exc}") from exc
    if not rows:
        raise ConfigError(f"schedule file {str(path)!r} has no time_s,count rows")
    return tuple(rows)


def _bounded_lines(handle: TextIO, path: Path) -> Iterator[str]:
    """The lines of a schedule file, refusing one over ``SCHEDULE_LINE_CHARS_MAX`` before
    it is read whole (``schedule:/dev/zero`` is one endless line)."""
    while line := handle.readline(SCHEDULE_LINE_CHARS_MAX + 1):
        if len(line) > SCHEDULE_LINE_CHARS_MAX:
            raise ConfigError(f"schedule file {str(path)!r} has a line over "
                              f"{SCHEDULE_LINE_CHARS_MAX} characters: not time_s,count rows")
        yield line


def arrivals_spec(text: str) -> Arrivals:
    """``burst``, ``poisson:RATE`` or ``schedule:FILE`` -> Arrivals (file read here)."""
    kind, _, value = text.partition(":")
    try:
        if kind == ArrivalKind.BURST and not value:
            return Arrivals()
        if kind == ArrivalKind.POISSON and value:
            return Arrivals(kind=ArrivalKind.POISSON, rate_per_s=positive_float(value))
        if kind == ArrivalKind.SCHEDULE and value:
            return Arrivals(kind=ArrivalKind.SCHEDULE, schedule=load_schedule_file(Path(value)))
    except (argparse.ArgumentTypeError, ConfigError) as exc:
        raise argparse.ArgumentTypeError(f"{exc} in {text!r}") from None
    raise argparse.ArgumentTypeError(
        f"expected burst, poisson:RATE or schedule:FILE (got {text!r})"
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Distribution, rate limit, arrivals and retry flags (the same in both modes)."""
    model = parser.add_argument_group("model")
    add_sender_model_arguments(model)
    model.add_argument("--arrivals", type=arrivals_spec, default=Arrivals(),
                       metavar="burst|poisson:RATE|schedule:FILE",
                       help="how messages arrive (default burst: all at t=0); a schedule "
                            "file has time_s,count lines")
    _add_sms_arguments(parser)
    retry = parser.add_argument_group("retries")
    retry.add_argument("--max-attempts", type=int_at_least(1), default=1, metavar="K",
                       help="attempts per message before it is dead-lettered "
                            "(default 1: no retry)")
    retry.add_argument("--backoff-base", type=non_negative_float, default=1.0, metavar="SECONDS",
                       help="delay before the first retry (default 1.0)")
    retry.add_argument("--backoff-factor", type=positive_float, default=2.0, metavar="F",
                       help="each further retry waits F times longer (default 2.0)")
    retry.add_argument("--backoff-cap", type=non_negative_float, default=300.0,
                       metavar="SECONDS", help="longest delay before a retry (default 300)")
    retry.add_argument("--jitter", choices=[j.value for j in Jitter], default="full",
                       help="randomise retry delays: full (0..delay), equal (delay/2..delay) "
                            "or none (default full)")


def _valid_for(text: str) -> float:
    seconds = duration_argument(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive duration (got {text!r})")
    return seconds


def _text(text: str) -> str:
    try:
        return str(Content(text=text).text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_sender_model_arguments(group: Group) -> None:
    """``--distribution`` and ``--rate-limit``: how the identical senders send (the
    simulator, ``plan`` and the dispatch worker)."""
    group.add_argument("--distribution", choices=_DISTRIBUTIONS, default="uniform",
                       help="send-time distribution of the identical senders (default "
                            "uniform; lognormal takes the deviation as its standard "
                            "deviation)")
    group.add_argument("--rate-limit", type=positive_float, metavar="PER_S",
                       help="most sends each identical sender may start per second (in "
                            "segments per second when segments are counted)")


def add_carrier_arguments(group: Group) -> None:
    """``--sender-type`` and ``--per-segment``: the carrier's side of a send, in segments."""
    group.add_argument("--sender-type", choices=[t.value for t in SenderType],
                       help="the identical senders are this kind of number: rate limit "
                            + ", ".join(f"{t} {r:g}" for t, r in SENDER_TYPE_RATES_PER_S.items())
                            + " segments/s unless --rate-limit says otherwise; counts segments")
    group.add_argument("--per-segment", type=non_negative_float, metavar="SECONDS",
                       help="add this much send time per segment (counts segments)")


def add_error_class_arguments(group: Group) -> None:
    """``--permanent-rate``, ``--throttle-rate`` and ``--retry-after``: the simulated error
    classes (the transient rate is each command's own ``failure_rate``)."""
    group.add_argument("--permanent-rate", type=probability, default=0.0, metavar="P",
                       help="probability a send fails for good (dead at once, never retried); "
                            "the failure rate is then the transient share (default 0)")
    group.add_argument("--throttle-rate", type=probability, default=0.0, metavar="P",
                       help="probability a send is throttled: retried no sooner than "
                            "--retry-after, and the sender pauses that long (default 0)")
    group.add_argument("--retry-after", type=non_negative_float, metavar="SECONDS",
                       help="the retry-after a throttled send is given (default "
                            f"{RETRY_AFTER_DEFAULT_S:g})")


def add_receipt_arguments(group: Group) -> None:
    """``--receipts`` and the receipt model's flags (``receipts_from_args`` reads them)."""
    group.add_argument("--receipts", action="store_true",
                       help="draw a delivery receipt after each accepted send (lognormal "
                            "delay; implied by the receipt flags below)")
    defaults = ReceiptModel()
    group.add_argument("--receipt-median", type=positive_float, metavar="SECONDS",
                       help=f"median receipt delay (default {defaults.median_s:g})")
    group.add_argument("--receipt-sigma", type=non_negative_float, metavar="S",
                       help=f"lognormal shape of the delay (default {defaults.sigma:g})")
    group.add_argument("--undelivered-rate", type=probability, metavar="P",
                       help=f"share of receipts saying undelivered (default "
                            f"{defaults.undelivered_rate:g})")
    group.add_argument("--lost-rate", type=probability, metavar="P",
                       help=f"share of sends whose receipt never comes (default "
                            f"{defaults.lost_rate:g})")


def _add_sms_arguments(parser: argparse.ArgumentParser) -> None:
    """The SMS model's flags (issue 14, docs/sms-model.md): all off by default."""
    sms = parser.add_argument_group(
        "SMS model (segments, carriers, errors, receipts; off by default)")
    text = sms.add_mutually_exclusive_group()
    text.add_argument("--text", type=_text, metavar="TEXT",
                      help="every message says TEXT (any Unicode): its encoding and segments "
                           "drive the model")
    text.add_argument("--text-file", type=Path, metavar="FILE",
                      help="every message says this UTF-8 file's text (one trailing newline "
                           "dropped)")
    sms.add_argument("--count-segments", action="store_true",
                     help="count the segments of each generated text (1-2; implied by the "
                          "other segment flags); without any, every message is 1 segment")
    add_carrier_arguments(sms)
    add_error_class_arguments(sms)
    sms.add_argument("--valid-for", type=_valid_for, metavar="DURATION",
                     help="validity of each message from its arrival (90s, 10m, 2h): one not "
                          "sent by then expires, never sent late")
    add_receipt_arguments(sms)


@dataclass(frozen=True, slots=True, kw_only=True)
class SmsArgs:
    """The run-wide part of the SMS flags, for ``SimulationConfig``."""

    content: Content | None
    receipts: ReceiptModel | None
    valid_for_s: float | None


def _read_text_file(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(TEXT_FILE_BYTES_MAX + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read text file {str(path)!r}: {exc.strerror}") from exc
    if len(data) > TEXT_FILE_BYTES_MAX:
        raise ConfigError(f"text file {str(path)!r} is over {TEXT_FILE_BYTES_MAX} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"text file {str(path)!r} is not UTF-8 text: {exc}") from exc
    text = text[:-1] if text.endswith("\n") else text
    try:
        return str(Content(text=text).text)
    except ConfigError as exc:
        raise ConfigError(f"text file {str(path)!r}: {exc}") from exc


def sms_from_args(args: argparse.Namespace) -> SmsArgs:
    """Content, receipts and validity from the flags. Raises ``ConfigError``."""
    text = args.text
    if args.text_file is not None:
        text = _read_text_file(args.text_file)
    counted = (text is not None or args.count_segments or args.per_segment is not None
               or args.sender_type is not None)
    return SmsArgs(
        content=Content(text=text) if counted else None,
        receipts=receipts_from_args(args),
        valid_for_s=args.valid_for,
    )


def receipt_flags_given(args: argparse.Namespace) -> list[str]:
    """The receipt flags given on the command line, as typed (``--receipts`` first)."""
    given = ["--receipts"] if args.receipts else []
    return given + [flag for flag, value in (
        ("--receipt-median", args.receipt_median), ("--receipt-sigma", args.receipt_sigma),
        ("--undelivered-rate", args.undelivered_rate), ("--lost-rate", args.lost_rate))
        if value is not None]


def receipts_from_args(args: argparse.Namespace) -> ReceiptModel | None:
    """The receipt model the flags ask for (``--receipts`` or any receipt flag; the model's
    defaults for the rest), or None. Raises ``ConfigError`` (rates summing over 1)."""
    receipt_flags = {"median_s": args.receipt_median, "sigma": args.receipt_sigma,
                     "undelivered_rate": args.undelivered_rate, "lost_rate": args.lost_rate}
    given = {name: value for name, value in receipt_flags.items() if value is not None}
    return ReceiptModel(**given) if args.receipts or given else None


def retry_from_args(args: argparse.Namespace) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=args.max_attempts,
        base_s=args.backoff_base,
        factor=args.backoff_factor,
        cap_s=args.backoff_cap,
        jitter=Jitter(args.jitter),
    )


def sender_from_args(
    args: argparse.Namespace, mean_s: float, deviation_s: float, failure_rate: float
) -> SenderConfig:
    """The identical senders' config from the positional values plus model flags
    (``--sender-type`` gives the rate limit unless ``--rate-limit`` does)."""
    rate_limit = args.rate_limit
    if rate_limit is None and args.sender_type is not None:
        rate_limit = SENDER_TYPE_RATES_PER_S[SenderType(args.sender_type)]
    return SenderConfig(
        mean_s,
        deviation_s,
        failure_rate,
        ServiceDistribution(args.distribution),
        rate_limit,
        per_segment_s=args.per_segment or 0.0,
        permanent_rate=args.permanent_rate,
        throttle_rate=args.throttle_rate,
        retry_after_s=(RETRY_AFTER_DEFAULT_S if args.retry_after is None
                       else args.retry_after),
    )


# The model's words for what the options set, as its refusals name them (``config``), and
# the options' own: "--backoff-cap must be >= --backoff-base" says what to change,
# "cap must be >= base" did not. Subjects and compared names are replaced, nothing else.
MODEL_OPTIONS: Mapping[str, str] = {
    "monitor_interval": "--interval", "duration": "--duration", "base": "--backoff-base",
    "factor": "--backoff-factor", "cap": "--backoff-cap", "jitter": "--jitter",
    "max_attempts": "--max-attempts", "valid_for": "--valid-for",
    "per_segment": "--per-segment", "retry_after": "--retry-after",
    "permanent_rate": "--permanent-rate", "throttle_rate": "--throttle-rate",
    "rate_limit": "--rate-limit", "receipt median": "--receipt-median",
    "receipt sigma": "--receipt-sigma", "undelivered rate": "--undelivered-rate",
    "lost rate": "--lost-rate",
}


# The identical senders' fields, as ``plan`` and ``worker`` spell their options (the
# simulator takes them as positional arguments, named as they are).
SENDER_OPTIONS: Mapping[str, str] = {
    **MODEL_OPTIONS, "mean": "--mean", "deviation": "--deviation",
    "failure_rate": "--failure-rate",
}


def in_option_words(message: str, options: Mapping[str, str] = MODEL_OPTIONS) -> str:
    """``message`` (a ``ConfigError``'s) with the model's field names as the options
    that set them: a name starting the message or a clause, or compared against."""
    names = "|".join(re.escape(name) for name in sorted(options, key=len, reverse=True))
    pattern = re.compile(rf"(^|: |[<>]= |\+ )({names})(?=$| must| \(|[ ,)]| \+)")
    return pattern.sub(lambda found: found.group(1) + options[found.group(2)], message)
