"""Pieces every store shares so that all backends make the same decisions (the claim's
split is ``fairness``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sms_sim.dispatch.contract import (
    CancelResult,
    DeliveryStatus,
    MessageStatus,
    SENT_DELIVERY_STATUSES,
)
from sms_sim.dispatch.errors import KeyReusedError
from sms_sim.dispatch.validation import format_utc
from sms_sim.segments import Encoding, segments

__all__ = [
    "cancel_result",
    "raised_classes",
    "locked_message",
    "CLOCK_JUMP_MIN_S",
    "clock_jumped_back_after_s",
    "key_conflict",
    "EXPIRED_LEASE_ERROR",
    "stored_shape",
    "sent_time",
]

EXPIRED_LEASE_ERROR = "lease expired before the worker reported (worker lost or paused)"


def sent_time(reported: float | None, leased_at: float | None, now: float) -> float:
    """The ``sent_at`` a SENT report records (``DispatchStore.settle``): the send time it
    reports, or the settle's ``now`` without one; never later than ``now`` nor earlier
    than the lease's start (``leased_at``, when known)."""
    at = now if reported is None else min(reported, now)
    return at if leased_at is None else max(at, leased_at)


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


def raised_classes(kept: Mapping[int, int | None], priority: Mapping[int, int],
                   classes: Mapping[int, int], served: Iterable[int]) -> dict[int, int]:
    """Aging after a claim (``effective_priority``): the raised class each due message holds,
    given each one's kept class before the claim, its own priority, the class the claim saw
    it in, and those the claim served (a message served above its priority keeps that
    class). The caller then drops the classes of those with nothing left due."""
    raised = {m: k for m, k in kept.items() if k is not None}
    for message_id in served:
        if classes[message_id] > priority[message_id]:
            raised[message_id] = classes[message_id]
    return raised


def cancel_result(message_id: int, by_status: Mapping[DeliveryStatus, int],
                  was: MessageStatus) -> CancelResult:
    """What a cancel did, from its message's deliveries counted by status just before it:
    pending and retrying ones are cancelled, sent ones (and those receipts moved on) stay,
    leased ones are in flight."""
    return CancelResult(
        message_id=message_id,
        cancelled=by_status[DeliveryStatus.PENDING] + by_status[DeliveryStatus.RETRYING],
        already_sent=sum(by_status[status] for status in SENT_DELIVERY_STATUSES),
        in_flight=by_status[DeliveryStatus.LEASED],
        was_status=was,
    )


def locked_message(message_id: int, status: MessageStatus, since: float | None) -> str:
    """The one-line reason an edit of a message that is no longer scheduled is refused."""
    if status is MessageStatus.DISPATCHING:
        return f"locked: dispatching since {format_utc(since)}; message {message_id} " \
               "cannot be edited (cancel it instead)"
    return f"locked: message {message_id} is {status} and cannot be edited"


def key_conflict(key: str, first: int) -> KeyReusedError:
    """The refusal of an idempotency key reused for a different request."""
    return KeyReusedError(f"idempotency key {key!r} was used for message {first}, with "
                          "different content, recipients, time, priority or validity; "
                          "nothing created (use a new key for a new message)")


def stored_shape(content: str, encoding: str | None, count: int | None) -> tuple[Encoding, int]:
    """A message's encoding and segment count as stored; computed from its content for a
    message stored before schema 6 kept them."""
    if encoding is None or count is None:
        found = segments(content)
        return found.encoding, found.count
    return Encoding(encoding), int(count)
