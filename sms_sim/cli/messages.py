"""The message commands: submit, edit, cancel, show, list, dead.

``cli.main`` hands over ``argv`` after the command name, with ``prog`` ending in that name.
Every bad input is one ``<prog>: error: ...`` line on stderr: argument and validation
errors exit 2 before the database is opened, store refusals (unknown id, stale version,
locked message, unreadable or foreign database) exit 1 and change nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sms_sim.cli.common import ExitCode, base_parser, configure_logging, int_at_least
from sms_sim.clock import RealClock
from sms_sim.dispatch.contract import (
    DeliveryStatus,
    InvalidRequestError,
    MessageEdit,
    MessageStatus,
    MessageView,
    NewMessage,
)
from sms_sim.dispatch.service import DispatchService
from sms_sim.dispatch.stores import open_store
from sms_sim.dispatch.validation import format_utc, validate_time
from sms_sim.errors import ConfigError, SmsSimError

__all__ = ["main", "COMMANDS", "parse_time"]

log = logging.getLogger(__name__)

COMMANDS = ("submit", "edit", "cancel", "show", "list", "dead")


def parse_time(text: str) -> float:
    """ISO-8601 to epoch seconds; a time without an offset is taken as UTC."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO-8601 time: {text!r} (e.g. 2026-11-23T21:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    try:
        return validate_time(moment.timestamp())
    except InvalidRequestError as exc:
        raise argparse.ArgumentTypeError(f"{exc} in {text!r}") from None


