"""How messages and deliveries read on a terminal, and their JSON and CSV forms.

Text that came from someone else (content, a provider's error) is printed only through
``printable``: a control character in it could otherwise move the cursor, clear the
screen or set the terminal's title. The JSON forms keep the text exact (JSON escapes
controls itself) and carry every time as epoch seconds.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence

from sms_sim.dispatch.contract import (
    DeliveryStatus,
    DeliveryView,
    MessageStatus,
    MessageView,
    SENT_DELIVERY_STATUSES,
)
from sms_sim.dispatch.service import Progress
from sms_sim.dispatch.tenants import DEFAULT_TENANT
from sms_sim.dispatch.validation import format_utc

__all__ = [
    "counted",
    "printable",
    "recipients",
    "status_phrase",
    "describe_message",
    "message_line",
    "message_dict",
    "delivery_line",
    "delivery_dict",
    "deliveries_csv",
    "sent_count",
    "shape_phrase",
]

# C0 and C1 controls, DEL, and the bidirectional overrides that can make text read
# differently from what it is.
_UNPRINTABLE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_DELIVERY_FIELDS = ("id", "recipient", "status", "attempts", "lease_losses", "last_error",
                    "sent_at", "next_attempt_at", "dlr_at")


def recipients(count: int) -> str:
    """"1 recipient", "1000 recipients": a message's size as its lines print it."""
    return f"{count} {_noun(count, 'recipient')}"


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """"1 delivery", "1,000 deliveries": a count with its noun in the number it takes."""
    return f"{count:,} {_noun(count, noun, plural)}"


def _noun(count: int, noun: str, plural: str | None = None) -> str:
    return noun if count == 1 else plural or noun + "s"


def sent_count(view: MessageView) -> int:
    """Deliveries the provider accepted: sent, and those a receipt moved on."""
    return sum(view.counts[status] for status in SENT_DELIVERY_STATUSES)


def shape_phrase(view: MessageView) -> str:
    """"2 segments (UCS-2)": what each recipient costs."""
    plural = "" if view.segments == 1 else "s"
    return f"{view.segments} segment{plural} ({view.encoding})"


def printable(text: str | None) -> str:
    """``text`` safe to write to a terminal: each control character as an escape (``\\n``,
    ``\\x1b``), so it shows and does nothing; None as "-"."""
    if text is None:
        return "-"
    return _UNPRINTABLE_RE.sub(
        lambda found: _ESCAPES.get(found.group(), f"\\x{ord(found.group()):02x}")
        if ord(found.group()) < 0x100 else f"\\u{ord(found.group()):04x}", text)


def status_phrase(view: MessageView) -> str:
    """The status with what an operator asks next: for a completed message how it ended,
    for one going out how far it got, for a scheduled one when it is due."""
    sent, total = sent_count(view), view.recipient_count
    if view.outcome is not None:
        return _status(view)
    if view.status is MessageStatus.SCHEDULED:
        return f"scheduled, due {format_utc(view.scheduled_at)}"
    return f"{view.status}, {sent} of {total} sent"


def _status(view: MessageView) -> str:
    """The status, and the outcome once there is one: "completed, all failed"."""
    return str(view.status) if view.outcome is None else f"{view.status}, {view.outcome}"


def _progress_line(progress: Progress) -> str:
    parts = [f"{progress.sent} of {progress.total} sent ({progress.sent_fraction:.1%})"]
    for count, what in ((progress.delivered, "delivered"), (progress.dead, "dead"),
                        (progress.expired, "expired"), (progress.suppressed, "suppressed")):
        if count:
            parts.append(f"{count} {what}")
    if progress.rate_per_s is not None:
        parts.append(f"{progress.rate_per_s:,.1f}/s")
    if progress.eta_at is not None:
        parts.append(f"ETA {format_utc(progress.eta_at)} ({progress.open} to go)")
    return ", ".join(parts)


def describe_message(view: MessageView, progress: Progress) -> str:
    """What ``show`` prints: several lines, content escaped."""
    counts = ", ".join(f"{status} {view.counts[status]}" for status in DeliveryStatus)
    return "\n".join([
        f"message {view.id}: {_status(view)}, version {view.version}, "
        f"priority {view.priority}",
        f"  content: {printable(view.content)}",
        f"  {shape_phrase(view)} per recipient; valid until {format_utc(view.valid_until)}",
        f"  progress: {_progress_line(progress)}",
        f"  scheduled_at {format_utc(view.scheduled_at)}  created_at "
        f"{format_utc(view.created_at)}  updated_at {format_utc(view.updated_at)}",
        f"  dispatch_started_at {format_utc(view.dispatch_started_at)}  completed_at "
        f"{format_utc(view.completed_at)}",
        f"  tenant {view.tenant}  idempotency_key {printable(view.idempotency_key)}",
        f"  deliveries {view.recipient_count}: {counts}",
    ])


