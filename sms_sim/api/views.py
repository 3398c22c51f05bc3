"""The engine's views (``MessageView``, ``DeliveryView``, ``Progress``) as response bodies.

The JSON forms of the CLI's ``--json``, with the API's conventions: times in RFC 3339 UTC
instead of epoch seconds, ``send_at`` for the due time (the name a request uses), and the
progress a ``show`` prints.
"""

from __future__ import annotations

from sms_sim.api.schemas import (
    DeliveryCounts,
    DeliveryOut,
    MessageOut,
    ProgressOut,
    SubmittedMessageOut,
)
from sms_sim.api.times import rfc3339, rfc3339_or_none
from sms_sim.dispatch.contract import DeliveryStatus, DeliveryView, MessageView
from sms_sim.dispatch.service import Progress

__all__ = ["message_out", "submitted_out", "delivery_out", "etag"]


def etag(view: MessageView) -> str:
    """The strong entity tag of a message: its version, which every edit raises. (Progress
    moves without it, which is why GET answers no 304: the tag guards edits, not caches.)"""
    return '"%d"' % view.version


def _progress(progress: Progress) -> ProgressOut:
    return ProgressOut(total=progress.total, sent=progress.sent, dead=progress.dead,
                       open=progress.open, percent_sent=round(100 * progress.sent_fraction, 3),
                       rate_per_s=progress.rate_per_s, eta=rfc3339_or_none(progress.eta_at),
                       delivered=progress.delivered, expired=progress.expired,
                       suppressed=progress.suppressed, segments_sent=progress.segments_sent)


def _fields(view: MessageView, progress: Progress) -> dict[str, object]:
    counts = view.counts
    return {
        "id": view.id, "content": view.content, "status": view.status,
        "outcome": view.outcome, "version": view.version, "priority": view.priority,
        "send_at": rfc3339(view.scheduled_at), "created_at": rfc3339(view.created_at),
        "updated_at": rfc3339(view.updated_at),
        "dispatch_started_at": rfc3339_or_none(view.dispatch_started_at),
        "completed_at": rfc3339_or_none(view.completed_at),
        "idempotency_key": view.idempotency_key, "recipient_count": view.recipient_count,
        "encoding": view.encoding, "segments": view.segments,
        "valid_until": rfc3339_or_none(view.valid_until),
        "deliveries": DeliveryCounts(**{str(status): counts[status] for status in DeliveryStatus}),
        "progress": _progress(progress),
    }


def message_out(view: MessageView, progress: Progress) -> MessageOut:
    return MessageOut.model_validate(_fields(view, progress))


def submitted_out(view: MessageView, progress: Progress, duplicates_dropped: int,
                  suppressed: int) -> SubmittedMessageOut:
    return SubmittedMessageOut.model_validate(
        {**_fields(view, progress), "duplicates_dropped": duplicates_dropped,
         "suppressed": suppressed})


def delivery_out(delivery: DeliveryView) -> DeliveryOut:
    return DeliveryOut(id=delivery.id, message_id=delivery.message_id,
                       recipient=delivery.recipient, status=delivery.status,
                       attempts=delivery.attempts, lease_losses=delivery.lease_losses,
                       last_error=delivery.last_error, sent_at=rfc3339_or_none(delivery.sent_at),
                       next_attempt_at=rfc3339(delivery.next_attempt_at),
                       dlr_at=rfc3339_or_none(delivery.dlr_at))
