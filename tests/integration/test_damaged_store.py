"""A damaged sms_sim file stops every command with one line (issue 11, item 12: ``submit``
changed a damaged file and ``worker --exit-when-idle`` kept running past 30 s)."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from sms_sim.dispatch.contract import SettleKind, Settlement
from sms_sim.dispatch.errors import StoreDamagedError
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.stores import SqliteStore
from tests.conftest import START, T0, phones


def _overwrite_roots(path: Path, names: str, *, offset: int, data: bytes | None) -> None:
    """Write ``data`` (by default a whole page of 0xa5) at ``offset`` into the root page of
    every b-tree whose name is LIKE ``names``, in a closed, checkpointed file."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        roots = [row[0] for row in conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name LIKE ?", (names,))]
    conn.close()
    with path.open("r+b") as raw:
        for root in roots:
            raw.seek((root - 1) * page_size + offset)
            raw.write(b"\xa5" * page_size if data is None else data)


def _damaged(path: Path) -> None:
    """A real sms_sim file with the pages of its delivery indexes overwritten."""
    store = SqliteStore(path)
    for _ in range(3):
        store.submit(NewMessage.validated(content="x", recipients=phones(400)), T0)
    store.close()
    _overwrite_roots(path, "deliveries_%", offset=0, data=None)


def test_the_store_reports_damage_as_its_own_error(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    _damaged(path)
    store = SqliteStore(path)
    with pytest.raises(StoreDamagedError, match="is damaged"):
        store.claim("w", 10, 30.0, T0)
    store.close()


@pytest.mark.parametrize("command", [
    ["submit", "hello", "--to", "555-000-0001"],
    ["worker", "--exit-when-idle", "--quiet"],
])
def test_every_command_stops_on_a_damaged_file_with_one_line(
        tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "damaged.db"
    _damaged(path)
    before = path.read_bytes()
    done = subprocess.run([*START, *command, "--db", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr
    assert "is damaged" in done.stderr
    if command[0] == "submit":
        assert path.read_bytes() == before  # nothing written into a damaged file


def test_a_worker_checks_every_page_as_it_starts(tmp_path: Path) -> None:
    """Damage in pages no statement of the dispatch loop reads (the unique indexes a submit
    writes) went unseen: the worker idled, then exited 0 with the file still damaged. It
    runs ``quick_check`` as it starts."""
    path = tmp_path / "quiet-damage.db"
    store = SqliteStore(path)
    store.submit(NewMessage.validated(content="x", recipients=phones(1)), T0)
    (claim,) = store.claim("w", 1, 30.0, T0)
    store.settle("w", [Settlement(claim.delivery_id, claim.attempts, SettleKind.SENT)], T0)
    store.close()
    # Each unique index's page header: its cell count.
    _overwrite_roots(path, "sqlite_autoindex_messages_%", offset=3, data=b"\x7f\x7f")
    done = subprocess.run([*START, "worker", "--exit-when-idle", "--quiet", "--db", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done
    assert done.stderr.count("\n") == 1 and "is damaged (Page" in done.stderr, done.stderr


def test_check_of_a_file_too_damaged_to_open_says_what_to_do_not_to_run_check(
        tmp_path: Path) -> None:
    # It said "stop using it, run 'check' on it and restore it from a backup".
    path = tmp_path / "damaged.db"
    _damaged(path)
    done = subprocess.run([*START, "check", "--db", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1, done
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"{str(path)!r} is damaged: " in done.stderr
    assert "restore it from a backup" in done.stderr and "run 'check'" not in done.stderr
