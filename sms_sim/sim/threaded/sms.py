"""The SMS model in the threaded mode (issue 14): what the senders and the monitor share
about each message beyond the message itself.

``SmsBook`` knows each message's segments, when it arrived (monotonic) and so when its
validity ends; the sender asks it before a send, the monitor after. Arrival times are
written by the producer as it releases a message and forgotten by the monitor once the
message's outcome is final, so the book holds only messages in flight (a burst needs no
book at all: everything arrived at the start). Messages are keyed by identity, as in
``RetryHandoff``. Dict reads and writes are atomic under the GIL, which is all the
producer (writer), senders (readers) and monitor (reader, remover) need.

The monitor draws each accepted send's receipt when it drains the outcome, from one stream
(``receipts_rng``): as with retries, which sender sent which message depends on thread
timing, so a per-sender stream would buy no reproducibility here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Final, Generic, TypeVar

from sms_sim.config import ReceiptModel, SimulationConfig
from sms_sim.model import ReceiptStatus
from sms_sim.policy import receipt_at, receipt_sampler
from sms_sim.segments import segments
from sms_sim.stats import SmsTally

__all__ = ["SmsBook", "EXPIRED_ERROR", "receipts_rng"]

Item = TypeVar("Item")

# The error of an outcome that never was a send: the message's validity ended first.
EXPIRED_ERROR: Final = "expired before sending"


def receipts_rng(seed: int) -> random.Random:
    """The threaded mode's one stream of receipts under ``seed``."""
    return random.Random(f"sms_sim:{seed}:receipts")


class SmsBook(Generic[Item]):
    """Segments, arrival and validity per message, receipts and the SMS tally of one run.

    ``started_at`` is t = 0 of the run (monotonic); with ``timed`` arrivals each message's
    arrival is ``arrived`` by the producer, else every message arrived at ``started_at``.
    ``text_of`` reads an item's text, counted when the run's content is each message's own.
    """

    def __init__(
        self, config: SimulationConfig, *, seed: int, started_at: float, timed: bool,
        text_of: Callable[[Item], str],
    ) -> None:
        content = config.content
        fixed = None if content is None else content.fixed
        self.segments_of: Callable[[Item], int]
        if content is None:
            self.segments_of = _one
        elif fixed is not None:
            count = fixed.count
            self.segments_of = lambda message: count
        else:
            self.segments_of = lambda message: segments(text_of(message)).count
        self.started_at = started_at
        self.valid_for_s = config.valid_for_s
        self._arrived: dict[int, float] | None = {} if timed else None
        self._model: ReceiptModel | None = config.receipts
        self._draw = (None if config.receipts is None
                      else receipt_sampler(receipts_rng(seed), config.receipts))
        self.tally = SmsTally()

    @property
    def is_timed(self) -> bool:
        return self._arrived is not None

    def arrived(self, message: Item, at: float) -> None:
        """Record that ``message`` arrived at monotonic ``at`` (the producer)."""
        if self._arrived is not None:
            self._arrived[id(message)] = at

    def arrival_of(self, message: Item) -> float:
        if self._arrived is None:
            return self.started_at
        return self._arrived.get(id(message), self.started_at)

    def valid_until(self, message: Item) -> float:
        """When ``message``'s validity ends (monotonic; ``inf`` without a validity)."""
        if self.valid_for_s is None:
            return math.inf
        return self.arrival_of(message) + self.valid_for_s

    def forget(self, message: Item) -> None:
        """``message``'s outcome is final: its arrival is no longer needed (the monitor)."""
        if self._arrived is not None:
            self._arrived.pop(id(message), None)

    def receipt(self, message: Item, sent_at: float) -> None:
        """Draw and count the receipt of ``message``, accepted at monotonic ``sent_at``."""
        if self._draw is None:
            return
        arrived = self.arrival_of(message)
        valid_until = None if self.valid_for_s is None else arrived + self.valid_for_s
        status, at = receipt_at(sent_at, self._draw(), valid_until)
        self.tally.receipts[status] += 1
        if status is ReceiptStatus.DELIVERED:
            self.tally.delivered_s.append(at - arrived)


def _one(message: object) -> int:
    return 1
