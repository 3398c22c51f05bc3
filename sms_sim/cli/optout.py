"""The ``optout`` command group: a tenant's suppression list (numbers that replied STOP).

``optout add|remove|list|import`` act on one tenant's list (``--tenant``, default the
command line's own tenant). Numbers are written as recipients are (xxx-xxx-xxxx or E.164;
``+1`` and ten digits is the same number as xxx-xxx-xxxx). Adding a number suppresses, in
the same transaction, that tenant's deliveries to it that no worker holds yet; from then
on none is sent to it. Bad numbers are refused before the database is opened (exit 2,
naming the number or the file's line); a store's refusal is one line and exit 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sms_sim.cli.common import int_at_least, json_text
from sms_sim.cli.store_command import (
    Access,
    Handler,
    add_tenant_argument,
    base_parser,
    run_with_service,
    subcommand_main,
)
from sms_sim.dispatch.contract import InvalidRequestError, OptOut
from sms_sim.dispatch.optouts import validate_opt_out_phones
from sms_sim.dispatch.service import DispatchService
from sms_sim.dispatch.validation import first_column_numbers, format_utc, validate_phone

__all__ = ["main", "SUBCOMMANDS"]

SUBCOMMANDS = ("add", "remove", "list", "import")
_TENANT_HELP = "whose list (default: %(default)s)"


def _added_line(added: int, given: int, suppressed: int, tenant: str) -> str:
    return (f"opted out {added} new number{'s' * (added != 1)} for tenant {tenant!r} "
            f"({given - added} already listed); {suppressed} pending "
            f"deliver{'ies' if suppressed != 1 else 'y'} suppressed")


def _add(prog: str, argv: Sequence[str]) -> int:
    parser = base_parser(prog, "Add numbers to a tenant's opt-out list: they are never sent "
                               "to again (deliveries not yet held by a worker are suppressed "
                               "at once).")
    parser.add_argument("phones", nargs="+", metavar="PHONE",
                        help="xxx-xxx-xxxx or +E.164")
    add_tenant_argument(parser, _TENANT_HELP)
    parser.add_argument("--json", action="store_true", help="one JSON object: the counts")
    args = parser.parse_args(argv)
    try:
        phones = validate_opt_out_phones(args.phones)
    except InvalidRequestError as exc:
        parser.error(str(exc))
    return _run_add(parser, args, phones)


def _import(prog: str, argv: Sequence[str]) -> int:
    parser = base_parser(prog, "Add every number of a CSV file (the first column; a header "
                               "row and '#' rows are skipped) to a tenant's opt-out list.")
    parser.add_argument("file", metavar="FILE.csv", help="the CSV file; '-' reads stdin")
    add_tenant_argument(parser, _TENANT_HELP)
    parser.add_argument("--json", action="store_true", help="one JSON object: the counts")
    args = parser.parse_args(argv)
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        lines = data.decode("utf-8-sig").splitlines()
        phones = validate_opt_out_phones(
            first_column_numbers(lines, "stdin" if args.file == "-" else f"{args.file!r}"))
    except OSError as exc:
        parser.error(f"cannot read {args.file!r}: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        parser.error(f"{args.file!r} is not UTF-8 text ({exc.reason} near byte {exc.start})")
    except InvalidRequestError as exc:
        parser.error(str(exc))
    return _run_add(parser, args, phones)


def _run_add(parser: argparse.ArgumentParser, args: argparse.Namespace,
             phones: list[str]) -> int:
    tenant, as_json = str(args.tenant), bool(args.json)

    def body(service: DispatchService) -> str:
        result = service.add_opt_outs(phones, tenant=tenant)
        if as_json:
            return json_text({"tenant": tenant, "given": len(phones), "added": result.added,
                              "suppressed": result.suppressed})
        return _added_line(result.added, len(phones), result.suppressed, tenant)

    return run_with_service(parser, args, body, Access.WRITE)


def _remove(prog: str, argv: Sequence[str]) -> int:
    parser = base_parser(prog, "Take a number off a tenant's opt-out list: new messages reach "
                               "it again (what was suppressed stays suppressed).")
    parser.add_argument("phone", metavar="PHONE", help="xxx-xxx-xxxx or +E.164")
    add_tenant_argument(parser, _TENANT_HELP)
    args = parser.parse_args(argv)
    try:
        phone = validate_phone(args.phone, 1, where="PHONE")
    except InvalidRequestError as exc:
        parser.error(str(exc))

    def body(service: DispatchService) -> str:
        if service.remove_opt_out(phone, tenant=args.tenant):
            return f"removed {phone} from tenant {args.tenant!r}'s opt-outs"
        return f"{phone} was not on tenant {args.tenant!r}'s opt-outs; nothing changed"

    return run_with_service(parser, args, body, Access.WRITE)


def _list(prog: str, argv: Sequence[str]) -> int:
    parser = base_parser(prog, "List a tenant's opt-outs in number order, a page at a time.")
    add_tenant_argument(parser, _TENANT_HELP)
    parser.add_argument("--after", metavar="PHONE",
                        help="the cursor: only numbers after this one (as listed)")
    parser.add_argument("--limit", type=int_at_least(1), default=1000, metavar="N",
                        help="at most N numbers (default %(default)s)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object: opt_outs and next_after")
    args = parser.parse_args(argv)

    def body(service: DispatchService) -> str:
        # One more than shown: a page that is exactly full is the last one when nothing
        # follows it (it offered a cursor to an empty page).
        found = service.opt_outs(after=args.after, limit=args.limit + 1, tenant=args.tenant)
        more = len(found) > args.limit
        found = found[:args.limit]
        if args.json:
            return json_text({"tenant": args.tenant, "opt_outs": [_dict(o) for o in found],
                              "next_after": found[-1].phone if more else None})
        lines = [f"{o.phone}  since {format_utc(o.created_at)}" for o in found]
        if more:
            lines.append(f"... more after {found[-1].phone} (--after {found[-1].phone})")
        return "\n".join(lines) or f"no opt-outs for tenant {args.tenant!r}"

    return run_with_service(parser, args, body, Access.READ)


def _dict(opt_out: OptOut) -> dict[str, object]:
    return {"phone": opt_out.phone, "created_at": opt_out.created_at}


_HANDLERS: dict[str, Handler] = {"add": _add, "remove": _remove, "list": _list,
                                 "import": _import}


_SUMMARIES = {
    "add": "numbers never to send to again (suppresses what is pending)",
    "remove": "take a number off the list",
    "list": "the listed numbers, a page at a time",
    "import": "every number of a CSV file (first column)",
}


def main(argv: Sequence[str], *, prog: str) -> int:
    """``optout SUBCOMMAND ...``: route to one of ``SUBCOMMANDS``."""
    return subcommand_main(_HANDLERS, argv, prog=prog, group="optout", summaries=_SUMMARIES)
