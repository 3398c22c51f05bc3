"""``PostgresStore.prune``: finished messages deleted in batches, each one transaction.

Candidates are locked (``FOR UPDATE``, re-checked by PostgreSQL against their newest
version) before their deliveries go, so a requeue that reopens a completed message either
lands first (and the message is no longer a candidate) or waits and finds it gone. Claims
and settles never touch a finished message, so they never wait for a prune. Ids come from
identity sequences, which never hand an id out twice.
"""

from __future__ import annotations

from sms_sim.dispatch.pruning import PruneResult
from sms_sim.dispatch.stores.postgres.database import Database
from sms_sim.dispatch.stores.postgres.lists import NONE_LEASED

__all__ = ["prune_messages"]

_SCAN = 1000  # candidate messages looked at (and locked) per batch

_FINISHED = f"""((m.status = 'completed' AND m.completed_at < %(cutoff)s)
    OR (m.status = 'cancelled' AND m.updated_at < %(cutoff)s AND {NONE_LEASED}))"""
_CANDIDATES_SQL = f"""
SELECT m.id, (SELECT count(*) FROM deliveries AS d WHERE d.message_id = m.id)
FROM messages AS m WHERE m.id > %(after)s AND {_FINISHED} ORDER BY m.id LIMIT %(scan)s
FOR UPDATE"""
_COUNT_SQL = f"""
SELECT count(*), COALESCE(sum((SELECT count(*) FROM deliveries AS d
                               WHERE d.message_id = m.id)), 0)
FROM messages AS m WHERE {_FINISHED}"""


def prune_messages(db: Database, finished_before: float, *, dry_run: bool,
                   batch_rows: int) -> PruneResult:
    """``DispatchStore.prune`` on checked arguments."""
    if dry_run:
        row = db.run(lambda conn: conn.execute(_COUNT_SQL,
                                               {"cutoff": finished_before}).fetchone())
        assert row is not None  # an aggregate always gives a row
        return PruneResult(messages=int(row[0]), deliveries=int(row[1]))
    messages = deliveries = after = 0
    while True:
        with db.transaction() as conn:
            candidates = conn.execute(_CANDIDATES_SQL, {"cutoff": finished_before,
                                                        "after": after, "scan": _SCAN})
            batch: list[int] = []
            rows = 0
            for message_id, count in candidates.fetchall():
                if batch and rows + count > batch_rows:
                    break
                batch.append(message_id)
                rows += count
            if not batch:
                break
            conn.execute("DELETE FROM held_dlrs WHERE uid IN (SELECT uid FROM messages "
                         "WHERE id = ANY(%s))", (batch,))
            conn.execute("DELETE FROM deliveries WHERE message_id = ANY(%s)", (batch,))
            conn.execute("DELETE FROM messages WHERE id = ANY(%s)", (batch,))
        messages += len(batch)
        deliveries += rows
        after = batch[-1]
    return PruneResult(messages=messages, deliveries=deliveries)