def message_line(view: MessageView) -> str:
    """One line of ``list``: id, the tenant (unless the command line's own), status (with the
    outcome), version, due time, counts, and the start of the content."""
    counts = view.counts
    content = printable(view.content)
    quoted = "'" + (content if len(content) <= 40 else content[:37] + "...") + "'"
    status = str(view.status) if view.outcome is None else f"{view.status} ({view.outcome})"
    tenant = "" if view.tenant == DEFAULT_TENANT else f"[{view.tenant}]  "
    return (f"{view.id}  {tenant}{status}  v{view.version}  due {format_utc(view.scheduled_at)}  "
            f"{recipients(view.recipient_count)}: {sent_count(view)} sent, "
            f"{counts[DeliveryStatus.DEAD]} dead, {view.segments} seg each  {quoted}")


def message_dict(view: MessageView, progress: Progress | None = None) -> dict[str, object]:
    """The JSON form of a message (``show``, ``list``, ``submit --json``)."""
    found: dict[str, object] = {
        "id": view.id, "tenant": view.tenant, "content": view.content,
        "status": str(view.status),
        "outcome": None if view.outcome is None else str(view.outcome),
        "version": view.version, "priority": view.priority,
        "scheduled_at": view.scheduled_at, "created_at": view.created_at,
        "updated_at": view.updated_at, "dispatch_started_at": view.dispatch_started_at,
        "completed_at": view.completed_at, "idempotency_key": view.idempotency_key,
        "recipients": view.recipient_count,
        "deliveries": {str(k): v for k, v in view.counts.items()},
        "encoding": str(view.encoding), "segments": view.segments,
        "valid_until": view.valid_until,
    }
    if progress is not None:
        found["progress"] = {
            "sent_fraction": progress.sent_fraction, "rate_per_s": progress.rate_per_s,
            "eta_at": progress.eta_at, "open": progress.open,
            "segments_sent": progress.segments_sent,
        }
    return found


def delivery_line(delivery: DeliveryView, *, with_message: bool) -> str:
    """One delivery on one line, its last error escaped."""
    where = f"  message {delivery.message_id}" if with_message else ""
    sent = f"  sent {format_utc(delivery.sent_at)}" if delivery.sent_at is not None else ""
    if delivery.dlr_at is not None:
        sent += f"  receipt {format_utc(delivery.dlr_at)}"
    return (f"delivery {delivery.id}{where}  {delivery.recipient}  {delivery.status}  "
            f"attempts {delivery.attempts} (leases lost {delivery.lease_losses}){sent}  "
            f"last error: {printable(delivery.last_error)}")


def delivery_dict(delivery: DeliveryView) -> dict[str, object]:
    return {"id": delivery.id, "message_id": delivery.message_id,
            "recipient": delivery.recipient, "status": str(delivery.status),
            "attempts": delivery.attempts, "lease_losses": delivery.lease_losses,
            "last_error": delivery.last_error, "sent_at": delivery.sent_at,
            "next_attempt_at": delivery.next_attempt_at, "dlr_at": delivery.dlr_at}


def deliveries_csv(deliveries: Sequence[DeliveryView]) -> str:
    """A header and one row per delivery; times as ISO-8601 UTC, empty when unset; the
    provider's error text with control characters as escapes, as the other views print it
    (CSV is read on terminals too, where an escape sequence in it would act)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_DELIVERY_FIELDS)
    for delivery in deliveries:
        row = delivery_dict(delivery)
        row["sent_at"] = "" if delivery.sent_at is None else format_utc(delivery.sent_at)
        row["next_attempt_at"] = format_utc(delivery.next_attempt_at)
        row["dlr_at"] = "" if delivery.dlr_at is None else format_utc(delivery.dlr_at)
        row["last_error"] = None if delivery.last_error is None else printable(delivery.last_error)
        writer.writerow(["" if row[field] is None else row[field] for field in _DELIVERY_FIELDS])
    return buffer.getvalue().rstrip("\n")
