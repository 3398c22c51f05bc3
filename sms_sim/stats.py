"""Running tallies of send outcomes, per sender and in total.

A ``SendTally`` has exactly one writer (the monitor thread while it runs, then the thread
that joined it), so it needs no lock; readers on other threads see plain ints and floats,
each read atomic under the GIL, which is all a progress line needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["SendTally", "LogHistogram", "ZERO_BUCKET"]


@dataclass(slots=True)
class SendTally:
    """Counts and total measured send time for one sender (or for all of them)."""

    sent: int = 0
    failed: int = 0
    total_send_s: float = 0.0

    @property
    def attempts(self) -> int:
        return self.sent + self.failed

    @property
    def avg_send_s(self) -> float:
        """Mean measured send duration; 0.0 before the first outcome."""
        return self.total_send_s / self.attempts if self.attempts else 0.0


ZERO_BUCKET = -(10**9)  # the bucket of zero (and negative) values


class LogHistogram:
    """Counts of positive values in buckets 1 % wide (relative), for percentiles in O(1) memory.

    The event loops fill ``counts`` themselves (bucket ``floor(ln(value) * INV_LOG_GROWTH)``,
    ``ZERO_BUCKET`` for zero), inlined because a method call per send would cost more than
    the rest of the loop; ``total`` is set once at the end. A percentile is reported as its
    bucket's geometric midpoint, so it is within 0.5 % of
    an exact order statistic; zero and negative values share one bucket reported as 0.0.
    Memory is a dict of occupied buckets: a few thousand entries at most for any spread of
    values from nanoseconds to days.
    """

    __slots__ = ("counts", "total")

    GROWTH = 1.01
    INV_LOG_GROWTH = 1.0 / math.log(GROWTH)

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0 < q <= 1) of the values added; 0.0 when empty."""
        if not 0 < q <= 1:
            raise ValueError(f"q must be in (0, 1] (got {q!r})")
        if self.total == 0:
            return 0.0
        rank = math.ceil(q * self.total)
        seen = 0
        for key in sorted(self.counts):
            seen += self.counts[key]
            if seen >= rank:
                if key == ZERO_BUCKET:
                    return 0.0
                return float(math.exp((key + 0.5) / LogHistogram.INV_LOG_GROWTH))
        raise AssertionError("unreachable: ranks never exceed the total")