def _numbers(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _read_recipients(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read recipients file {str(path)!r}: {exc}") from exc
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _add_recipients(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", action="append", type=_numbers, default=[], metavar="NUMBERS",
                        help="recipient numbers xxx-xxx-xxxx, comma-separated (repeatable)")
    parser.add_argument("--recipients-file", type=Path, metavar="FILE",
                        help="one number per line (blank lines and # comments ignored)")


def _recipients(args: argparse.Namespace) -> list[str] | None:
    numbers = [n for group in args.to for n in group]
    if args.recipients_file is not None:
        numbers.extend(_read_recipients(args.recipients_file))
    if not args.to and args.recipients_file is None:
        return None
    return numbers


# --- commands -------------------------------------------------------------------------------


def _submit(prog: str, argv: Sequence[str]) -> int:
    parser = base_parser(prog, "Queue a message for dispatch to its recipients.")
    parser.add_argument("content", help="the text, 1-1600 characters")
    _add_recipients(parser)
    parser.add_argument("--at", type=parse_time, metavar="TIME",
                        help="ISO-8601 time to send at (default now; no offset means UTC)")
    parser.add_argument("--idempotency-key", metavar="KEY",
                        help="a repeated submit with this key returns the first message")
    parser.add_argument("--priority", type=int, default=0, help="higher is claimed first")
    args = parser.parse_args(argv)
    try:
        numbers = _recipients(args) or []
        message = NewMessage.validated(content=args.content, recipients=numbers,
                                       scheduled_at=args.at,
                                       idempotency_key=args.idempotency_key,
                                       priority=args.priority)
    except (InvalidRequestError, ConfigError) as exc:
        parser.error(str(exc))
    return _with_service(parser, args, lambda service: _do_submit(service, message),
                         create=True)


def _do_submit(service: DispatchService, message: NewMessage) -> str:
    result = service.submit(message)
    view = service.get(result.message_id)
    if not result.created:
        return (f"already submitted: message {view.id} (idempotency key "
                f"{message.idempotency_key!r}); nothing created")
    return (f"submitted message {view.id}: {sum(view.counts.values())} recipients, "
            f"due {format_utc(view.scheduled_at)}, version {view.version}")


def _edit(prog: str, argv: Sequence[str]) -> int:
    parser = base_parser(prog, "Change a message that has not started dispatching.")
    parser.add_argument("id", type=int_at_least(1), help="message id")
    parser.add_argument("--version", type=int_at_least(1), required=True,
                        help="the version you last read (see show); a stale one is refused")
    parser.add_argument("--content", help="new text")
    parser.add_argument("--at", type=parse_time, metavar="TIME", help="new ISO-8601 send time")
    _add_recipients(parser)
    args = parser.parse_args(argv)
    try:
        edit = MessageEdit.validated(content=args.content, scheduled_at=args.at,
                                     recipients=_recipients(args))
    except (InvalidRequestError, ConfigError) as exc:
        parser.error(str(exc))

    def body(service: DispatchService) -> str:
        view = service.edit(args.id, args.version, edit)
        return f"edited message {view.id}: now version {view.version}"

    return _with_service(parser, args, body, create=False)


def _cancel(prog: str, argv: Sequence[str]) -> int:
    parser = base_parser(prog, "Cancel a scheduled or dispatching message.")
    parser.add_argument("id", type=int_at_least(1), help="message id")
    args = parser.parse_args(argv)

    def body(service: DispatchService) -> str:
        result = service.cancel(args.id)
        return (f"cancelled message {result.message_id} (was {result.was_status}): "
                f"{result.cancelled} deliveries cancelled, {result.already_sent} already sent, "
                f"{result.in_flight} in flight")

    return _with_service(parser, args, body, create=False)


def _show(prog: str, argv: Sequence[str]) -> int:
    parser = base_parser(prog, "Show one message and its deliveries by status.")
    parser.add_argument("id", type=int_at_least(1), help="message id")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args(argv)

    def body(service: DispatchService) -> str:
        view = service.get(args.id)
        return json.dumps(_as_dict(view)) if args.json else _describe(view)

    return _with_service(parser, args, body, create=False)


def _list(prog: str, argv: Sequence[str]) -> int:
    parser = base_parser(prog, "List messages, one line each.")
    parser.add_argument("--status", choices=[s.value for s in MessageStatus])
    parser.add_argument("--limit", type=int_at_least(1), default=100)
    args = parser.parse_args(argv)

    def body(service: DispatchService) -> str:
        views = service.list_messages(status=args.status, limit=args.limit)
        return "\n".join(_one_line(v) for v in views) if views else "no messages"

    return _with_service(parser, args, body, create=False)


def _dead(prog: str, argv: Sequence[str]) -> int:
    parser = base_parser(prog, "List dead deliveries (out of attempts or lease losses), "
                               "or requeue them.")
    parser.add_argument("--message", type=int_at_least(1), metavar="ID", help="only this message")
    parser.add_argument("--requeue", action="store_true",
                        help="put them back to pending with attempts and lease losses reset")
    parser.add_argument("--limit", type=int_at_least(1), default=1000)
    args = parser.parse_args(argv)

    def body(service: DispatchService) -> str:
        if args.requeue:
            count = service.requeue(args.message)
            return f"requeued {count} dead deliveries"
        dead = service.dead(args.message, limit=args.limit)
        if not dead:
            return "no dead deliveries"
        return "\n".join(
            f"delivery {d.id}  message {d.message_id}  {d.recipient}  attempts {d.attempts} "
            f"(leases lost {d.lease_losses})  last error: {d.last_error}" for d in dead
        )

    return _with_service(parser, args, body, create=False)


def _with_service(parser: argparse.ArgumentParser, args: argparse.Namespace,
                  body: Callable[[DispatchService], str], *, create: bool) -> int:
    """Run ``body`` on a service over ``--db``; ``create`` makes a missing database (only
    ``submit``: the other commands refuse one, so a mistyped ``--db`` creates nothing)."""
    configure_logging(args.verbose)
    try:
        with DispatchService(open_store(args.db, create=create), RealClock()) as service:
            text = body(service)
    except SmsSimError as exc:
        log.debug("command failed", exc_info=True)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return ExitCode.ERROR
    print(text)
    return ExitCode.OK


def _describe(view: MessageView) -> str:
    counts = ", ".join(f"{status} {view.counts[status]}" for status in DeliveryStatus)
    return "\n".join([
        f"message {view.id}: {view.status}, version {view.version}, priority {view.priority}",
        f"  content: {view.content}",
        f"  scheduled_at {format_utc(view.scheduled_at)}  created_at "
        f"{format_utc(view.created_at)}  updated_at {format_utc(view.updated_at)}",
        f"  dispatch_started_at {format_utc(view.dispatch_started_at)}  completed_at "
        f"{format_utc(view.completed_at)}",
        f"  idempotency_key {view.idempotency_key or '-'}",
        f"  deliveries {sum(view.counts.values())}: {counts}",
    ])


def _one_line(view: MessageView) -> str:
    counts = view.counts
    preview = view.content if len(view.content) <= 40 else view.content[:37] + "..."
    return (f"{view.id}  {view.status}  v{view.version}  due {format_utc(view.scheduled_at)}  "
            f"{sum(counts.values())} recipients: {counts[DeliveryStatus.SENT]} sent, "
            f"{counts[DeliveryStatus.DEAD]} dead  {preview!r}")


def _as_dict(view: MessageView) -> dict[str, object]:
    return {
        "id": view.id, "content": view.content, "status": str(view.status),
        "version": view.version, "priority": view.priority,
        "scheduled_at": view.scheduled_at, "created_at": view.created_at,
        "updated_at": view.updated_at, "dispatch_started_at": view.dispatch_started_at,
        "completed_at": view.completed_at, "idempotency_key": view.idempotency_key,
        "deliveries": {str(k): v for k, v in view.counts.items()},
    }


_HANDLERS: dict[str, Callable[[str, Sequence[str]], int]] = {
    "submit": _submit, "edit": _edit, "cancel": _cancel, "show": _show, "list": _list,
    "dead": _dead,
}


def main(argv: Sequence[str], *, prog: str) -> int:
    """Run one dispatch command; ``prog`` ends with the command's name (as ``cli`` passes it)."""
    command = prog.rsplit(" ", 1)[-1]
    handler = _HANDLERS.get(command)
    if handler is None:
        print(f"{prog}: error: unknown dispatch command {command!r} "
              f"(choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return ExitCode.USAGE
    return handler(prog, list(argv))
