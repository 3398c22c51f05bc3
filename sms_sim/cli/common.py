"""Pieces every command-line entry point shares: exit codes, the one-line-error parser,
argument types that quote the bad value, the signal recorder, and product output that
survives its reader going away (``emit``, ``json_text``).

Only CLI modules import this; the library never exits, prints or touches signals.
"""

from __future__ import annotations

import argparse
import enum
import errno
import io
import json
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from sms_sim.report import StopReason

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

__all__ = [
    "ExitCode",
    "OneLineParser",
    "DefaultsHelpFormatter",
    "OutputClosedError",
    "emit",
    "flush_stdout",
    "json_text",
    "SignalRecorder",
    "finite_float",
    "non_negative_float",
    "positive_float",
    "probability",
    "int_at_least",
    "silence_stdout",
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


class Terminated(BaseException):
    """SIGTERM, raised like ``KeyboardInterrupt`` for SIGINT (``interruptible``), so what a
    command was doing unwinds: a large submit deletes its half-loaded message instead of
    leaving it to hold its idempotency key for ``ABANDONED_LOAD_S``."""


def stop_code(stop: BaseException) -> ExitCode:
    """The exit code of a command ended by ``KeyboardInterrupt`` or ``Terminated``."""
    return ExitCode.SIGTERM if isinstance(stop, Terminated) else ExitCode.SIGINT


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` in the main thread while the block runs. The commands
    that stop gracefully on a signal (worker, serve, the simulation) install their own
    handlers over it for their run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is exactly one line (no usage block) and exit 2, and help
    that cannot be written to stdout is an ``OutputClosedError`` (argparse would drop the
    failure and exit 0 with the help lost)."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        if not message:
            return
        target = file or sys.stderr
        to_stdout = target is sys.stdout
        try:
            target.write(message)
            if to_stdout:
                sys.stdout.flush()
        except (OSError, ValueError) as exc:
            if to_stdout:
                raise OutputClosedError(str(exc) or type(exc).__name__) from exc


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Adds "(default X)" to an option's help unless the help already states its default,
    so every option shows what it does when left out (issue 11, item 18)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        unstated = default is None or default is False or default == [] \
            or default == argparse.SUPPRESS
        if "default" in text or unstated or not action.option_strings:
            return text
        return f"{text} (default %(default)s)"


# --- product output ---------------------------------------------------------------------


class OutputClosedError(Exception):
    """stdout could not be written: its reader went away (a pipe into ``head``) or the
    disk is full. Not an ``SmsSimError``: the work was done, only telling about it failed,
    and ``cli.main`` turns it into exit 141 without a traceback (and one line on stderr
    unless the reader went away, or ``reported`` says the command said it already)."""

    reported = False


class _ClosedOutput(io.TextIOBase):
    """Standard output when the process started with it closed (``>&-``): Python sets
    ``sys.stdout`` to None then, and ``print`` to None writes nothing, so a submit
    committed, then ended on a traceback and exit 1 at the flush without saying its id
    (a retrying script would submit again). Every write here fails as a closed pipe's
    does, so each command takes its path for output that cannot be written."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "standard output is closed")


def guard_closed_stdout() -> None:
    """Make a closed standard output one whose writes fail (``_ClosedOutput``)."""
    if sys.stdout is None:
        sys.stdout = _ClosedOutput()


def emit(text: str) -> None:
    """Print ``text`` and a newline on stdout and flush at once, so a failure to write is
    seen here (as ``OutputClosedError``), where the command can still react to it, rather
    than at interpreter exit."""
    try:
        print(text, file=sys.stdout, flush=True)
    except (OSError, ValueError) as exc:  # ValueError: stdout already closed
        raise OutputClosedError(str(exc) or type(exc).__name__) from exc


def flush_stdout() -> None:
    """Flush stdout; ``OutputClosedError`` if that fails (see ``emit``)."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError) as exc:
        raise OutputClosedError(str(exc) or type(exc).__name__) from exc


def json_text(value: object) -> str:
    """``value`` as strict JSON: a non-finite float (``inf``, ``nan``) becomes ``null``,
    because ``Infinity`` and ``NaN`` are not JSON and break the readers that consume it."""
    return json.dumps(_finite(value), allow_nan=False)


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


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
