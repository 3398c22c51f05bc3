"""The SMS model's configuration values (issue 14): sender number types and their rates,
the run's content spec, the delivery receipt model and what a plan counts as delivered.

Validated here, through the same ``checks`` as the rest of ``config`` (which re-exports
these names), so every mode refuses the same values with the same one-line messages.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sms_sim.checks import check_finite as _check_finite
from sms_sim.checks import check_time as _check_time
from sms_sim.errors import ConfigError
from sms_sim.segments import Segments, segments

__all__ = [
    "SenderType",
    "SENDER_TYPE_RATES_PER_S",
    "SEGMENTS_MAX",
    "Content",
    "ReceiptModel",
    "DeliveryTarget",
]


class SenderType(enum.StrEnum):
    """A US sender number class, which fixes how many segments per second carriers allow."""

    LONGCODE = "longcode"  # 10DLC / P2P long code
    TOLLFREE = "tollfree"
    SHORTCODE = "shortcode"


# Default rates in segments per second (docs/sms-model.md gives the sources): a long code
# about 1 (carriers' P2P guidance; 10DLC brands get more per campaign, but 1 is the safe
# plan), a toll-free number 3 by default (verified numbers are raised up to about 20, on
# request), a short code 100.
SENDER_TYPE_RATES_PER_S: dict[SenderType, float] = {
    SenderType.LONGCODE: 1.0,
    SenderType.TOLLFREE: 3.0,
    SenderType.SHORTCODE: 100.0,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptModel:
    """How delivery receipts (DLRs) follow accepted sends: the simulator's receipts and the
    simulated provider's use the same model.

    A receipt arrives ``delay`` seconds after the provider accepted the send, the delay
    lognormal with median ``median_s`` and shape ``sigma`` (the long tail of handsets that are
    off or out of coverage: with the defaults p50 5 s, p90 34 s, p99 2.7 min, p99.9 8.6 min;
    these are assumptions to replace with a provider's measured receipts).
    ``undelivered_rate`` of receipts say the network gave up; ``lost_rate`` of sends never get
    a receipt at all. A send still undelivered when its message's validity ends is expired.
    """

    median_s: float = 5.0
    sigma: float = 1.5
    undelivered_rate: float = 0.02
    lost_rate: float = 0.03

    def __post_init__(self) -> None:
        _check_time("receipt median", self.median_s)
        if self.median_s <= 0:
            raise ConfigError(f"receipt median must be > 0 (got {self.median_s!r})")
        _check_finite("receipt sigma", self.sigma, maximum=10.0)
        for name, rate in (("undelivered rate", self.undelivered_rate),
                           ("lost rate", self.lost_rate)):
            _check_finite(name, rate)
            if rate > 1:
                raise ConfigError(f"{name} must be in [0, 1] (got {rate!r})")
        if self.undelivered_rate + self.lost_rate > 1:
            raise ConfigError(
                f"undelivered rate + lost rate must be <= 1 "
                f"(got {self.undelivered_rate!r} + {self.lost_rate!r})"
            )


SEGMENTS_MAX = 255  # a concatenated SMS has at most 255 parts (an 8-bit part count)


@dataclass(frozen=True, slots=True, kw_only=True)
class Content:
    """What the run's messages say, for the segment count that drives the SMS model.

    ``text=None`` counts each generated message's own text (the simulator's random 1-100
    printable-ASCII texts: one or two segments, UCS-2 when a backtick appears); a text makes
    every message of the run that content (any Unicode, up to ``SEGMENTS_MAX`` segments).
    It is a per-run spec, not a field of ``Message``, so the generated messages keep their
    validated 1-100 ASCII texts (and their phones and ids) whatever the content.
    """

    text: str | None = None

    def __post_init__(self) -> None:
        if self.text is None:
            return
        if not isinstance(self.text, str) or not self.text:
            raise ConfigError(f"text must be a non-empty string (got {self.text!r})")
        count = segments(self.text).count
        if count > SEGMENTS_MAX:
            raise ConfigError(f"text must fit in {SEGMENTS_MAX} segments "
                              f"(got {count} segments, {len(self.text)} characters)")

    @property
    def fixed(self) -> Segments | None:
        """The encoding and segments of every message, None when each has its own."""
        return None if self.text is None else segments(self.text)


class DeliveryTarget(enum.StrEnum):
    """What "delivered" means to a plan."""

    ACCEPTED = "accepted"  # the provider accepted the send (the plan before issue 14)
    RECEIVED = "received"  # a delivery receipt said the handset has it
