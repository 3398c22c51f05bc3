"""Running tallies of send outcomes, per sender and in total.

A ``SendTally`` has exactly one writer (the monitor thread while it runs, then the thread
that joined it), so it needs no lock; readers on other threads see plain ints and floats,
each read atomic under the GIL, which is all a progress line needs.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SendTally"]


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
