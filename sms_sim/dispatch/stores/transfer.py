"""Moving a whole database from one store to another with its state: ``copy_store`` (the
``copy`` command), for an operator outgrowing SQLite.

Not a ``DispatchStore`` operation: it works on rows, below the contract, because nothing the
contract offers can recreate a message as it was (its id, uid, version, serve order, a
delivery's attempts and lease losses). The durable stores share their column names, so a
row read from one is written to the other as it is; each offers ``transfer()``, whose
``snapshot`` reads the source in one consistent snapshot and whose ``load`` writes the
target in one transaction (a failed copy leaves the target empty).

What it promises: every message and delivery (ids, uids, tenants, idempotency keys and
request hashes, receipts, versions, times, attempts, lease losses, errors), each tenant's
serve order, every API key (as its hash, with its role), every tenant's opt-outs and the
delivery receipts held for deliveries not yet sent arrive as they were, and the target hands out
no id the source ever did. It refuses a target that holds anything, and a source with any
delivery leased: a worker is running, whose sends would be reported to the source only.
A submit still loading into an SQLite source (invisible to every reader) is left behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from sms_sim.dispatch.contract import DispatchStore
from sms_sim.dispatch.errors import ConflictError, LockedError
from sms_sim.errors import ConfigError

__all__ = ["copy_store", "same_database", "CopyResult", "Transferable", "TransferEnd",
           "Snapshot", "COLUMNS", "PAGED_TABLES", "COPY_BATCH_ROWS", "check_source",
           "refuse_leased"]

Row = tuple[Any, ...]
COPY_BATCH_ROWS = 10_000  # rows read from the source at a time (bounded memory)

# Every table the copy moves, with its columns in the order rows travel in. The two paged
# tables start with their integer id, and a delivery's second column is its message.
COLUMNS: dict[str, tuple[str, ...]] = {
    "messages": ("id", "tenant", "content", "status", "scheduled_at", "created_at",
                 "updated_at", "version", "dispatch_started_at", "completed_at",
                 "idempotency_key", "request_hash", "priority", "uid", "served_seq",
                 "served_at", "kept_class", "receipt", "encoding", "segments", "valid_until"),
    "deliveries": ("id", "message_id", "recipient", "status", "attempts", "next_attempt_at",
                   "lease_owner", "lease_until", "leased_at", "sent_at", "last_error",
                   "lease_losses", "dlr_at"),
    "tenants": ("name", "served_seq"),
    "api_keys": ("key_id", "tenant", "secret_hash", "created_at", "revoked_at", "role"),
    "opt_outs": ("tenant", "phone", "created_at"),
    "held_dlrs": ("uid", "recipient", "status", "at"),
}
PAGED_TABLES = ("messages", "deliveries")


class Snapshot(Protocol):
    """One consistent view of a source database."""

    def leased(self) -> int:
        """How many deliveries are leased."""
        ...

    def loading(self) -> frozenset[int]:
        """Ids of messages still being loaded by a submit (SQLite's chunked loads)."""
        ...

    def page(self, table: str, after: int, limit: int) -> list[Row]:
        """Up to ``limit`` rows of a paged table with ids above ``after``, by id."""
        ...

    def all_rows(self, table: str) -> list[Row]:
        """Every row of a small table (tenants, API keys)."""
        ...

    def id_floors(self) -> tuple[int, int]:
        """The largest message and delivery ids the database ever handed out."""
        ...


class TransferEnd(Protocol):
    """A durable store seen as rows."""

    def snapshot(self) -> AbstractContextManager[Snapshot]:
        """A consistent read of the whole database, held for the block."""
        ...

    def held(self) -> int:
        """How many rows its tables hold in all (0: empty)."""
        ...

    def load(self, batches: Iterator[tuple[str, Sequence[Row]]],
             id_floors: tuple[int, int]) -> None:
        """Write every batch (table, rows in ``COLUMNS`` order) in one transaction, and
        hand out no id at or below ``id_floors`` afterwards."""
        ...


@runtime_checkable
class Transferable(Protocol):
    def transfer(self) -> TransferEnd: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyResult:
    messages: int
    deliveries: int
    api_keys: int
    tenants: int
    opt_outs: int
    held_receipts: int  # receipts that arrived before their send was recorded
    left_loading: int  # submits still loading into the source, not copied


def copy_store(source: DispatchStore, target: DispatchStore, *,
               batch_rows: int = COPY_BATCH_ROWS) -> CopyResult:
    """Copy everything in ``source`` into the empty ``target`` (see the module's promises).
    Raises ``ConfigError`` for a store that cannot take part (in memory), ``ConflictError``
    for a target that holds anything, ``LockedError`` while a delivery of the source is
    leased, ``StoreError`` from either store; the target is left empty on any error."""
    if not isinstance(source, Transferable) or not isinstance(target, Transferable):
        raise ConfigError("copy moves SQLite and PostgreSQL databases (not memory:)")
    into = target.transfer()
    held = into.held()
    if held:
        raise ConflictError(f"the target already holds sms_sim data ({held:,} rows); copy "
                            "only into an empty database")
    counts = dict.fromkeys(COLUMNS, 0)
    with source.transfer().snapshot() as snapshot:
        refuse_leased(snapshot)
        loading = snapshot.loading()
        into.load(_batches(snapshot, loading, counts, batch_rows), snapshot.id_floors())
    return CopyResult(messages=counts["messages"], deliveries=counts["deliveries"],
                      api_keys=counts["api_keys"], tenants=counts["tenants"],
                      opt_outs=counts["opt_outs"], held_receipts=counts["held_dlrs"],
                      left_loading=len(loading))


def refuse_leased(snapshot: Snapshot) -> None:
    """``LockedError`` if any delivery of the source is leased. A lease that ran out counts
    too: only a claim rescues it, and the copy would carry it as leased by nobody."""
    leased = snapshot.leased()
    if leased:
        raise LockedError(f"{leased:,} deliveries of the source are leased: a worker is "
                          "sending from it, or one stopped without giving them back; stop "
                          "every worker (and submits) first, then copy again once a worker "
                          "has settled or rescued them (one run with --exit-when-idle does)")


def check_source(source: DispatchStore) -> None:
    """What ``copy_store`` refuses in ``source`` alone, checked before a target is made."""
    if isinstance(source, Transferable):
        with source.transfer().snapshot() as snapshot:
            refuse_leased(snapshot)


def _batches(snapshot: Snapshot, loading: frozenset[int], counts: dict[str, int],
             batch_rows: int) -> Iterator[tuple[str, Sequence[Row]]]:
    """The source's rows, table by table, counted as they go; messages still loading (and
    their deliveries) left out."""
    for table in PAGED_TABLES:
        message_column = 0 if table == "messages" else 1
        after = 0
        while rows := snapshot.page(table, after, batch_rows):
            after = rows[-1][0]
            kept = [row for row in rows if row[message_column] not in loading]
            counts[table] += len(kept)
            if kept:
                yield table, kept
    for table in COLUMNS:
        if table not in PAGED_TABLES:
            rows = snapshot.all_rows(table)
            counts[table] += len(rows)
            if rows:
                yield table, rows


def same_database(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> bool:
    """Whether two ``--db`` values plainly name one database (the same text, or the same
    file)."""
    first, second = os.fspath(source), os.fspath(target)
    if first == second:
        return True
    return os.path.exists(first) and os.path.exists(second) and os.path.samefile(first, second)
