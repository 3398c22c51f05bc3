"""What a caller asks the engine to store: a new message, or an edit of a scheduled one.

Built through their ``validated`` constructors, which run every check in ``validation`` and
raise ``InvalidRequestError``; a store may then trust them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from sms_sim.dispatch.tenants import DEFAULT_TENANT, validate_tenant
from sms_sim.dispatch.validation import (
    InvalidRequestError,
    format_utc,
    validate_content,
    validate_edit,
    validate_idempotency_key,
    validate_priority,
    validate_recipients,
    validate_time,
    validate_validity,
    validity_end,
)

__all__ = ["NewMessage", "MessageEdit"]


@dataclass(frozen=True, slots=True, kw_only=True)
class NewMessage:
    """A message to submit; build it through ``validated`` to get the engine's checks.

    ``scheduled_at`` None means "due now". Recipients listed twice get one delivery.
    ``priority``: higher classes of one tenant are claimed first; within a class, fair
    round-robin. Validity: deliveries not sent by ``valid_until`` (absolute) or by
    ``valid_for_s`` after the due time (relative) expire instead; at most one is given.
    ``tenant``: who it belongs to (``tenants``); it is not part of the request's
    fingerprint, since idempotency keys are already scoped to a tenant.
    """

    content: str
    recipients: tuple[str, ...]
    scheduled_at: float | None = None
    idempotency_key: str | None = None
    priority: int = 0
    # How the time was asked for when it was relative ("in 600 s"): a retry of the same
    # request then has the same fingerprint although its absolute due time moved on.
    time_request: str | None = None
    tenant: str = DEFAULT_TENANT
    valid_until: float | None = None
    valid_for_s: float | None = None

    def validity_end(self, due_at: float) -> float | None:
        """When the message's validity ends, for a message due at ``due_at``."""
        return _validity_end(self.valid_until, self.valid_for_s, due_at)

    def fingerprint(self) -> str:
        """What makes two submits "the same request" for an idempotency key: content,
        recipients (as a set: order and repeats do not change who gets the message), the
        requested time as it was asked (absent stays absent: "now" on a retry is still
        "now"; "in 10 minutes" is still "in 10 minutes"), priority and validity (as asked,
        absolute or relative; absent adds nothing, so keys made before validity existed
        keep their fingerprints). A hex SHA-256, stored with the message."""
        digest = hashlib.sha256()
        when: float | str | None = self.scheduled_at
        if self.time_request is not None:
            when = self.time_request
        head: list[object] = [self.content, when, self.priority]
        if self.valid_until is not None or self.valid_for_s is not None:
            head.append(["until", self.valid_until] if self.valid_for_s is None
                        else ["for", self.valid_for_s])
        digest.update(json.dumps(head, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        for recipient in sorted(set(self.recipients)):
            digest.update(b"\0" + recipient.encode("utf-8", "surrogatepass"))
        return digest.hexdigest()

    @classmethod
    def validated(
        cls,
        *,
        content: str,
        recipients: Iterable[str],
        scheduled_at: float | None = None,
        idempotency_key: str | None = None,
        priority: int = 0,
        time_request: str | None = None,
        tenant: str = DEFAULT_TENANT,
        valid_until: float | None = None,
        valid_for_s: float | None = None,
    ) -> NewMessage:
        """Check every field with ``validation`` (raises ``InvalidRequestError``) and drop
        repeated recipients. ``time_request``: see the field."""
        key, priority = validate_idempotency_key(idempotency_key), validate_priority(priority)
        scheduled_at = None if scheduled_at is None else validate_time(scheduled_at)
        valid_until, valid_for_s = validate_validity(valid_until, valid_for_s, scheduled_at)
        return cls(
            content=validate_content(content),
            recipients=validate_recipients(recipients),
            scheduled_at=scheduled_at,
            idempotency_key=key,
            priority=priority,
            time_request=time_request,
            tenant=validate_tenant(tenant),
            valid_until=valid_until,
            valid_for_s=valid_for_s,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageEdit:
    """Changes to a scheduled message; None leaves a field as it is. Validity is set
    absolute (``valid_until``) or relative to the due time after the edit
    (``valid_for_s``)."""

    content: str | None = None
    scheduled_at: float | None = None
    recipients: tuple[str, ...] | None = None
    valid_until: float | None = None
    valid_for_s: float | None = None

    def validity_end(self, due_at: float, current: float | None) -> float | None:
        """The message's validity end after the edit, for a due time ``due_at`` after it
        and a validity end ``current`` before it. Raises ``InvalidRequestError`` when an
        edit of the time or the validity would leave the end at or before the due time
        (nothing could be sent; stores call this before they change anything, or inside
        the transaction the refusal rolls back)."""
        end = current
        if self.valid_until is not None or self.valid_for_s is not None:
            end = _validity_end(self.valid_until, self.valid_for_s, due_at)
        if end is not None and end <= due_at and (
                self.scheduled_at is not None or self.valid_until is not None):
            # An end kept from before the edit does not move with the time: say how.
            kept = "" if end is not current else (
                " (a validity end stays put when only the time moves: give the validity "
                "again, valid_for / --valid-for, to move it too)")
            raise InvalidRequestError(f"valid_until {format_utc(end)} must be after the send "
                                      f"time {format_utc(due_at)}{kept}")
        return end

    @classmethod
    def validated(
        cls,
        *,
        content: str | None = None,
        scheduled_at: float | None = None,
        recipients: Iterable[str] | None = None,
        valid_until: float | None = None,
        valid_for_s: float | None = None,
    ) -> MessageEdit:
        """Check every field given with ``validation``; an edit must change something."""
        validity = None if valid_until is None and valid_for_s is None else "validity"
        validate_edit(content, scheduled_at, recipients if validity is None else validity)
        scheduled_at = None if scheduled_at is None else validate_time(scheduled_at)
        valid_until, valid_for_s = validate_validity(valid_until, valid_for_s, scheduled_at)
        return cls(
            content=None if content is None else validate_content(content),
            scheduled_at=scheduled_at,
            recipients=None if recipients is None else validate_recipients(recipients),
            valid_until=valid_until,
            valid_for_s=valid_for_s,
        )


def _validity_end(valid_until: float | None, valid_for_s: float | None,
                  due_at: float) -> float | None:
    if valid_for_s is not None:
        return validity_end(due_at, valid_for_s)
    return valid_until
