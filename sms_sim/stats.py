"""Running tallies of send outcomes, per sender and in total.

A ``SendTally`` has exactly one writer (the monitor thread while it runs, then the thread
that joined it), so it needs no lock; readers on other threads see plain ints and floats,
each read atomic under the GIL, which is all a progress line needs.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from sms_sim.model import ErrorClass, ReceiptStatus

__all__ = ["SendTally", "SmsTally"]


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


def _zero_classes() -> dict[ErrorClass, int]:
    return dict.fromkeys(ErrorClass, 0)


def _zero_receipts() -> dict[ReceiptStatus, int]:
    return dict.fromkeys(ReceiptStatus, 0)


@dataclass(slots=True)
class SmsTally:
    """What the SMS model adds to a run's counts (issue 14), with the same single writer as
    ``SendTally``: segments of the sends made (accepted, and attempted), failed attempts
    per error class, messages expired before they could be sent, and receipts by status.
    ``delivered_s`` holds each delivered receipt's time from the message's arrival, for
    the percentiles (the virtual mode may empty it past a cap and replay, see
    ``virtual.percentiles``)."""

    segments_sent: int = 0
    segments_attempted: int = 0
    failures: dict[ErrorClass, int] = field(default_factory=_zero_classes)
    expired: int = 0
    receipts: dict[ReceiptStatus, int] = field(default_factory=_zero_receipts)
    delivered_s: array[float] = field(default_factory=lambda: array("d"))
