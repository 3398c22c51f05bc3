"""Pieces every store shares so that all backends make the same decisions.

``fair_claim`` is the claim-splitting algorithm itself: stores differ only in how they take
deliveries of one message, so the reference store and SQLite lease exactly the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sms_sim.dispatch.contract import MessageStatus
from sms_sim.dispatch.errors import ConflictError
from sms_sim.dispatch.validation import format_utc

__all__ = [
    "fair_claim",
    "locked_message",
    "CLOCK_JUMP_MIN_S",
    "clock_jumped_back_after_s",
    "key_conflict",
    "EXPIRED_LEASE_ERROR",
]

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

    One way to meet the fairness properties of ``DispatchStore.claim`` (the contract tests
    check those on every store, not this arithmetic); the caller's order decides who goes
    first in a class: never served, then least recently served.
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


# A clock that jumps back leaves leases granted "in the future": without a rescue they would
# be parked for the whole jump (hours, after a bad NTP step). But a claimer's ``now`` is read
# before it waits for the write lock, so a lease another worker granted meanwhile can
# legitimately start up to that wait after it. Judged by lease lengths (twice the holder's),
# a worker whose ``now`` was 1.5 s stale took the live claims of one with a 1 s lease and
# sent them again. So a lease proves a backward jump only if it was granted more than
# ``clock_jumped_back_after_s`` after the claimer's ``now``: longer than any lock wait.
CLOCK_JUMP_MIN_S = 60.0


def clock_jumped_back_after_s(lock_wait_s: float) -> float:
    """How far past a claimer's ``now`` a lease's grant time must be to prove the clock went
    back, for a store whose claims wait at most ``lock_wait_s`` for their lock: twice that
    wait, and at least ``CLOCK_JUMP_MIN_S``. A smaller jump parks leases for at most this
    long past their end."""
    return max(CLOCK_JUMP_MIN_S, 2.0 * lock_wait_s)


def locked_message(message_id: int, status: MessageStatus, since: float | None) -> str:
    """The one-line reason an edit of a message that is no longer scheduled is refused."""
    if status is MessageStatus.DISPATCHING:
        return f"locked: dispatching since {format_utc(since)}; message {message_id} " \
               "cannot be edited (cancel it instead)"
    return f"locked: message {message_id} is {status} and cannot be edited"


def key_conflict(key: str, first: int) -> ConflictError:
    """The refusal of an idempotency key reused for a different request."""
    return ConflictError(f"idempotency key {key!r} was used for message {first}, with "
                         "different content, recipients, time or priority; nothing created "
                         "(use a new key for a new message)")
