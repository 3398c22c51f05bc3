"""The store-maintenance commands on SQLite files, run in this process through ``cli.main``:
``prune`` (its promises on every store are in ``tests/contract/test_prune_contract.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sms_sim.clock import RealClock
from sms_sim.dispatch.contract import SettleKind, Settlement
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.stores import SqliteStore
from tests.conftest import phones
from tests.integration.conftest import Cli

DAY_S = 86_400.0


def _finished_days_ago(store: SqliteStore, days: float, count: int, start: int) -> int:
    """A message of ``count`` recipients completed ``days`` ago (driven at past times)."""
    at = RealClock().now() - days * DAY_S
    message_id = store.submit(NewMessage.validated(content="old",
                                                   recipients=phones(count, start)), at).message_id
    claims = store.claim("w", 100, 30.0, at)
    store.settle("w", [Settlement(delivery_id=c.delivery_id, attempts=c.attempts,
                                  kind=SettleKind.SENT) for c in claims], at + 1)
    return message_id


def test_prune_deletes_what_finished_before_the_cutoff_and_a_dry_run_only_counts(
        cli: Cli, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "sms_sim.db")
    _finished_days_ago(store, 40, 3, 0)
    _finished_days_ago(store, 31, 1, 10)
    recent = _finished_days_ago(store, 2, 2, 20)
    store.close()
    dry = cli("prune", "--older-than", "30d", "--dry-run")
    assert dry.code == 0, dry.err
    assert dry.out.startswith("would prune 2 messages and 4 deliveries finished before 20")
    assert cli("list").out.count("\n") >= 3
    done = cli("prune", "--older-than", "30d")
    assert done.code == 0 and done.out.startswith("pruned 2 messages and 4 deliveries"), done
    again = cli("prune", "--older-than", "1d")
    assert again.out.startswith("pruned 1 message and 2 deliveries"), again
    store = SqliteStore(tmp_path / "sms_sim.db")
    assert store.count_messages() == 0 and not store.messages(message_id=recent)
    store.close()


@pytest.mark.parametrize(("args", "fragment"), [
    (["--older-than", "30"], "not a duration: '30'"),
    ([], "the following arguments are required: --older-than"),
    # It was exit 1 naming "older_than", as if the store had failed.
    (["--older-than", "1000000d"], "argument --older-than: 8.64e+10 s reaches back before 1970"),
])
def test_prune_refuses_a_bad_age_in_one_line(cli: Cli, args: list[str], fragment: str) -> None:
    ran = cli("prune", *args)
    assert ran.code == 2 and fragment in ran.err and len(ran.err.splitlines()) == 1, ran


def test_prune_of_a_missing_database_is_refused_and_creates_nothing(
        cli: Cli, tmp_path: Path) -> None:
    ran = cli("prune", "--older-than", "1d", "--db", "missing.db")
    assert ran.code == 1 and "error:" in ran.err and len(ran.err.splitlines()) == 1
    assert not (tmp_path / "missing.db").exists()
