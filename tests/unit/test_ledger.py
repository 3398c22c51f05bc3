"""``LedgerProvider`` opens only a ledger: a new or empty file, or one it made itself.

``--ledger`` once wrote its tables into whatever SQLite file it was given, the store itself
or another application's database (issue 11, item 7). Every refusal is one line and leaves
the file exactly as it was: no tables, no journal-mode change, no header change.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from sms_sim.cli import main
from sms_sim.clock import VirtualClock
from sms_sim.dispatch.ledger import LedgerProvider
from sms_sim.dispatch.stores import SqliteStore
from sms_sim.dispatch.transport import TransportError
from tests.conftest import T0, one_message


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master "
                                               "WHERE type = 'table'")}


def refusal(path: Path) -> str:
    """Open ``path`` as a ledger, expect a refusal, and return its message."""
    with pytest.raises(TransportError) as caught:
        LedgerProvider(path, clock=VirtualClock())
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    assert str(path) in message
    return message


def foreign_database(path: Path, *statements: str) -> None:
    """Another application's database: rollback journal, its own tables and rows."""
    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement)
    sqlite3.connect(path).close()


def test_an_sms_sim_store_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "alert.db"
    store = SqliteStore(path)
    store.submit(one_message(), T0)
    store.close()
    before, names = digest(path), tables(path)
    assert "sms_sim store" in refusal(path)
    assert digest(path) == before
    assert tables(path) == names  # no keys or attempts table added to the store


def test_another_applications_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "crm.db"
    foreign_database(path, "CREATE TABLE customers (id INTEGER PRIMARY KEY, phone TEXT)",
                     "INSERT INTO customers (phone) VALUES ('555-000-0001')")
    before = digest(path)
    message = refusal(path)
    assert "not a provider ledger" in message and "customers" in message
    assert digest(path) == before
    with sqlite3.connect(path) as conn:  # still in its own journal mode, not switched to WAL
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_database_with_the_ledger_tables_and_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lookalike.db"
    foreign_database(path, "CREATE TABLE keys (key TEXT PRIMARY KEY)",
                     "CREATE TABLE attempts (seq INTEGER PRIMARY KEY)",
                     "CREATE TABLE users (name TEXT)")
    before = digest(path)
    assert "users" in refusal(path)
    assert digest(path) == before


def test_a_database_of_another_application_id_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    foreign_database(path, "PRAGMA application_id = 1")  # no tables: the header says whose
    before = digest(path)
    assert "application" in refusal(path)
    assert digest(path) == before


@pytest.mark.parametrize("content", [b"phone,name\n555-000-0001,Ann\n" * 40, b"\0" * 4096],
                         ids=["text", "zeros"])
def test_a_file_that_is_not_sqlite_is_refused_and_left_untouched(
        tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "contacts.csv"
    path.write_bytes(content)
    assert "not an SQLite database" in refusal(path)
    assert path.read_bytes() == content


def test_a_new_ledger_is_marked_as_one_and_opens_again(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    clock = VirtualClock()
    ledger = LedgerProvider(path, clock=clock)
    ledger.send("u1:555-000-0001", "555-000-0001", "hi")
    ledger.close()
    with sqlite3.connect(path) as conn:
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
    assert application_id != 0  # the mark that tells a ledger from a look-alike
    again = LedgerProvider(path, clock=clock)
    assert again.delivered_targets() == {"u1:555-000-0001"}
    again.close()


def test_a_ledger_from_before_the_mark_is_accepted_and_marked(tmp_path: Path) -> None:
    path = tmp_path / "old-ledger.db"
    foreign_database(
        path, "CREATE TABLE keys (key TEXT PRIMARY KEY)",
        "CREATE TABLE attempts (seq INTEGER PRIMARY KEY, key TEXT NOT NULL, target TEXT NOT "
        "NULL, worker TEXT NOT NULL, delivered INTEGER NOT NULL, at REAL NOT NULL)",
        "INSERT INTO keys VALUES ('1:555-000-0001')",
        "INSERT INTO attempts VALUES (1, '1:555-000-0001', '1:555-000-0001', '', 1, 0)")
    ledger = LedgerProvider(path, clock=VirtualClock())
    assert ledger.summary().delivered == 1
    ledger.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] != 0


def test_the_worker_given_its_own_store_as_ledger_exits_1_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "alert.db"
    SqliteStore(path).close()
    before = tables(path)
    code = main(["worker", "--db", str(path), "--ledger", str(path), "--exit-when-idle",
                 "--quiet"], prog="sms_sim")
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.startswith("sms_sim worker: error: ")
    assert len(captured.err.splitlines()) == 1, captured.err
    assert "sms_sim store" in captured.err
    assert tables(path) == before
