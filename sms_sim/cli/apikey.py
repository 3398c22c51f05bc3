"""The ``apikey`` command group: create, revoke and list the keys tenants call the HTTP API with.

``apikey create`` is the only moment a token is ever shown: the store keeps a hash, so a lost
token cannot be recovered, only revoked and replaced. ``apikey list`` prints what identifies a
key (its id, tenant and times), never a secret. Bad arguments (a malformed tenant) are one
line and exit 2 before the database is opened; a store's refusal (an unknown key id, a
missing database) is one line and exit 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sms_sim.cli.common import ExitCode, emit, json_text
from sms_sim.cli.store_command import Access, Handler, base_parser, route, run_with_service
from sms_sim.dispatch.contract import InvalidRequestError
from sms_sim.dispatch.keys import ApiKey, KeyRole, validate_key_id
from sms_sim.dispatch.service import DispatchService
from sms_sim.dispatch.tenants import DEFAULT_TENANT, validate_tenant
from sms_sim.dispatch.validation import format_utc

__all__ = ["main", "SUBCOMMANDS"]

SUBCOMMANDS = ("create", "revoke", "list")


def _create(prog: str, argv: Sequence[str]) -> int:
    parser = base_parser(prog, "Create an API key for a tenant and print its token, once: only "
                               "a hash is stored, so a lost token cannot be shown again (revoke "
                               "it and create another). Requests send it as 'Authorization: "
                               "Bearer TOKEN'.")
    parser.add_argument("--tenant",
                        help="the tenant the key acts for (its messages, and only those)")
    parser.add_argument("--provider", action="store_true",
                        help="a provider key instead: it may only POST "
                             "/v1/provider/receipts (delivery receipts), for every "
                             "tenant's deliveries; give it to the SMS provider")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object: key_id, tenant, role, created_at, token")
    args = parser.parse_args(argv)
    if args.tenant is None and not args.provider:
        parser.error("the following arguments are required: --tenant (or --provider)")
    if args.tenant is not None and args.provider:
        parser.error("a provider key acts for every tenant's deliveries: leave --tenant out")
    try:
        tenant = validate_tenant(DEFAULT_TENANT if args.tenant is None else args.tenant)
    except InvalidRequestError as exc:
        parser.error(str(exc))

    def body(service: DispatchService) -> str:
        issued = service.create_api_key(tenant, provider=args.provider)
        key = issued.key
        if args.json:
            return json_text({"key_id": key.key_id, "tenant": key.tenant,
                              "role": str(key.role), "created_at": key.created_at,
                              "token": issued.token})
        whom = ("a provider (delivery receipts only)" if args.provider
                else f"tenant {key.tenant!r}")
        return (f"created API key {key.key_id} for {whom}\n"
                f"token: {issued.token}\n"
                "(shown only this once: keep it now; 'apikey revoke "
                f"{key.key_id}' withdraws it)")

    # Not CREATE: a key in a database nothing serves is a key that never works.
    return run_with_service(parser, args, body, Access.WRITE)


def _revoke(prog: str, argv: Sequence[str]) -> int:
    parser = base_parser(prog, "Revoke an API key: requests with its token are refused from "
                               "now on. The key stays listed, with the time it was revoked.")
    parser.add_argument("key_id", metavar="KEY_ID",
                        help="the key's id: 12 hex digits (see apikey list)")
    parser.add_argument("--json", action="store_true", help="one JSON object: the key")
    args = parser.parse_args(argv)
    try:
        key_id = validate_key_id(args.key_id)
    except InvalidRequestError as exc:
        parser.error(str(exc))

    def body(service: DispatchService) -> str:
        key = service.revoke_api_key(key_id)
        if args.json:
            return json_text(_key_dict(key))
        return f"revoked API key {key.key_id} of tenant {key.tenant!r} at " \
               f"{format_utc(key.revoked_at)}"

    return run_with_service(parser, args, body, Access.WRITE)


def _list(prog: str, argv: Sequence[str]) -> int:
    parser = base_parser(prog, "List API keys, one line each: id, tenant, when created, and "
                               "whether revoked. Tokens are never shown (only hashes are kept).")
    parser.add_argument("--tenant", help="only this tenant's keys (default: every tenant's)")
    parser.add_argument("--json", action="store_true", help="one JSON object: keys")
    args = parser.parse_args(argv)
    tenant = None
    if args.tenant is not None:
        try:
            tenant = validate_tenant(args.tenant)
        except InvalidRequestError as exc:
            parser.error(str(exc))

    def body(service: DispatchService) -> str:
        keys = (service if tenant is None else service.for_tenant(tenant)).api_keys()
        if args.json:
            return json_text({"keys": [_key_dict(key) for key in keys]})
        return "\n".join(_key_line(key) for key in keys) or "no API keys"

    return run_with_service(parser, args, body, Access.READ)


def _key_dict(key: ApiKey) -> dict[str, object]:
    return {"key_id": key.key_id, "tenant": key.tenant, "role": str(key.role),
            "created_at": key.created_at, "revoked_at": key.revoked_at}


def _key_line(key: ApiKey) -> str:
    state = "active" if key.revoked_at is None else f"revoked {format_utc(key.revoked_at)}"
    whom = "provider" if key.role is KeyRole.PROVIDER else f"tenant {key.tenant!r}"
    return f"{key.key_id}  {whom}  created {format_utc(key.created_at)}  {state}"


_HANDLERS: dict[str, Handler] = {"create": _create, "revoke": _revoke, "list": _list}


def main(argv: Sequence[str], *, prog: str) -> int:
    """``apikey SUBCOMMAND ...``: route to one of ``SUBCOMMANDS``."""
    arguments = list(argv)
    word = arguments[0] if arguments else None
    if word in ("-h", "--help"):
        emit(f"usage: {prog} {{{','.join(SUBCOMMANDS)}}} [options]   (SUBCOMMAND --help for "
             "its options)\n\n"
             "  create  a key for a tenant (or, --provider, for the SMS provider's delivery "
             "receipts); prints its token, once\n"
             "  revoke  refuse a key's token from now on\n"
             "  list    keys with their tenant and times (never a token)")
        return ExitCode.OK
    if word not in _HANDLERS:
        given = "no subcommand" if word is None else f"unknown subcommand {word!r}"
        print(f"{prog}: error: {given} (choose from {', '.join(SUBCOMMANDS)}; see {prog} "
              "--help)", file=sys.stderr)
        return ExitCode.USAGE
    return route(_HANDLERS, arguments[1:], prog=f"{prog} {word}", group="apikey")
