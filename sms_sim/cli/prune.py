"""``prune``: delete the messages that finished long ago, with their deliveries.

Finished work does not slow claims (the stores' claim indexes leave it out), but it fills
the disk and the listings. ``prune --older-than 30d`` deletes completed messages, and
cancelled ones with no send still in flight, that finished more than that long ago, in
short batches (``DispatchStore.prune``), so workers keep claiming meanwhile; ``--dry-run``
only counts them. Their idempotency keys go with them.
"""

from __future__ import annotations

from collections.abc import Sequence

from sms_sim.cli.store_command import Access, base_parser, run_with_service
from sms_sim.cli.when import duration_argument
from sms_sim.clock import RealClock
from sms_sim.dispatch.service import DispatchService
from sms_sim.dispatch.validation import format_utc

__all__ = ["main"]


def main(argv: Sequence[str], *, prog: str) -> int:
    parser = base_parser(prog, "Delete completed and cancelled messages that finished more "
                               "than --older-than ago, with their deliveries, in short "
                               "batches (workers keep running). Their idempotency keys are "
                               "forgotten: a client retrying such an old request would "
                               "create a new message.")
    parser.add_argument("--older-than", required=True, type=duration_argument,
                        metavar="DURATION", help="how long ago they must have finished: "
                        "90s, 10m, 2h, 30d or 1d12h")
    parser.add_argument("--dry-run", action="store_true",
                        help="say how many would be deleted, and delete nothing")
    args = parser.parse_args(argv)
    if args.older_than > RealClock().now():  # a usage error, before any store is opened
        parser.error(f"argument --older-than: {args.older_than:g} s reaches back before "
                     "1970: nothing finished that long ago")

    def body(service: DispatchService) -> str:
        cutoff, result = service.prune(args.older_than, dry_run=args.dry_run)
        verb = "would prune" if args.dry_run else "pruned"
        return (f"{verb} {_counted(result.messages, 'message')} and "
                f"{_counted(result.deliveries, 'delivery', 'deliveries')} finished before "
                f"{format_utc(cutoff)}")

    return run_with_service(parser, args, body, Access.READ if args.dry_run else Access.WRITE)


def _counted(count: int, one: str, many: str | None = None) -> str:
    return f"{count:,} {one if count == 1 else many or one + 's'}"
