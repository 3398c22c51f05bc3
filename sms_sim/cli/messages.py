"""The commands that change messages: init, submit, edit, cancel.

``cli.main`` hands over ``argv`` after the command name, with ``prog`` ending in that name.
Every bad input is one ``<prog>: error: ...`` line on stderr: argument and validation
errors exit 2 before the database is opened, store refusals (unknown id, stale version,
locked message, unreadable or foreign database) exit 1 and change nothing. Only ``submit``
and ``init`` create a missing database.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sms_sim.cli.common import (
    ExitCode,
    Terminated,
    emit,
    int_at_least,
    json_text,
    non_negative_float,
)
from sms_sim.cli.recipients import add_recipient_arguments, recipients_from
from sms_sim.cli.store_command import (
    Access,
    Handler,
    add_tenant_argument,
    base_parser,
    open_for,
    route,
    run_and_print,
    run_with_service,
)
from sms_sim.cli.views import (
    message_dict,
    recipients,
    sent_count,
    shape_phrase,
    status_phrase,
)
from sms_sim.cli.when import add_time_arguments, describe_due, due_at, duration_argument
from sms_sim.clock import RealClock
from sms_sim.dispatch.contract import AGING_STEP_S, DeliveryStatus, InvalidRequestError
from sms_sim.dispatch.errors import NoStoreError, StoreError
from sms_sim.dispatch.requests import MessageEdit, NewMessage
from sms_sim.dispatch.service import DispatchService
from sms_sim.dispatch.stores import display_url
from sms_sim.dispatch.validation import PRIORITY_MIN, VALID_FOR_MAX_S, PastTimeError, format_utc

__all__ = ["main", "COMMANDS"]

COMMANDS = ("init", "submit", "edit", "cancel")

VALID_FOR_HELP = ("how long after its due time the message may still be sent (e.g. 30m, 2h, "
                  "1d); deliveries not sent by then expire and are never sent late")
PRIORITY_HELP = ("priority class: higher classes go first; waiting work ages so nothing "
                 f"starves (a due message rises one class per {AGING_STEP_S:.0f} s it has "
                 "waited since last served, and keeps it while it has work due); within a "
                 "class, messages take turns")


def _valid_for(text: str) -> float:
    """``--valid-for``: a duration up to ``VALID_FOR_MAX_S`` (366 days), refused in the
    option's words ("valid_for must be ... at most 31622400 seconds" named neither)."""
    seconds = duration_argument(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive duration (got {text!r})")
    if seconds > VALID_FOR_MAX_S:
        raise argparse.ArgumentTypeError(f"at most {VALID_FOR_MAX_S / 86400:.0f}d (got {text!r})")
    return seconds


def _init(prog: str, argv: Sequence[str]) -> int:
    parser = base_parser(prog, "Create an empty sms_sim database (submit creates one too). "
                               "Every other command needs the database to exist, so a "
                               "mistyped --db is refused instead of starting a new one.")
    args = parser.parse_args(argv)

    def work() -> str:
        try:
            open_for(args.db, Access.WRITE).close()
        except StoreError:  # missing or empty: create it (a file that is not ours fails again)
            open_for(args.db, Access.CREATE).close()
            return f"created sms_sim database {display_url(args.db)!r}"
        return f"{display_url(args.db)!r} is already an sms_sim database; nothing changed"

    return run_and_print(parser, args, work, changes=True)


def _submit(prog: str, argv: Sequence[str]) -> int:
    parser = base_parser(prog, "Queue a message for dispatch to its recipients.")
    parser.add_argument("content", nargs="?",
                        help="the text, 1-1600 characters, line breaks allowed (text starting "
                             "with '-': use --content, or put it last after --)")
    parser.add_argument("--content", dest="content_option", metavar="TEXT",
                        help="the text, as an option instead of an argument")
    add_recipient_arguments(parser)
    add_time_arguments(parser, default="default now")
    parser.add_argument("--idempotency-key", metavar="KEY",
                        help="a repeated submit with this key and the same message creates "
                             "nothing and answers with the first message")
    parser.add_argument("--priority", type=int_at_least(PRIORITY_MIN), default=0,
                        metavar="N", help=PRIORITY_HELP)
    parser.add_argument("--valid-for", type=_valid_for, metavar="DURATION",
                        help=VALID_FOR_HELP)
    add_tenant_argument(parser, "the tenant the message belongs to, as if submitted with "
                                "one of its API keys (default: %(default)s)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object: the message, and whether it was created")
    args = parser.parse_args(argv)
    if (args.content is None) == (args.content_option is None):
        parser.error("give the content once: as an argument or with --content")
    try:
        message = _new_message(args)
    except InvalidRequestError as exc:
        parser.error(str(exc))
    except StoreError as exc:  # asking whether it is a repeat: a store that fails says so
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return ExitCode.ERROR

    def body(service: DispatchService) -> str:
        result = service.submit(message)
        view = service.submitted(result)
        if args.json:
            return json_text({"created": result.created, "suppressed": result.suppressed,
                              **message_dict(view)})
        if not result.created:
            return (f"already submitted: message {view.id} (idempotency key "
                    f"{message.idempotency_key!r}), {status_phrase(view)}; nothing created")
        valid = "" if view.valid_until is None else f", valid until {format_utc(view.valid_until)}"
        suppressed = (f", {result.suppressed} suppressed (opted out)" if result.suppressed
                      else "")
        return (f"submitted message {view.id}: {recipients(view.recipient_count)}, "
                f"due {describe_due(view.scheduled_at)}, version {view.version}; "
                f"{shape_phrase(view)} each{valid}{suppressed}")

    return run_with_service(parser, args, body, Access.CREATE)


def _new_message(args: argparse.Namespace) -> NewMessage:
    """The message ``submit``'s flags ask for. Raises ``InvalidRequestError``, and
    ``StoreError`` when asking the store whether it is a repeat fails."""
    now = RealClock().now()
    # Read once: a second build must not read stdin again (it is empty by then).
    numbers = recipients_from(args.to, args.recipients_file, sys.stdin.buffer) or []

    def built(past_ok: bool) -> NewMessage:
        return NewMessage.validated(
            content=args.content if args.content is not None else args.content_option,
            recipients=numbers,
            scheduled_at=due_at(args.at, args.in_, now, past_ok=past_ok),
            idempotency_key=args.idempotency_key, priority=args.priority,
            time_request=None if args.in_ is None else f"in {args.in_!r} s",
            tenant=args.tenant, valid_for_s=args.valid_for)

    try:
        return built(past_ok=False)
    except PastTimeError:
        # A retry of a submit whose --at has passed since: answered as a repeat (or
        # refused as a conflict) by the store, not refused as a time in the past.
        if args.idempotency_key is None:
            raise
        message = built(past_ok=True)
        if not _is_repeat(args.db, message):
            raise
        return message


def _is_repeat(url: str, message: NewMessage) -> bool:
    """Whether ``message``'s idempotency key is used in the database at ``url`` (False when
    there is none yet: a refused submit creates no database). Raises ``StoreError`` for a
    store that fails: a locked or older database is no answer, and "no" would refuse a
    real repeat as a time in the past."""
    try:
        with DispatchService(open_for(url, Access.READ), RealClock()) as service:
            return service.is_repeat(message)
    except NoStoreError:
        return False


def _edit(prog: str, argv: Sequence[str]) -> int:
    parser = base_parser(prog, "Change a message that has not started dispatching.")
    parser.add_argument("id", type=int_at_least(1), help="message id")
    parser.add_argument("--version", type=int_at_least(1), required=True,
                        help="the version you last read (see show); a stale one is refused")
    parser.add_argument("--content", metavar="TEXT", help="new text")
    add_time_arguments(parser, default="left out, the time stays")
    add_recipient_arguments(parser)
    parser.add_argument("--valid-for", type=_valid_for, metavar="DURATION",
                        help=VALID_FOR_HELP + " (counted from the due time after the edit)")
    args = parser.parse_args(argv)
    try:
        edit = MessageEdit.validated(
            content=args.content, scheduled_at=due_at(args.at, args.in_, RealClock().now()),
            recipients=recipients_from(args.to, args.recipients_file, sys.stdin.buffer),
            valid_for_s=args.valid_for)
    except InvalidRequestError as exc:
        parser.error(str(exc))

    def body(service: DispatchService) -> str:
        view = service.edit(args.id, args.version, edit)
        due = "" if edit.scheduled_at is None else f", due {describe_due(view.scheduled_at)}"
        valid = ("" if edit.valid_for_s is None or view.valid_until is None
                 else f", valid until {format_utc(view.valid_until)}")
        return f"edited message {view.id}: now version {view.version}{due}{valid}"

    return run_with_service(parser, args, body, Access.WRITE)


def _cancel(prog: str, argv: Sequence[str]) -> int:
    parser = base_parser(prog, "Cancel a scheduled or dispatching message.")
    parser.add_argument("id", type=int_at_least(1), help="message id")
    parser.add_argument("--wait", type=non_negative_float, default=10.0, metavar="SECONDS",
                        help="how long to wait for workers to settle what they held, so the "
                             "line can say how many went out (default 10; 0: do not wait)")
    args = parser.parse_args(argv)

    def body(service: DispatchService) -> str:
        result = service.cancel(args.id)
        line = (f"cancelled message {result.message_id} (was {result.was_status}): "
                f"{result.cancelled} deliveries cancelled, {result.already_sent} already sent")
        if not result.in_flight:
            return line + ", none held by workers"
        try:
            view = service.await_workers(result.message_id, timeout_s=args.wait)
        except (KeyboardInterrupt, Terminated):
            # The cancel is done: say so before the signal ends the command.
            emit(f"{line}; {result.in_flight} held by workers (stopped waiting for them: "
                 f"'show {result.message_id}' says how many went out)")
            raise
        went_out = sent_count(view) - result.already_sent
        still = view.counts[DeliveryStatus.LEASED]
        held = (f"; {result.in_flight} held by workers: {went_out} were being sent and went "
                f"out, {result.in_flight - went_out - still} not sent")
        if still:
            held += f", {still} still held (only a send already started can go out)"
        return line + held

    return run_with_service(parser, args, body, Access.WRITE)


_HANDLERS: dict[str, Handler] = {
    "init": _init, "submit": _submit, "edit": _edit, "cancel": _cancel,
}


def main(argv: Sequence[str], *, prog: str) -> int:
    """Run one of ``COMMANDS``; ``prog`` ends with the command's name (as ``cli`` passes it)."""
    return route(_HANDLERS, argv, prog=prog, group="message")
