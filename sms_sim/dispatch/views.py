"""What the dispatch engine says of messages and deliveries: their statuses, how a finished
message ended, and the views stores answer with (re-exported by ``contract``, which is
where callers import them from).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sms_sim.dispatch.tenants import DEFAULT_TENANT
from sms_sim.segments import Encoding

__all__ = [
    "MessageStatus",
    "DeliveryStatus",
    "MessageOutcome",
    "MessageView",
    "DeliveryView",
    "OPEN_DELIVERY_STATUSES",
    "SENT_DELIVERY_STATUSES",
    "DLR_STATUSES",
]


class MessageStatus(enum.StrEnum):
    SCHEDULED = "scheduled"
    DISPATCHING = "dispatching"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    LEASED = "leased"
    SENT = "sent"
    RETRYING = "retrying"  # an attempt failed; a retry is due at next_attempt_at
    DEAD = "dead"
    CANCELLED = "cancelled"
    # Its message's validity ended before it was sent (never sent late), or, after ``sent``,
    # a delivery receipt said the network gave up at the end of the validity period;
    # ``sent_at`` tells the two apart.
    EXPIRED = "expired"
    SUPPRESSED = "suppressed"  # the number opted out of the tenant's messages: never sent
    DELIVERED = "delivered"  # after ``sent``: a delivery receipt said the handset has it
    UNDELIVERED = "undelivered"  # after ``sent``: a receipt said the network gave up on it


# Deliveries that still have work to do; a message completes when it has none. Every other
# status is final for the message (a delivery receipt may still move ``sent`` on).
OPEN_DELIVERY_STATUSES = frozenset(
    {DeliveryStatus.PENDING, DeliveryStatus.LEASED, DeliveryStatus.RETRYING}
)
# Deliveries the provider accepted: sent, and those a delivery receipt moved on from sent
# (but ``expired``, which counts can not tell from one that was never sent).
SENT_DELIVERY_STATUSES = frozenset(
    {DeliveryStatus.SENT, DeliveryStatus.DELIVERED, DeliveryStatus.UNDELIVERED}
)
# What a delivery receipt may say (``DlrReport.status``).
DLR_STATUSES = frozenset(
    {DeliveryStatus.DELIVERED, DeliveryStatus.UNDELIVERED, DeliveryStatus.EXPIRED}
)


class MessageOutcome(enum.StrEnum):
    """How a completed message ended, in an operator's words: ``completed`` alone says only
    that no delivery is left to try, which is as true when every one went dead."""

    ALL_SENT = "all sent"  # every delivery not suppressed was sent
    PARTLY_FAILED = "partly failed"  # some sent, some dead or expired
    ALL_FAILED = "all failed"  # none sent, some dead
    EXPIRED = "expired"  # none sent, none dead: its validity ended first
    ALL_SUPPRESSED = "all suppressed"  # every recipient had opted out: nothing to send


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageView:
    """A message as stored, with its deliveries counted by status (every status present)."""

    id: int
    content: str
    status: MessageStatus
    scheduled_at: float
    created_at: float
    updated_at: float
    version: int
    dispatch_started_at: float | None
    completed_at: float | None
    idempotency_key: str | None
    priority: int
    counts: dict[DeliveryStatus, int]
    uid: str = ""  # globally unique: the provider's idempotency keys are built on it
    tenant: str = DEFAULT_TENANT
    # What an edge answered when the message was created, kept for replaying that answer
    # to a repeat of the request (``DispatchStore.keep_receipt``); None until kept.
    receipt: str | None = None
    # ``segments.segments(content)``, computed when the content is stored (submit, edit).
    encoding: Encoding = Encoding.GSM7
    segments: int = 1
    # Deliveries not sent by then (epoch seconds) expire instead; None: no limit.
    valid_until: float | None = None

    @property
    def recipient_count(self) -> int:
        """How many deliveries the message has (one per distinct recipient)."""
        return sum(self.counts.values())

    @property
    def outcome(self) -> MessageOutcome | None:
        """For a ``completed`` message, how its deliveries ended (from ``counts``): all
        sent (suppressed ones are not failures), partly failed (some dead or expired), all
        failed (none sent, some dead), expired (none sent, none dead) or all suppressed;
        None while it is scheduled or dispatching, and for a cancelled one, whose counts
        say how far it got. A receipt's ``expired`` counts as not sent: counts cannot tell
        it from a delivery whose validity ended first."""
        if self.status is not MessageStatus.COMPLETED:
            return None
        counts = self.counts
        sent = sum(counts[status] for status in SENT_DELIVERY_STATUSES)
        dead, expired = counts[DeliveryStatus.DEAD], counts[DeliveryStatus.EXPIRED]
        if dead == 0 and expired == 0:
            return MessageOutcome.ALL_SENT if sent else MessageOutcome.ALL_SUPPRESSED
        if sent:
            return MessageOutcome.PARTLY_FAILED
        return MessageOutcome.ALL_FAILED if dead else MessageOutcome.EXPIRED


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryView:
    id: int
    message_id: int
    recipient: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: float
    lease_owner: str | None
    lease_until: float | None
    sent_at: float | None
    last_error: str | None
    lease_losses: int = 0  # leases that ran out before the worker reported
    dlr_at: float | None = None  # when the delivery receipt applied says it happened
