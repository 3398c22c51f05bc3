"""``SqliteStore.prune``: finished messages deleted in short write transactions, and the id
floors that keep their ids from being handed out again.

SQLite gives a new row the largest id in its table plus one, so deleting the newest
messages would hand their ids out again (a client polling message 42 would find another
message). Before each batch deletes, the largest message and delivery ids are kept in
``sms_sim_meta`` (``message_id_floor``, ``delivery_id_floor``), and inserts start above
them (``NEXT_MESSAGE_ID_SQL``, ``next_delivery_id``). Between batches the write lock is let
go (``Database.let_others_in``), so workers claim while a large prune runs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from sms_sim.dispatch.pruning import PruneResult
from sms_sim.dispatch.stores.sqlite.database import Write

__all__ = ["prune_messages", "NEXT_MESSAGE_ID_SQL", "next_delivery_id", "id_floors"]

Read = Callable[[Callable[[sqlite3.Connection], tuple[int, int]]], tuple[int, int]]

_SCAN = 1000  # candidate messages looked at per batch


_FLOORS = {"messages": "message_id_floor", "deliveries": "delivery_id_floor"}


def _floor(table: str) -> str:
    """SQL for the largest id ``table`` has handed out: its largest now, or a pruned one."""
    return (f"max(COALESCE((SELECT max(id) FROM {table}), 0), COALESCE((SELECT CAST(value "
            f"AS INTEGER) FROM sms_sim_meta WHERE key = {_FLOORS[table]!r}), 0))")


NEXT_MESSAGE_ID_SQL = f"({_floor('messages')} + 1)"
_NEXT_DELIVERY_ID_SQL = f"SELECT {_floor('deliveries')} + 1"
_FINISHED = """((m.status = 'completed' AND m.completed_at < :cutoff)
    OR (m.status = 'cancelled' AND m.updated_at < :cutoff AND NOT EXISTS
        (SELECT 1 FROM deliveries AS d WHERE d.message_id = m.id AND d.status = 'leased')))"""
_CANDIDATES_SQL = f"""
SELECT m.id, (SELECT count(*) FROM deliveries AS d WHERE d.message_id = m.id)
FROM messages AS m WHERE m.id > :after AND {_FINISHED} ORDER BY m.id LIMIT :scan"""
_COUNT_SQL = f"""
SELECT count(*), COALESCE(sum((SELECT count(*) FROM deliveries AS d
                               WHERE d.message_id = m.id)), 0)
FROM messages AS m WHERE {_FINISHED}"""
_KEEP_FLOOR_SQL = """
INSERT INTO sms_sim_meta (key, value) VALUES (?, COALESCE((SELECT max(id) FROM {table}), 0))
ON CONFLICT (key) DO UPDATE SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))
"""


def next_delivery_id(conn: sqlite3.Connection) -> int:
    """The id the next delivery inserted gets: above every id there is or was."""
    (next_id,) = conn.execute(_NEXT_DELIVERY_ID_SQL).fetchone()
    return int(next_id)


def id_floors(conn: sqlite3.Connection) -> tuple[int, int]:
    """The largest message and delivery ids ever handed out (0 when none)."""
    row = conn.execute(f"SELECT {_floor('messages')}, {_floor('deliveries')}").fetchone()
    return int(row[0]), int(row[1])


def prune_messages(write: Write, read: Read, between: Callable[[], None],
                   finished_before: float, *, dry_run: bool, batch_rows: int) -> PruneResult:
    """``DispatchStore.prune`` through ``write`` (one transaction per batch), calling
    ``between`` between batches; arguments checked."""
    cutoff = {"cutoff": finished_before}
    if dry_run:
        messages, deliveries = read(lambda conn: _counted(conn, cutoff))
        return PruneResult(messages=messages, deliveries=deliveries)
    total_messages = total_deliveries = 0
    after = 0
    while True:
        with write() as conn:
            batch = _batch(conn.execute(_CANDIDATES_SQL, {**cutoff, "after": after,
                                                          "scan": _SCAN}).fetchall(),
                           batch_rows)
            if not batch:
                break
            for table, key in _FLOORS.items():
                conn.execute(_KEEP_FLOOR_SQL.format(table=table), (key,))
            ids = [message_id for message_id, _ in batch]
            marks = ",".join("?" * len(ids))
            conn.execute(f"DELETE FROM held_dlrs WHERE uid IN (SELECT uid FROM messages "
                         f"WHERE id IN ({marks}))", ids)
            conn.execute(f"DELETE FROM delivery_counts WHERE message_id IN ({marks})", ids)
            conn.execute(f"DELETE FROM deliveries WHERE message_id IN ({marks})", ids)
            conn.execute(f"DELETE FROM messages WHERE id IN ({marks})", ids)
        total_messages += len(batch)
        total_deliveries += sum(count for _, count in batch)
        after = batch[-1][0]
        between()
    return PruneResult(messages=total_messages, deliveries=total_deliveries)


def _counted(conn: sqlite3.Connection, cutoff: dict[str, float]) -> tuple[int, int]:
    row = conn.execute(_COUNT_SQL, cutoff).fetchone()
    return int(row[0]), int(row[1])


def _batch(candidates: list[tuple[int, int]], batch_rows: int) -> list[tuple[int, int]]:
    """The first candidates whose deliveries fit ``batch_rows`` (at least one message)."""
    batch: list[tuple[int, int]] = []
    rows = 0
    for message_id, count in candidates:
        if batch and rows + count > batch_rows:
            break
        batch.append((message_id, count))
        rows += count
    return batch
