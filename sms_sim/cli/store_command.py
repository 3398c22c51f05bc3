"""What every store-backed command shares: the ``--db`` option, opening the store the way
the command needs it, one line per refusal, and what is printed once the work is done.

How a command opens the store is its ``Access``: only ``submit`` and ``init`` may create a
database (a mistyped ``--db`` given to anything else, the worker included, is refused
instead of leaving a new empty file that nothing ever fills); the inspection commands
open it read-only, so they work on a copy in a directory the reader cannot write.
"""

from __future__ import annotations

import argparse
import enum
import logging
import sys
from collections.abc import Callable, Mapping, Sequence

from sms_sim.cli.common import (
    DefaultsHelpFormatter,
    ExitCode,
    OneLineParser,
    OutputClosedError,
    configure_logging,
    emit,
)
from sms_sim.clock import RealClock
from sms_sim.dispatch.contract import DispatchStore
from sms_sim.dispatch.service import DispatchService
from sms_sim.dispatch.stores import check_store_url, is_transient, open_store
from sms_sim.dispatch.tenants import DEFAULT_TENANT, validate_tenant
from sms_sim.dispatch.validation import InvalidRequestError
from sms_sim.errors import ConfigError, SmsSimError

__all__ = [
    "Access",
    "DEFAULT_DB",
    "add_tenant_argument",
    "base_parser",
    "open_for",
    "run_and_print",
    "run_with_service",
    "route",
    "store_url",
    "Handler",
]

log = logging.getLogger(__name__)

Handler = Callable[[str, Sequence[str]], int]  # (prog, argv after the command) -> exit code

DEFAULT_DB = "sms_sim.db"


class Access(enum.Enum):
    """How a command opens the store."""

    CREATE = "create"  # submit, init: a missing database is created
    WRITE = "write"  # edit, cancel, requeue, worker: an existing database, read-write
    READ = "read"  # show, list, dead, deliveries, check: an existing database, read-only


def store_url(text: str) -> str:
    """The ``--db`` argument type: refuses a store that would vanish when the command ends
    (``memory:``, ``:memory:``, an empty path, which SQLite makes a temporary file): each
    command is its own process, so a submit to one would be acknowledged and lost."""
    if is_transient(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} keeps nothing after this command ends; give a database file "
            f"(default ./{DEFAULT_DB})")
    try:
        return check_store_url(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def tenant_name(text: str) -> str:
    """The ``--tenant`` argument type (``tenants.validate_tenant``)."""
    try:
        return validate_tenant(text)
    except InvalidRequestError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_tenant_argument(parser: argparse.ArgumentParser, help_text: str, *,
                        default: str | None = DEFAULT_TENANT) -> None:
    """``--tenant NAME``: the command line acts as the operator of every tenant, and this
    narrows it to one (or, for ``submit``, names whose message it is)."""
    parser.add_argument("--tenant", type=tenant_name, default=default, metavar="NAME",
                        help=help_text)


def base_parser(prog: str, description: str) -> OneLineParser:
    """The options every store-backed command takes: the database and verbosity."""
    parser = OneLineParser(prog=prog, description=description,
                           formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--db", type=store_url, default=DEFAULT_DB, metavar="DB",
                        help="database file, sqlite:///path or postgresql://user@host/db "
                             f"(default ./{DEFAULT_DB})")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging on stderr")
    return parser


def open_for(url: str, access: Access) -> DispatchStore:
    """The store at ``url`` opened as ``access`` says (``StoreError`` if it is missing and
    ``access`` may not create it)."""
    return open_store(url, create=access is Access.CREATE, read_only=access is Access.READ)


def run_with_service(parser: argparse.ArgumentParser, args: argparse.Namespace,
                     body: Callable[[DispatchService], str], access: Access) -> int:
    """Run ``body`` on a service over ``--db`` opened as ``access``; see ``run_and_print``."""
    def work() -> str:
        with DispatchService(open_for(args.db, access), RealClock()) as service:
            return body(service)

    return run_and_print(parser, args, work, changes=access is not Access.READ)


def run_and_print(parser: argparse.ArgumentParser, args: argparse.Namespace,
                  work: Callable[[], str], *, changes: bool) -> int:
    """Run ``work`` and print the text it returns on stdout.

    A refusal (``SmsSimError``) is one line on stderr and exit 1, or 2 for a request the
    engine found malformed (``InvalidRequestError``: what the flags asked for, found wrong
    only once the message was read, such as an edit's new time past its validity end),
    as for any bad flag. If stdout cannot take
    the answer of a command that ``changes`` the store, the answer goes to stderr before
    ``OutputClosedError`` leaves (exit 141): the change stands, and a script that retries
    on a failure must be able to see what it was (the id a submit created).
    """
    configure_logging(args.verbose)
    try:
        text = work()
    except SmsSimError as exc:
        log.debug("command failed", exc_info=True)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE if isinstance(exc, InvalidRequestError) else ExitCode.ERROR
    try:
        emit(text)
    except OutputClosedError as exc:
        if changes:
            print(f"{parser.prog}: stdout could not be written ({exc}); done anyway: "
                  f"{text.replace(chr(10), ' ')}", file=sys.stderr)
            exc.reported = True
        raise
    return ExitCode.OK


def route(handlers: Mapping[str, Handler], argv: Sequence[str], *, prog: str,
          group: str) -> int:
    """Run the handler of the command ``prog`` ends with (as ``cli`` passes it); a name
    that is not one of ``handlers`` (only a wrong ``COMMANDS`` table can cause it) is a
    usage error naming the ``group``'s commands."""
    command = prog.rsplit(" ", 1)[-1]
    handler = handlers.get(command)
    if handler is None:
        print(f"{prog}: error: unknown {group} command {command!r} "
              f"(choose from {', '.join(handlers)})", file=sys.stderr)
        return ExitCode.USAGE
    return handler(prog, list(argv))


def subcommand_main(handlers: Mapping[str, Handler], argv: Sequence[str], *, prog: str,
                    group: str, summaries: Mapping[str, str]) -> int:
    """A command made of subcommands (``apikey``, ``optout``): ``--help`` lists them with
    their one-line ``summaries``; a missing or unknown one is a usage error naming them;
    otherwise the subcommand's handler runs with the rest of ``argv``."""
    arguments = list(argv)
    word = arguments[0] if arguments else None
    names = ", ".join(handlers)
    if word in ("-h", "--help"):
        width = max(len(name) for name in summaries) + 2
        lines = "\n".join(f"  {name:<{width}}{summary}" for name, summary in summaries.items())
        emit(f"usage: {prog} {{{','.join(handlers)}}} [options]   (SUBCOMMAND --help for "
             f"its options)\n\n{lines}")
        return ExitCode.OK
    if word not in handlers:
        given = "no subcommand" if word is None else f"unknown subcommand {word!r}"
        print(f"{prog}: error: {given} (choose from {names}; see {prog} --help)",
              file=sys.stderr)
        return ExitCode.USAGE
    return route(handlers, arguments[1:], prog=f"{prog} {word}", group=group)
