"""The command line: one module per command, shared parts in ``common``.

This package is the only place that touches ``sys.argv``, signals, logging configuration,
printing and exit codes. ``main`` routes the first argument to its command module, imported
only when chosen, so starting the simulator never pays for (or depends on) the others.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from sms_sim.cli.common import ExitCode

__all__ = ["main", "console_main", "ExitCode", "COMMANDS"]

# Command -> module with ``main(argv, *, prog) -> int``. No command name: the simulation.
COMMANDS: dict[str, str] = {
    "plan": "sms_sim.cli.plan",
    "worker": "sms_sim.cli.worker",
    **{name: "sms_sim.cli.messages"
       for name in ("submit", "edit", "cancel", "show", "list", "dead")},
}


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run the CLI and return the process exit code (see ``ExitCode``)."""
    prog = prog or Path(sys.argv[0]).name or "sms-sim"
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in COMMANDS:
        command = importlib.import_module(COMMANDS[arguments[0]])
        code: int = command.main(arguments[1:], prog=f"{prog} {arguments[0]}")
        return code
    from sms_sim.cli import simulate

    return simulate.main(arguments, prog=prog)


def console_main() -> None:
    """Entry point of the ``sms-sim`` console script."""
    sys.exit(main(prog="sms-sim"))
