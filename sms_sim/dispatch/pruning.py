"""Pruning finished messages: the part of the store contract that deletes.

Finished work does not slow the hot paths of the durable stores (their claim indexes leave
it out), but it still fills the disk and the listings: an operator removes what finished
long ago with ``sms_sim prune --older-than 30d``. Kept apart from ``contract`` (which
``DispatchStore`` gathers it into, as it does ``KeyStore``) because it is the one operation
that forgets, and its promises are about what it may never touch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from sms_sim.dispatch.validation import InvalidRequestError

__all__ = ["PruneStore", "PruneResult", "PRUNE_BATCH_ROWS", "check_prune"]

# Deliveries deleted per transaction (a message with more goes alone, whole): short enough
# that SQLite's workers get the write lock between batches, and that PostgreSQL's vacuum is
# not held back by one long delete.
PRUNE_BATCH_ROWS = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneResult:
    """How many messages, and deliveries of theirs, a prune deleted (or would delete)."""

    messages: int
    deliveries: int


class PruneStore(Protocol):
    """What a store promises about deleting finished messages."""

    def prune(self, finished_before: float, *, dry_run: bool = False,
              batch_rows: int = PRUNE_BATCH_ROWS) -> PruneResult:
        """Delete every message that finished before ``finished_before`` (epoch seconds),
        each with all its deliveries; returns how many of each went (``dry_run``: would
        go, changing nothing).

        Finished: ``completed`` with ``completed_at`` before the cutoff, or ``cancelled``
        with ``updated_at`` (when it was cancelled) before it and none of its deliveries
        still leased (a send in flight is waited for). Nothing else is touched: not a
        scheduled or dispatching message, not API keys.

        The work goes in batches by message id, each one transaction that deletes whole
        messages holding at most ``batch_rows`` deliveries in all (a bigger message goes
        alone): readers and claims never see part of a message, and a prune cut short
        leaves only whole messages. Ids are never handed out again. An idempotency key and
        the receipt of a pruned message are forgotten with it: a repeat of its request
        creates a new message, so prune only past every client's retry horizon. Raises
        ``InvalidRequestError`` for a cutoff that is not finite or ``batch_rows`` < 1.
        """
        ...


def check_prune(finished_before: float, batch_rows: int) -> None:
    """The ``InvalidRequestError`` ``PruneStore.prune`` promises for bad arguments."""
    if isinstance(finished_before, bool) or not isinstance(finished_before, (int, float)) \
            or not math.isfinite(finished_before):
        raise InvalidRequestError(f"finished_before must be a finite time in epoch seconds "
                                  f"(got {finished_before!r})")
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise InvalidRequestError(f"batch_rows must be an integer >= 1 (got {batch_rows!r})")
