"""Delivery receipts (DLRs): what the network said became of a sent delivery.

A provider reports each receipt with the idempotency key it was sent under
(``contract.provider_key``: the message's uid and the recipient), so a receipt names its
delivery in any database without knowing its id. The part of the store contract that
records them is ``DlrStore``; every ``DispatchStore`` is one.

Rules (the spec the contract tests encode):

- A receipt moves a ``sent`` delivery to ``delivered``, ``undelivered`` or ``expired``
  and keeps the time it gives (``DeliveryView.dlr_at``). ``delivered`` is final; a
  ``delivered`` receipt still replaces ``undelivered`` or ``expired`` (the network retried
  and got through). Any other receipt for a delivery already past ``sent`` changes nothing
  and is reported ``IGNORED``; the same status again is a ``REPEAT``.
- A receipt for a delivery that exists but is not (yet) sent (its send is not recorded:
  the provider can answer before the worker reports) is kept and reported ``HELD``; when
  the delivery is recorded ``sent`` it is applied in that same transaction. Of several held
  for one delivery, ``delivered`` wins, otherwise the first stays.
- A key that names no delivery (whatever its shape) is ``UNKNOWN``: reported, never an
  error, nothing kept.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from sms_sim.dispatch.validation import InvalidRequestError, validate_storable, validate_time

__all__ = ["DlrReport", "DlrOutcome", "DlrResult", "DlrStore", "DLR_BATCH_MAX", "check_dlrs",
           "split_key", "dlr_outcome", "DLR_STATUS_TEXT"]

DLR_BATCH_MAX = 10_000  # receipts one call takes
DLR_STATUS_TEXT = ("delivered", "undelivered", "expired")
_KEY_MAX_CHARS = 300


class DlrReport(NamedTuple):
    """One receipt: the provider key it was sent under, what it says (``delivered``,
    ``undelivered`` or ``expired``, a ``contract.DeliveryStatus``) and when (epoch seconds,
    the network's time)."""

    key: str
    status: str
    at: float


class DlrOutcome(enum.StrEnum):
    APPLIED = "applied"  # the delivery moved to the receipt's status
    REPEAT = "repeat"  # it says what was already recorded (or held): nothing changed
    HELD = "held"  # the delivery is not sent yet: kept, applied when the send is recorded
    IGNORED = "ignored"  # the delivery is past that (delivered, or another final receipt)
    UNKNOWN = "unknown"  # no delivery has this key


@dataclass(frozen=True, slots=True, kw_only=True)
class DlrResult:
    """What became of each report, in the order given."""

    outcomes: tuple[DlrOutcome, ...]

    def count(self, outcome: DlrOutcome) -> int:
        return sum(1 for found in self.outcomes if found is outcome)


class DlrStore(Protocol):
    """Recording delivery receipts (module docstring for the rules)."""

    def record_dlrs(self, reports: Sequence[DlrReport], now: float) -> DlrResult:
        """Apply ``reports`` in order, atomically (all or none), idempotently: the same
        receipts again change nothing and come back ``REPEAT``. A receipt that arrives
        before its send is recorded is ``HELD`` and applied by the ``settle`` that records
        the send. Raises ``InvalidRequestError`` (from ``check_dlrs``) for a malformed
        report; any tenant's deliveries (keys are unique across tenants and databases)."""
        ...


def check_dlrs(reports: Sequence[DlrReport], now: float) -> list[DlrReport]:
    """The reports as stores keep them (status as plain text, so a ``DeliveryStatus`` or a
    ``model.ReceiptStatus`` member will do; time as a float); refuses a malformed batch
    with one line naming the report: a key that is not 1-300 characters of text, a status a
    receipt cannot have, a time out of range; more than ``DLR_BATCH_MAX``. (A key of
    another shape than ``uid:recipient`` is only unknown.)"""
    if not isinstance(now, (int, float)) or not math.isfinite(now):
        raise InvalidRequestError(f"now must be a finite time in seconds (got {now!r})")
    if len(reports) > DLR_BATCH_MAX:
        raise InvalidRequestError(f"at most {DLR_BATCH_MAX} receipts per call "
                                  f"(got {len(reports)})")
    checked: list[DlrReport] = []
    for position, (key, status, at) in enumerate(reports, start=1):
        if not isinstance(key, str) or not 1 <= len(key) <= _KEY_MAX_CHARS:
            raise InvalidRequestError(f"receipt {position}: key must be the provider key "
                                      f"'<message uid>:<recipient>', 1-{_KEY_MAX_CHARS} "
                                      f"characters (got {key!r})")
        validate_storable(key, f"receipt {position} key")
        if status not in DLR_STATUS_TEXT:
            raise InvalidRequestError(f"receipt {position}: status must be one of "
                                      f"{', '.join(DLR_STATUS_TEXT)} (got {status!r})")
        try:
            checked.append(DlrReport(key, str(status), validate_time(at)))
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"receipt {position}: {exc}") from None
    return checked


def split_key(key: str) -> tuple[str, str]:
    """The message uid and the recipient of a provider key (uids hold no ':')."""
    uid, _, recipient = key.partition(":")
    return uid, recipient


# Ranks for "which receipt wins": delivered beats the others, which do not replace each
# other; sent (0) is replaced by any.
_RANK = {"sent": 0, "undelivered": 1, "expired": 1, "delivered": 2}


def dlr_outcome(current: str, status: str) -> DlrOutcome:
    """What a receipt saying ``status`` does to a sent-or-later delivery in ``current``
    (``APPLIED`` means: move it). Shared by every store, so all decide alike."""
    if current == status:
        return DlrOutcome.REPEAT
    if _RANK[status] > _RANK[current]:
        return DlrOutcome.APPLIED
    return DlrOutcome.IGNORED
