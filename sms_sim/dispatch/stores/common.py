"""Pieces every store shares so that all backends make the same decisions.

``fair_claim`` is the claim-splitting algorithm itself: stores differ only in how they take
deliveries of one message, so the reference store and SQLite lease exactly the same rows.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable, Sequence

from sms_sim.dispatch.contract import (
    InvalidRequestError,
    MessageStatus,
    SettleKind,
    Settlement,
    validate_storable,
)

__all__ = [
    "INT64_MAX",
    "check_claim",
    "check_settlements",
    "check_listing",
    "could_be_an_id",
    "fair_claim",
    "locked_message",
    "skewed_after_s",
    "EXPIRED_LEASE_ERROR",
    "format_utc",
]

INT64_MAX = 2**63 - 1  # SQLite's largest integer, so no id or limit can be larger

EXPIRED_LEASE_ERROR = "lease expired before the worker reported (worker lost or paused)"


def fair_claim(order: Sequence[tuple[int, int]], limit: int,
               take: Callable[[int, int], int]) -> None:
    """Split ``limit`` among due messages given as ``(priority, message_id)`` in claim order.

    Priority classes are strict: a lower class gets only what the higher ones leave. Within
    a class, each round gives every message still active an equal quota (at least 1), in
    order; ``take(message_id, n)`` leases up to ``n`` deliveries and returns how many it got.
    A message that got fewer than its quota has nothing more due and drops out. So the first
    message of the top class always gets something, and none gets more than an even share
    while others of its class still have work.
    """
    remaining = limit
    classes: dict[int, list[int]] = {}
    for priority, message_id in order:
        classes.setdefault(priority, []).append(message_id)
    for priority in sorted(classes, reverse=True):
        active = classes[priority]
        while remaining > 0 and active:
            quota = max(1, remaining // len(active))
            still: list[int] = []
            for message_id in active:
                if remaining <= 0:
                    break
                want = min(quota, remaining)
                got = take(message_id, want)
                remaining -= got
                if got == want:
                    still.append(message_id)
            active = still


def skewed_after_s(lease_s: float) -> float:
    """A lease ending more than this after ``now`` cannot have been granted at or before
    ``now``: the clock has jumped back since, and the lease is reclaimed at once.

    Twice the lease length, not once: a claimer reads ``now`` before it may wait for the
    write lock, so a lease granted meanwhile by another worker can legitimately end a
    little after this claimer's ``now + lease_s`` (found by the storm test). So a backward
    jump parks work for at most about two lease lengths, never for the jump itself.
    """
    return 2.0 * lease_s


def format_utc(epoch_s: float | None) -> str:
    """ISO-8601 UTC to the millisecond, or "-" for None (for messages and the CLI)."""
    if epoch_s is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(epoch_s, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def locked_message(message_id: int, status: MessageStatus, since: float | None) -> str:
    """The one-line reason an edit of a message that is no longer scheduled is refused."""
    if status is MessageStatus.DISPATCHING:
        return f"locked: dispatching since {format_utc(since)}; message {message_id} " \
               "cannot be edited (cancel it instead)"
    return f"locked: message {message_id} is {status} and cannot be edited"


def _check_now(now: float, what: str = "now") -> None:
    if not isinstance(now, (int, float)) or not math.isfinite(now):
        raise InvalidRequestError(f"{what} must be a finite time in seconds (got {now!r})")


def check_claim(limit: int, lease_s: float, now: float) -> None:
    """Refuse arguments that would lease work no one could ever settle or rescue (a NaN
    lease end is stored as NULL: never expired, never current)."""
    _check_now(now)
    if not isinstance(lease_s, (int, float)) or not math.isfinite(lease_s) or lease_s <= 0:
        raise InvalidRequestError(f"lease must be > 0 seconds (got {lease_s!r})")
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidRequestError(f"limit must be an integer (got {limit!r})")


def check_settlements(settlements: Sequence[Settlement], now: float) -> None:
    """One report per attempt per call: two of one attempt (say RETRY then SENT) have no
    agreed order. Two attempts of one delivery may come together (a worker paused past its
    lease re-claims a delivery whose first claim it still holds): the fence takes at most
    one of them, in any order."""
    _check_now(now)
    # Written for the hot path (a whole batch per call): the common SENT report costs two
    # type checks, two range checks and a set insertion.
    seen: set[tuple[int, int]] = set()
    for delivery_id, attempts, kind, error, next_attempt_at in settlements:
        if type(delivery_id) is not int or type(attempts) is not int \
                or not (0 <= delivery_id <= INT64_MAX and 0 <= attempts <= INT64_MAX):
            raise InvalidRequestError(f"delivery_id and attempts must be integers from 0 to "
                                      f"{INT64_MAX} (got {delivery_id!r}, {attempts!r})")
        if kind is not SettleKind.SENT:
            if next_attempt_at is not None:
                _check_now(next_attempt_at, "next_attempt_at")
            if error is not None:
                validate_storable(error, "error")
        attempt = (delivery_id, attempts)
        if attempt in seen:
            raise InvalidRequestError(f"delivery {delivery_id} attempt {attempts} is reported "
                                      "twice in one settle")
        seen.add(attempt)


def could_be_an_id(message_id: int) -> bool:
    """False for an id no store hands out (negative, or beyond SQLite's integers), so a
    lookup can answer "not found" without asking the database (which would overflow)."""
    return 0 <= message_id <= INT64_MAX


def check_listing(message_id: int | None, limit: int) -> bool:
    """Validate a listing's ``limit``; False when ``message_id`` cannot exist, so the
    listing is empty without asking the database."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidRequestError(f"limit must be an integer >= 0 (got {limit!r})")
    return message_id is None or could_be_an_id(message_id)
