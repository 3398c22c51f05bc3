"""Query plans the SQLite store's speed depends on: reading one message back (every submit's
answer, every GET of a message) must be one rowid probe, not a scan of every message."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sms_sim.dispatch.stores import SqliteStore
from sms_sim.dispatch.stores.sqlite.rows import _message_filter


def _plan(path: Path, sql: str, parameters: tuple[object, ...]) -> str:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", parameters).fetchall()
    finally:
        conn.close()
    return " | ".join(str(row[-1]) for row in rows)


def test_reading_one_message_is_a_rowid_probe(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "s.db", create=True).close()
    sql = f"SELECT id FROM messages {_message_filter(7, None)} ORDER BY id DESC LIMIT ?5"
    plan = _plan(tmp_path / "s.db", sql, (7, None, None, None, 1))
    assert "USING INTEGER PRIMARY KEY" in plan and "SCAN" not in plan, plan
