"""Opt-outs: the numbers each tenant must never send to again (a recipient replied STOP).

A suppression list is per tenant, of phones in their stored form
(``validation.validate_phone``: ``+1`` and ten digits and ``xxx-xxx-xxxx`` are one number).
A delivery to a listed number is ``suppressed``: its own status, not a failure (not dead,
not counted as failed), and final. The part of the store contract that keeps the lists is
``OptOutStore``; every ``DispatchStore`` is one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from sms_sim.dispatch.validation import (
    InvalidRequestError,
    validate_phone,
)

__all__ = ["OptOut", "OptOutResult", "OptOutStore", "OPT_OUTS_MAX_PER_CALL",
           "validate_opt_out_phones"]

# Numbers one ``add_opt_outs`` call takes: a CSV import of a carrier's STOP list is a few
# thousand; bigger files are sent in several calls (each is one transaction).
OPT_OUTS_MAX_PER_CALL = 100_000


@dataclass(frozen=True, slots=True, kw_only=True)
class OptOut:
    tenant: str
    phone: str  # as stored
    created_at: float  # when it was first added


@dataclass(frozen=True, slots=True, kw_only=True)
class OptOutResult:
    """What an ``add_opt_outs`` did: numbers newly listed (the others were listed already)
    and deliveries it suppressed."""

    added: int
    suppressed: int


class OptOutStore(Protocol):
    """Where the suppression lists live: every ``DispatchStore``, in the same database as
    the deliveries they stop. Each call is atomic, like the store's own."""

    def add_opt_outs(self, tenant: str, phones: Iterable[str], now: float) -> OptOutResult:
        """List ``phones`` (already stored forms, from ``validate_opt_out_phones``) for
        ``tenant``; one already listed keeps its first time. In the same transaction, every
        ``pending`` or ``retrying`` delivery of the tenant's messages to one of them becomes
        ``suppressed`` (a message left with nothing open completes); a ``leased`` one
        finishes its attempt (as under a cancel), and if it comes back (a retry, a release, a
        lost lease, a requeue of the dead) it becomes ``suppressed`` then. So from the
        commit on, no delivery to a listed number is leased again."""
        ...

    def remove_opt_out(self, tenant: str, phone: str) -> bool:
        """Take ``phone`` off ``tenant``'s list (False: it was not listed). Deliveries
        already suppressed stay suppressed; only new messages reach the number again."""
        ...

    def opt_outs(self, tenant: str, *, after: str | None = None,
                 limit: int = 1000) -> list[OptOut]:
        """Up to ``limit`` of ``tenant``'s listed numbers, in stored-form order (string
        order), only those after ``after`` (a cursor: the last number of the page before).
        Raises ``InvalidRequestError`` for a negative or non-integer ``limit``."""
        ...


def validate_opt_out_phones(phones: Iterable[object], *, where: str = "phone") -> list[str]:
    """Every number in its stored form (``validate_phone``), repeats dropped, order kept;
    at least 1 and at most ``OPT_OUTS_MAX_PER_CALL``."""
    if isinstance(phones, str):
        raise InvalidRequestError("phones must be a list of numbers, not one string")
    unique: dict[str, None] = {}
    for position, phone in enumerate(phones, start=1):
        unique[validate_phone(phone, position, where=f"{where} {position}")] = None
        if len(unique) > OPT_OUTS_MAX_PER_CALL:
            raise InvalidRequestError(f"at most {OPT_OUTS_MAX_PER_CALL} numbers per call")
    if not unique:
        raise InvalidRequestError("give at least 1 number (got 0)")
    return list(unique)
