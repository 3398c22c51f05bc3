"""Pieces every store shares so that all backends make the same decisions.

``fair_claim`` is the claim-splitting algorithm itself: stores differ only in how they take
deliveries of one message, so the reference store and SQLite lease exactly the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sms_sim.dispatch.contract import ConflictError, MessageStatus
from sms_sim.dispatch.validation import format_utc

__all__ = [
    "fair_claim",
    "locked_message",
    "SKEW_FACTOR",
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


# A lease ending more than SKEW_FACTOR x its own length after ``now`` cannot have been granted
# at or before ``now``: the clock has jumped back since, and the lease is reclaimed at once.
# Twice, not once: a claimer reads ``now`` before it may wait for the write lock, so a lease
# granted meanwhile by another worker can legitimately end a little after ``now`` + its
# length (found by the storm test). So a backward jump parks work for at most about two
# lease lengths, never for the jump itself. Each lease is judged by the length its holder
# asked for: judged by the claimer's, a worker with a 1 s lease took the live claims of one
# with 300 s and sent them again.
SKEW_FACTOR = 2.0


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
