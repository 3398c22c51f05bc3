"""Pieces every command-line entry point shares: exit codes, the one-line-error parser,
argument types that quote the bad value, and the signal recorder.

Only CLI modules import this; the library never exits, prints or touches signals.
"""

from __future__ import annotations

import argparse
import enum
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import NoReturn

from sms_sim.report import StopReason

__all__ = [
    "ExitCode",
    "OneLineParser",
    "SignalRecorder",
    "finite_float",
    "non_negative_float",
    "positive_float",
    "probability",
    "int_at_least",
    "silence_stdout",
    "DEFAULT_DB",
    "base_parser",
    "configure_logging",
    "exit_code",
]


class ExitCode(enum.IntEnum):
    """The process exit codes of every command (README: "Exit codes")."""

    OK = 0
    ERROR = 1
    USAGE = 2
    SHUTDOWN_TIMEOUT = 3
    SIGINT = 128 + signal.SIGINT  # 130
    SIGPIPE = 128 + signal.SIGPIPE  # 141: the reader of our output went away
    SIGTERM = 128 + signal.SIGTERM  # 143


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is exactly one line (no usage block) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


# --- argument types: each raises ArgumentTypeError quoting the bad value -----------------


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number (got {text!r})")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (got {text!r})")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0 (got {text!r})")
    return value


def probability(text: str) -> float:
    value = finite_float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1] (got {text!r})")
    return value


def int_at_least(minimum: int, maximum: int = 2**63 - 1) -> Callable[[str], int]:
    """An argparse type for an integer in [minimum, maximum]; the default maximum is the
    largest integer SQLite stores, so no id or count reaches a store it cannot hold."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum} (got {text!r})")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum} (got {text!r})")
        return value

    parse.__name__ = "integer"
    return parse


class SignalRecorder:
    """Counts SIGINT/SIGTERM; the handler only records (setting an Event there can deadlock).

    The joining thread polls ``count``: the first signal stops the run gracefully, the
    second skips the grace period. Previous handlers are restored by ``restore``.
    """

    def __init__(self) -> None:
        self.count = 0
        self.first: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.first is None:
            self.first = signum
        self.count += 1

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()


def silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush is quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


DEFAULT_DB = "sms_sim.db"


def base_parser(prog: str, description: str) -> OneLineParser:
    """The options every store-backed command takes: the database and verbosity."""
    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("--db", default=DEFAULT_DB, metavar="DB",
                        help="database path or URL (sqlite:///path, memory:; "
                             f"default ./{DEFAULT_DB})")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging on stderr")
    return parser


def configure_logging(verbose: bool) -> None:
    """Diagnostics to stderr: DEBUG with ``--verbose``, otherwise warnings and errors only."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(name)s: %(levelname)s: %(message)s", stream=sys.stderr)


def exit_code(stopped_by: StopReason, threads_alive: Sequence[str],
              signals: SignalRecorder) -> ExitCode:
    """The exit code of a run (simulation or worker) that ended for ``stopped_by``."""
    if stopped_by is StopReason.OUTPUT_CLOSED:
        return ExitCode.SIGPIPE
    if stopped_by is StopReason.SIGNAL:
        return ExitCode.SIGTERM if signals.first == signal.SIGTERM else ExitCode.SIGINT
    if stopped_by is StopReason.ERROR:
        return ExitCode.ERROR
    if threads_alive:
        return ExitCode.SHUTDOWN_TIMEOUT
    return ExitCode.OK
