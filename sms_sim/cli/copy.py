"""``copy``: move a whole database to another store, with its state: the way up from SQLite
to PostgreSQL (``sms_sim copy --from sms_sim.db --to postgresql://...``).

Everything travels as it is (``dispatch.stores.copy_database``): ids, uids, tenants,
idempotency keys, receipts, every delivery's status, attempts and errors, the serve order,
API keys. It refuses a target that holds anything and a source on which a worker holds
leases (stop the workers and wait for their leases first); the source is only read.
"""

from __future__ import annotations

from collections.abc import Sequence

from sms_sim.cli.common import DefaultsHelpFormatter, OneLineParser
from sms_sim.cli.store_command import run_and_print, store_url
from sms_sim.cli.views import counted
from sms_sim.dispatch.stores import copy_database, display_url

__all__ = ["main"]


def main(argv: Sequence[str], *, prog: str) -> int:
    parser = OneLineParser(
        prog=prog, formatter_class=DefaultsHelpFormatter,
        description="Copy every message, delivery (with its status, attempts and errors), "
                    "tenant and API key of --from into the empty database --to, ids "
                    "kept. Stop the workers first: a source with leased deliveries is "
                    "refused. The source is only read.")
    parser.add_argument("--from", dest="source", type=store_url, required=True, metavar="DB",
                        help="the database to copy: a file, sqlite:///path or "
                             "postgresql://user@host/db")
    parser.add_argument("--to", dest="target", type=store_url, required=True, metavar="DB",
                        help="an empty (or missing) database to copy into")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging on stderr")
    args = parser.parse_args(argv)

    def work() -> str:
        result = copy_database(args.source, args.target)
        parts = [counted(result.messages, "message"),
                 counted(result.deliveries, "delivery", "deliveries"),
                 counted(result.api_keys, "API key"), counted(result.opt_outs, "opt-out")]
        if result.held_receipts:
            parts.append(counted(result.held_receipts, "held receipt"))
        order = "tenant's serve order" if result.tenants == 1 else "tenants' serve order"
        text = (f"copied {', '.join(parts)} and {result.tenants:,} {order} "
                f"from {display_url(args.source)} to {display_url(args.target)}")
        if result.left_loading:
            text += (f"; {result.left_loading} submit(s) still loading into the source were "
                     "not copied")
        return text

    return run_and_print(parser, args, work, changes=True)
