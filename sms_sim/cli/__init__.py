"""The command line: one module per command, shared parts in ``common``.

This package is the only place that touches ``sys.argv``, signals, logging configuration,
printing and exit codes. ``main`` routes the first argument to its command module, imported
only when chosen, so starting the simulator never pays for (or depends on) the others.

``main`` is also the one place that deals with output that cannot be written (a pipe into
``head`` closed early, a full disk): whatever command was running, it ends with exit 141
and no traceback.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from sms_sim.cli.common import (
    ExitCode,
    OutputClosedError,
    Terminated,
    emit,
    flush_stdout,
    guard_closed_stdout,
    interruptible,
    silence_stdout,
    stop_code,
)
from sms_sim.output import reader_gone
from sms_sim.version import __version__

__all__ = ["main", "console_main", "ExitCode", "COMMANDS"]


class Command(NamedTuple):
    module: str  # with ``main(argv, *, prog) -> int``
    summary: str  # one line for the top-level --help


_MESSAGES, _INSPECTION = "sms_sim.cli.messages", "sms_sim.cli.inspection"

# No command name: the simulation, whose first positional argument is a number.
COMMANDS: dict[str, Command] = {
    "plan": Command("sms_sim.cli.plan", "how many senders meet a deadline, with confidence"),
    "init": Command(_MESSAGES, "create an empty dispatch database"),
    "submit": Command(_MESSAGES, "queue a message for its recipients, now or at a time"),
    "edit": Command(_MESSAGES, "change a message that has not started going out"),
    "cancel": Command(_MESSAGES, "stop a scheduled or dispatching message"),
    "show": Command(_INSPECTION, "one message: status, outcome, progress, ETA"),
    "list": Command(_INSPECTION, "messages, newest first"),
    "deliveries": Command(_INSPECTION, "one message's recipients: sent, retrying, dead..."),
    "dead": Command(_INSPECTION, "deliveries that used up their attempts; requeue them"),
    "check": Command(_INSPECTION, "check the database file for damage"),
    "worker": Command("sms_sim.cli.worker", "send due deliveries until stopped"),
    "migrate": Command("sms_sim.cli.migrate", "create or upgrade a database's schema"),
    "serve": Command("sms_sim.cli.serve", "the HTTP API and dashboard (and a worker, "
                                          "with --with-worker)"),
    "apikey": Command("sms_sim.cli.apikey", "create, revoke and list tenants' API keys"),
    "optout": Command("sms_sim.cli.optout",
                      "add, remove, list and import a tenant's opt-outs (numbers never sent to)"),
    "prune": Command("sms_sim.cli.prune", "delete messages that finished long ago"),
    "copy": Command("sms_sim.cli.copy", "copy a database into another store (SQLite to "
                                        "PostgreSQL)"),
}
_HELP = ("-h", "--help")


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run the CLI and return the process exit code (see ``ExitCode``).

    Output that cannot be written ends any command with ``ExitCode.SIGPIPE`` (141) and no
    traceback; stdout is then pointed at /dev/null so the interpreter's last flush is quiet.
    SIGINT and SIGTERM end a command that does not handle them itself with 130 and 143, one
    line and no traceback, after what it was doing unwound (``interruptible``).
    """
    prog = prog or Path(sys.argv[0]).name or "sms-sim"
    arguments = list(sys.argv[1:] if argv is None else argv)
    guard_closed_stdout()
    try:
        try:
            with interruptible():
                code = _route(arguments, prog)
        except SystemExit:  # argparse after --help or a usage error: flush what it wrote
            flush_stdout()
            raise
        except (KeyboardInterrupt, Terminated) as exc:
            # What was under way unwound (a transaction rolled back, a half-loaded submit
            # deleted); a command that had finished a change said so before its wait.
            code = stop_code(exc)
            print(f"{prog}: stopped by {code.name}", file=sys.stderr)
            return code
        if code == ExitCode.SIGPIPE:  # the command saw its reader go (the progress stream)
            silence_stdout()
            return code
        flush_stdout()
        return code
    except (OutputClosedError, BrokenPipeError) as exc:
        silence_stdout()
        cause = exc.__cause__ if isinstance(exc, OutputClosedError) else exc
        if not getattr(exc, "reported", False) and not reader_gone(cause):
            # A full disk, say: the exit code alone would leave it unexplained.
            print(f"{prog}: the output could not be written: {exc}", file=sys.stderr)
        return ExitCode.SIGPIPE


def _route(arguments: list[str], prog: str) -> int:
    first = arguments[0] if arguments else None
    if first in _HELP:
        emit(_overview(prog).rstrip("\n"))
        return ExitCode.OK
    if first == "--version":
        emit(f"sms_sim {__version__}")
        return ExitCode.OK
    if first is not None and first in COMMANDS:
        command = importlib.import_module(COMMANDS[first].module)
        code: int = command.main(arguments[1:], prog=f"{prog} {first}")
        return code
    if first is not None and not first.startswith("-") and not _is_number(first):
        print(f"{prog}: error: {_unknown(first, prog)}", file=sys.stderr)
        return ExitCode.USAGE
    from sms_sim.cli import simulate

    return simulate.main(arguments, prog=prog)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _unknown(word: str, prog: str) -> str:
    """The refusal of a first word that is neither a command nor a number."""
    close = difflib.get_close_matches(word, COMMANDS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (f"unknown command {word!r} ({hint}commands: {', '.join(COMMANDS)}; a simulation "
            f"starts with a number: {prog} 10000 4 0.01 0.001 0.2; see {prog} --help)")


def _overview(prog: str) -> str:
    """The top-level --help: every command with one line, then the simulation's options."""
    from sms_sim.cli import simulate

    width = max(len(name) for name in COMMANDS)
    lines = [f"usage: {prog} COMMAND [options]   (COMMAND --help for its options)",
             f"       {prog} [options] [num_messages num_senders mean_processing_time "
             "max_deviation failure_rate]", "", "commands:"]
    lines.extend(f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items())
    lines.extend(["", f"With no command, {prog} runs the simulation:", "",
                  simulate.build_parser(prog).format_help()])
    return "\n".join(lines)


def console_main() -> None:
    """Entry point of the ``sms-sim`` console script."""
    sys.exit(main(prog="sms-sim"))
