"""A lower bound of the k-th *received* time at any sender count, from one replication's
draws: what lets a plan that targets receipts rule counts out without running them.

Messages start their first attempts in arrival order at every count (see ``deliveries``).
When message j starts, messages 1..j-1 have all started, and S senders cannot have finished
more than S t of work by time t, with at most one first attempt each still in flight; so
``start_j >= W_{j-1} / S - M``, W_{j-1} the first-attempt occupancy of messages 1..j-1 and M
the largest first-attempt occupancy. Its receipt comes at least ``y_j`` later, y_j its first
send time plus its receipt delay (a retried message only comes later). So the k-th received
time is at least the k-th smallest of ``W_{j-1} / S - M + y_j`` over the receivable messages:
the order statistic of values each at or below the true one.

Kept small: messages are grouped in ``BLOCKS`` blocks in start order, each taking its first
message's W (the least in the block), and y is rounded down to a 5 % logarithmic grid, so
each value only goes down and the bound stays a bound. Messages never drawn by the run's
stop are counted as receivable with the W of everything drawn and y = 0 (a value below
any of theirs). ``kth_lower_s`` bisects on the time: a few hundred ``bisect`` calls.

Not built with a validity: an expired message does no work, so ``W_{j-1}`` would overstate
the work done before message j starts and the bound could exceed the true time.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

__all__ = ["ReceiptBoundBuilder", "ReceiptBound", "BLOCKS"]

BLOCKS = 1000
_GROWTH = 1.05
_LOG_GROWTH = math.log(_GROWTH)
_ITERATIONS = 40


@dataclass(frozen=True, slots=True)
class _Block:
    work_s: float  # W of the block's first message
    floors_s: tuple[float, ...]  # the rounded-down y of its receivable messages, ascending
    cumulative: tuple[int, ...]  # how many have y at or below each floor


@dataclass(frozen=True, slots=True)
class ReceiptBound:
    """What one replication's draws say about every count (small and picklable)."""

    blocks: tuple[_Block, ...]
    drawn_work_s: float  # W of every message drawn
    undrawn: int  # messages never drawn, counted as receivable
    drawn: int
    max_occupancy_s: float

    def kth_lower_s(self, k: int, senders: int) -> float:
        """A time the k-th receipt cannot beat with ``senders`` senders (-inf when fewer
        than k messages could ever be received, which other bounds handle)."""
        if self._count_at(math.inf, senders) < k:
            return -math.inf
        low, high = -self.max_occupancy_s, 1.0
        while self._count_at(high, senders) < k:
            high *= 2
        for _ in range(_ITERATIONS):  # count(low) < k <= count(high)
            middle = (low + high) / 2
            if self._count_at(middle, senders) >= k:
                high = middle
            else:
                low = middle
        return low

    def _count_at(self, time_s: float, senders: int) -> int:
        """How many values ``W / senders - M + y`` are at or below ``time_s``."""
        shift = time_s + self.max_occupancy_s
        total = 0
        for block in self.blocks:
            position = bisect.bisect_right(block.floors_s, shift - block.work_s / senders)
            if position:
                total += block.cumulative[position - 1]
        if self.undrawn and self.drawn_work_s / senders <= shift:
            total += self.undrawn
        return total


class ReceiptBoundBuilder:
    """Collects a replication's first attempts in start order (``first``), then ``result``."""

    def __init__(self, num_messages: int) -> None:
        self._num_messages = num_messages
        self._per_block = max(1, math.ceil(num_messages / BLOCKS))
        self._blocks: list[tuple[float, dict[int, int]]] = []
        self._work_s = 0.0
        self._max_s = 0.0
        self._drawn = 0

    def first(self, occupancy_s: float, receipt_after_s: float | None) -> None:
        """Message number ``drawn + 1`` starts: its first attempt holds a sender
        ``occupancy_s``; ``receipt_after_s`` is its y (None: never received)."""
        if self._drawn % self._per_block == 0:
            self._blocks.append((self._work_s, {}))
        if receipt_after_s is not None:
            cells = self._blocks[-1][1]
            cell = (-1 << 30) if receipt_after_s <= 0 else math.floor(
                math.log(receipt_after_s) / _LOG_GROWTH)
            cells[cell] = cells.get(cell, 0) + 1
        self._work_s += occupancy_s
        if occupancy_s > self._max_s:
            self._max_s = occupancy_s
        self._drawn += 1

    def result(self) -> ReceiptBound:
        blocks = []
        for work_s, cells in self._blocks:
            keys = sorted(cells)
            floors = tuple(0.0 if key == (-1 << 30) else _GROWTH ** key * (1 - 1e-12)
                           for key in keys)
            running, cumulative = 0, []
            for key in keys:
                running += cells[key]
                cumulative.append(running)
            blocks.append(_Block(work_s, floors, tuple(cumulative)))
        return ReceiptBound(blocks=tuple(blocks), drawn_work_s=self._work_s,
                            undrawn=self._num_messages - self._drawn, drawn=self._drawn,
                            max_occupancy_s=self._max_s)
