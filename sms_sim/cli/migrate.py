"""``migrate``: create or upgrade the schema of the database ``--db`` names.

PostgreSQL schemas change only through this command (numbered migrations, each in its own
transaction): every other command refuses a database at an older version with one line
naming it, so a shared database is upgraded when its operator decides, with the workers
stopped, never as a side effect of the first worker to start. An empty PostgreSQL database
is also given the schema by ``init`` or the first ``submit``, as a SQLite file is. SQLite
files are upgraded whenever they are opened for writing; for them this opens the file once
and says whether it was upgraded (a missing file is refused: ``init`` makes one).
"""

from __future__ import annotations

from collections.abc import Sequence

from sms_sim.cli.store_command import base_parser, run_and_print
from sms_sim.dispatch.stores import migrate_store

__all__ = ["main"]


def main(argv: Sequence[str], *, prog: str) -> int:
    parser = base_parser(prog, "Create or upgrade the sms_sim schema of --db (PostgreSQL: "
                               "run it after installing a new sms_sim, with the workers "
                               "stopped; other commands refuse an older schema).")
    args = parser.parse_args(argv)
    return run_and_print(parser, args, lambda: migrate_store(args.db), changes=True)
