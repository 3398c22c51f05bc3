"""The commands that look without changing: show, list, deliveries, dead, check (and
``dead --requeue``, the one change an operator makes from a dead-letter listing).

They open the store read-only, so an auditor, or anyone holding a backup copy in a
directory they cannot write, can use them. Listings are pages: ``list`` shows the newest
messages first and says how many older ones are left and the ``--before`` that shows
them; ``deliveries`` pages forward in recipient order with ``--after``.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence

from sms_sim.cli.common import int_at_least, json_text
from sms_sim.cli.store_command import (
    DEFAULT_DB,
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
    deliveries_csv,
    delivery_dict,
    delivery_line,
    describe_message,
    message_dict,
    message_line,
    printable,
)
from sms_sim.clock import RealClock
from sms_sim.dispatch.contract import (
    DeliveryStatus,
    DeliveryView,
    InvalidRequestError,
    MessageStatus,
)
from sms_sim.dispatch.errors import StoreDamagedError, StoreError
from sms_sim.dispatch.service import DispatchService
from sms_sim.dispatch.stores import display_url
from sms_sim.dispatch.validation import INT64_MAX, validate_phone

__all__ = ["main", "COMMANDS"]

COMMANDS = ("show", "list", "deliveries", "dead", "check")


def _show(prog: str, argv: Sequence[str]) -> int:
    parser = base_parser(prog, "Show one message: status (how it ended, once completed), "
                               "progress (share sent, rate, ETA), times in UTC, and its "
                               "deliveries by status.")
    parser.add_argument("id", type=int_at_least(1), help="message id")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args(argv)

    def body(service: DispatchService) -> str:
        view = service.get(args.id)
        progress = service.progress(view)
        if args.json:
            return json_text(message_dict(view, progress))
        return describe_message(view, progress)

    return run_with_service(parser, args, body, Access.READ)


def _list(prog: str, argv: Sequence[str]) -> int:
    parser = base_parser(prog, "List messages, newest first, one line each.")
    parser.add_argument("--status", choices=[s.value for s in MessageStatus],
                        help="only messages in this status (default: all)")
    parser.add_argument("--limit", type=int_at_least(1), default=100, metavar="N",
                        help="messages per page")
    parser.add_argument("--before", type=int_at_least(1), metavar="ID",
                        help="only messages older than this id: the next page of a listing")
    add_tenant_argument(parser, "only this tenant's messages (default: every tenant)",
                        default=None)
    parser.add_argument("--json", action="store_true",
                        help="one JSON object: messages, more, next_before")
    args = parser.parse_args(argv)

    def body(service: DispatchService) -> str:
        if args.tenant is not None:
            service = service.for_tenant(args.tenant)
        page = service.message_page(status=args.status, limit=args.limit, before=args.before)
        if args.json:
            return json_text({"messages": [message_dict(v) for v in page.messages],
                              "more": page.more, "next_before": page.next_before})
        lines = [message_line(v) for v in page.messages] or ["no messages"]
        if page.more:
            again = _again(["list"], args, status=args.status, tenant=args.tenant,
                           limit=_given(parser, args, "limit"),
                           before=page.next_before)
            lines.append(f"... {page.more} more (older: {again})")
        return "\n".join(lines)

    return run_with_service(parser, args, body, Access.READ)


def _deliveries(prog: str, argv: Sequence[str]) -> int:
    parser = base_parser(prog, "List one message's deliveries in recipient order: status, "
                               "attempts, sent time and last error. Did 555-010-0001 get "
                               "it? deliveries ID --to 555-010-0001")
    parser.add_argument("id", type=int_at_least(1), help="message id")
    parser.add_argument("--status", choices=[s.value for s in DeliveryStatus],
                        help="only deliveries in this status (default: all)")
    parser.add_argument("--to", metavar="NUMBER", help="only the delivery to this number")
    parser.add_argument("--after", type=int_at_least(0), metavar="ID",
                        help="only deliveries after this delivery id: the next page")
    parser.add_argument("--limit", type=int_at_least(1), default=1000, metavar="N",
                        help="deliveries per page")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true",
                        help="one JSON object: deliveries, more, next_after")
    output.add_argument("--csv", action="store_true", help="a header and one row each")
    args = parser.parse_args(argv)
    to = None
    if args.to is not None:
        try:  # stored as submit stores it: +15550100001 is 555-010-0001
            to = validate_phone(args.to.strip(), 1, where="--to")
        except InvalidRequestError as exc:
            parser.error(str(exc))

    def body(service: DispatchService) -> str:
        found = service.deliveries(args.id, status=args.status, limit=_one_more(args.limit),
                                   recipient=to, after=args.after)
        page, more = found[:args.limit], len(found) > args.limit
        next_after = page[-1].id if more else None
        if args.json:
            return json_text({"message_id": args.id,
                              "deliveries": [delivery_dict(d) for d in page],
                              "more": more, "next_after": next_after})
        if args.csv:
            return deliveries_csv(page)
        lines = [delivery_line(d, with_message=False) for d in page]
        if not lines:
            lines = [_none_found(args.id, args.status, to)]
        if more:
            again = _again(["deliveries", str(args.id)], args, status=args.status, to=to,
                           limit=_given(parser, args, "limit"),
                           after=next_after)
            lines.append(f"... more (next: {again})")
        return "\n".join(lines)

    return run_with_service(parser, args, body, Access.READ)


def _again(command: list[str], args: argparse.Namespace, **options: object) -> str:
    """The command line of the next page: the filters given, the cursor moved, and --db
    when it is not the default: as given, or, when output may not show it whole (a
    password, options), "on the same --db" (a rewritten URL would not run as printed)."""
    words = list(command)
    for name, value in options.items():
        if value is not None:
            words += [f"--{name}", str(value)]
    if args.db == DEFAULT_DB:
        return shlex.join(words)
    if display_url(args.db) != args.db:
        return f"{shlex.join(words)}, on the same --db"
    return shlex.join([*words, "--db", args.db])


def _given(parser: argparse.ArgumentParser, args: argparse.Namespace, name: str) -> object:
    """``args``'s value of ``name`` when it is not the parser's default, else None."""
    value = getattr(args, name)
    return None if value == parser.get_default(name) else value


def _none_found(message_id: int, status: str | None, to: str | None) -> str:
    which = f" {status}" if status else ""
    whom = f" to {to}" if to else ""
    return f"no{which} delivery{whom} in message {message_id}"


def _dead(prog: str, argv: Sequence[str]) -> int:
    parser = base_parser(prog, "List dead deliveries (out of attempts or lease losses), "
                               "or requeue them.")
    parser.add_argument("--message", type=int_at_least(1), metavar="ID",
                        help="only this message's (default: every message's)")
    parser.add_argument("--requeue", action="store_true",
                        help="put them back to pending with attempts and lease losses reset; "
                             "needs --message ID, or --all for every message's")
    parser.add_argument("--all", action="store_true",
                        help="with --requeue and no --message: requeue every dead delivery")
    parser.add_argument("--limit", type=int_at_least(1), metavar="N",
                        help="deliveries to list (not with --requeue) (default 1000)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object: deliveries and more (requeued, with --requeue)")
    args = parser.parse_args(argv)
    if args.requeue and args.limit is not None:  # it requeued them all, whatever the limit
        parser.error("--limit goes without --requeue: a requeue takes every dead delivery "
                     "of --message ID (or of all, with --all)")
    limit = 1000 if args.limit is None else args.limit
    if args.requeue and args.message is None and not args.all:
        parser.error("--requeue needs --message ID, or --all to requeue every dead delivery")
    if args.all and (not args.requeue or args.message is not None):
        parser.error("--all goes with --requeue and without --message")

    def body(service: DispatchService) -> str:
        if args.requeue:
            count = service.requeue(args.message)
            return json_text({"requeued": count}) if args.json else \
                f"requeued {count} dead deliveries"
        found = service.dead(args.message, limit=_one_more(limit))
        page, more = found[:limit], len(found) > limit
        if args.json:
            return json_text({"deliveries": [delivery_dict(d) for d in page], "more": more})
        return _dead_lines(page, more)

    return run_with_service(parser, args, body,
                            Access.WRITE if args.requeue else Access.READ)


def _dead_lines(page: list[DeliveryView], more: bool) -> str:
    lines = [delivery_line(d, with_message=True) for d in page] or ["no dead deliveries"]
    if more:
        lines.append("... more (raise --limit, or narrow with --message)")
    return "\n".join(lines)


def _check(prog: str, argv: Sequence[str]) -> int:
    parser = base_parser(prog, "Check the database file for damage (SQLite's integrity "
                               "check); exit 1 if it is damaged. On PostgreSQL, which "
                               "checks its own pages, it shows the server answers with "
                               "the current schema.")
    args = parser.parse_args(argv)

    def work() -> str:
        checked = True
        try:
            with DispatchService(open_for(args.db, Access.READ), RealClock()) as service:
                checked = service.checks_its_files
                verdict = service.check()
        except StoreDamagedError as exc:  # too damaged to open, or to check to the end
            verdict = exc.reason or str(exc)
        if verdict != "ok":
            raise StoreError(f"{display_url(args.db)!r} is damaged: {printable(verdict)}; "
                             "stop using it and restore it from a backup")
        if not checked:
            return (f"{display_url(args.db)!r}: ok (the server answers, schema current; "
                    "it checks its own pages: amcheck looks deeper)")
        return f"{display_url(args.db)!r}: ok (integrity check passed)"

    return run_and_print(parser, args, work, changes=False)


def _one_more(limit: int) -> int:
    """Ask for one more than a page holds, to learn whether another page follows."""
    return min(limit + 1, INT64_MAX)


_HANDLERS: dict[str, Handler] = {
    "show": _show, "list": _list, "deliveries": _deliveries, "dead": _dead, "check": _check,
}


def main(argv: Sequence[str], *, prog: str) -> int:
    """Run one of ``COMMANDS``; ``prog`` ends with the command's name (as ``cli`` passes it)."""
    return route(_HANDLERS, argv, prog=prog, group="inspection")
