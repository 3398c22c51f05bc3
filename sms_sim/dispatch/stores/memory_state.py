"""The state of ``MemoryStore``: its rows, the bookkeeping beside them (API keys, opt-out
lists, delivery receipts held for deliveries not yet sent) and the helpers every operation
shares (``MemoryState``).

Nothing here takes the lock: the store's operations hold it around every call to these.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import threading
from collections.abc import Sequence

from sms_sim.dispatch.contract import (
    DeliveryStatus,
    MessageStatus,
    MessageView,
    OPEN_DELIVERY_STATUSES,
)
from sms_sim.dispatch.dlrs import DlrOutcome, dlr_outcome
from sms_sim.dispatch.errors import ConflictError, NotFoundError, StoreError
from sms_sim.dispatch.keys import ApiKey
from sms_sim.dispatch.optouts import OptOut
from sms_sim.dispatch.stores.common import EXPIRED_LEASE_ERROR
from sms_sim.segments import Encoding

_D = DeliveryStatus
_M = MessageStatus
OPEN_MESSAGES = (MessageStatus.SCHEDULED, MessageStatus.DISPATCHING)  # may be claimed
_OPEN = OPEN_MESSAGES

__all__ = ["MessageRecord", "DeliveryRecord", "ApiKeyBook", "OptOutBook", "HeldDlrs",
           "MemoryState", "has_been_sent", "OPEN_MESSAGES"]


@dataclass(slots=True, kw_only=True)
class MessageRecord:
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
    uid: str
    fingerprint: str | None  # of the request, when it came with an idempotency key
    tenant: str
    encoding: Encoding
    segments: int
    valid_until: float | None
    receipt: str | None = None
    served_seq: int | None = None  # when it was last given deliveries, in take order
    served_at: float | None = None  # ... and at what time, for aging
    kept_class: int | None = None  # the raised class it was last served in (aging)


@dataclass(slots=True, kw_only=True)
class DeliveryRecord:
    id: int
    message_id: int
    recipient: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: float
    lease_owner: str | None = None
    lease_until: float | None = None
    sent_at: float | None = None
    last_error: str | None = None
    lease_losses: int = 0
    dlr_at: float | None = None
    leased_at: float | None = None  # the claimer's ``now`` when it was granted


def has_been_sent(delivery: DeliveryRecord) -> bool:
    """Whether a receipt may move it: its send is recorded (``expired`` only after one)."""
    return delivery.sent_at is not None and delivery.status in (
        DeliveryStatus.SENT, DeliveryStatus.DELIVERED, DeliveryStatus.UNDELIVERED,
        DeliveryStatus.EXPIRED)


class ApiKeyBook:
    """``keys.KeyStore`` on a dict."""

    def __init__(self) -> None:
        self._keys: dict[str, tuple[ApiKey, str]] = {}

    def add(self, key: ApiKey, secret_hash: str) -> None:
        if key.key_id in self._keys:
            raise ConflictError(f"an API key with id {key.key_id!r} exists already")
        self._keys[key.key_id] = (key, secret_hash)

    def get(self, key_id: str) -> tuple[ApiKey, str] | None:
        return self._keys.get(key_id)

    def revoke(self, key_id: str, now: float) -> ApiKey:
        if key_id not in self._keys:
            raise NotFoundError(f"no API key with id {key_id!r}")
        key, secret_hash = self._keys[key_id]
        if key.revoked_at is None:
            key = dataclasses.replace(key, revoked_at=now)
            self._keys[key_id] = (key, secret_hash)
        return key

    def listed(self, tenant: str | None) -> list[ApiKey]:
        found = [key for key, _ in self._keys.values() if tenant is None or key.tenant == tenant]
        return sorted(found, key=lambda key: (key.created_at, key.key_id))


class OptOutBook:
    """Each tenant's opt-out list: phone -> when it was added."""

    def __init__(self) -> None:
        self._lists: dict[str, dict[str, float]] = {}

    def listed(self, tenant: str, phone: str) -> bool:
        return phone in self._lists.get(tenant, {})

    def add(self, tenant: str, phones: list[str], now: float) -> list[str]:
        """List ``phones``; returns those newly listed."""
        listing = self._lists.setdefault(tenant, {})
        added = [phone for phone in phones if phone not in listing]
        for phone in added:
            listing[phone] = now
        return added

    def remove(self, tenant: str, phone: str) -> bool:
        return self._lists.get(tenant, {}).pop(phone, None) is not None

    def page(self, tenant: str, after: str | None, limit: int) -> list[OptOut]:
        listing = self._lists.get(tenant, {})
        phones = sorted(p for p in listing if after is None or p > after)[:limit]
        return [OptOut(tenant=tenant, phone=p, created_at=listing[p]) for p in phones]


class HeldDlrs:
    """Receipts for deliveries whose send is not recorded yet: (uid, recipient) -> (status,
    at)."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], tuple[str, float]] = {}

    def hold(self, uid: str, recipient: str, status: str, at: float) -> DlrOutcome:
        """Keep a receipt (``dlrs``: delivered wins, otherwise the first stays)."""
        held = self._held.get((uid, recipient))
        if held is not None:
            verdict = dlr_outcome(held[0], status)
            if verdict is not DlrOutcome.APPLIED:
                return verdict
        self._held[uid, recipient] = (status, at)
        return DlrOutcome.HELD

    def take(self, uid: str, recipient: str) -> tuple[str, float] | None:
        return self._held.pop((uid, recipient), None)

    def forget(self, uids: set[str]) -> None:
        """Drop those held for pruned messages."""
        for key in [key for key in self._held if key[0] in uids]:
            del self._held[key]


class MemoryState:
    """The dicts behind one lock, and the steps operations share (lock held)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: dict[int, MessageRecord] = {}
        self._deliveries: dict[int, DeliveryRecord] = {}
        self._by_message: dict[int, list[int]] = {}
        self._keys: dict[tuple[str, str], int] = {}  # (tenant, idempotency key) -> id
        self._api_keys = ApiKeyBook()
        self._opt_outs = OptOutBook()
        self._held = HeldDlrs()
        self._by_uid: dict[str, int] = {}
        self._tenant_served: dict[str, int] = {}  # tenant -> its last serve (served_seq)
        self._next_message_id = 1
        self._next_delivery_id = 1
        self._closed = False
        self._served_seq = 0

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    def _get(self, message_id: int, tenant: str | None = None) -> MessageRecord:
        message = self._messages.get(message_id)
        if message is None or tenant not in (None, message.tenant):
            raise NotFoundError(f"no message with id {message_id}")
        return message

    def _of(self, message_id: int) -> list[DeliveryRecord]:
        return [self._deliveries[i] for i in self._by_message[message_id]]

    def _add_deliveries(self, message_id: int, recipients: Sequence[str],
                        due_at: float) -> int:
        """Pending deliveries, suppressed for numbers on the tenant's list; returns how
        many were suppressed."""
        tenant = self._messages[message_id].tenant
        suppressed = 0
        for recipient in dict.fromkeys(recipients):
            delivery_id = self._next_delivery_id
            self._next_delivery_id += 1
            listed = self._opt_outs.listed(tenant, recipient)
            suppressed += listed
            self._deliveries[delivery_id] = DeliveryRecord(
                id=delivery_id, message_id=message_id, recipient=recipient,
                status=_D.SUPPRESSED if listed else _D.PENDING, attempts=0,
                next_attempt_at=due_at,
            )
            self._by_message[message_id].append(delivery_id)
        return suppressed

    def _find(self, uid: str, recipient: str) -> DeliveryRecord | None:
        message_id = self._by_uid.get(uid)
        if message_id is None:
            return None
        for delivery in self._of(message_id):
            if delivery.recipient == recipient:
                return delivery
        return None

    def _back(self, delivery: DeliveryRecord, status: DeliveryStatus) -> DeliveryStatus:
        """Where a delivery given back goes: ``status``, unless its message was cancelled
        or its number opted out meanwhile."""
        message = self._messages[delivery.message_id]
        if message.status is _M.CANCELLED:
            return _D.CANCELLED
        if self._opt_outs.listed(message.tenant, delivery.recipient):
            return _D.SUPPRESSED
        return status

    def _expire(self, now: float) -> None:
        """Deliveries of messages past their validity that were never sent: ``expired``."""
        for message in list(self._messages.values()):
            if message.status not in _OPEN or message.valid_until is None \
                    or message.valid_until > now:
                continue
            for delivery in self._of(message.id):
                if delivery.status in (_D.PENDING, _D.RETRYING):
                    delivery.status = _D.EXPIRED
            self._complete_if_done(message.id, now)

    def _ready(self, message_id: int, now: float) -> list[DeliveryRecord]:
        """Claimable deliveries of one message: due retries first, then pending, by id."""
        ready = [
            d for d in self._of(message_id)
            if d.status in (_D.PENDING, _D.RETRYING) and d.next_attempt_at <= now
        ]
        ready.sort(key=lambda d: (d.status is not _D.RETRYING, d.next_attempt_at, d.id))
        return ready

    def _reclaim(self, delivery: DeliveryRecord, now: float) -> None:
        delivery.status = self._back(delivery, _D.RETRYING)
        delivery.lease_owner = None
        delivery.next_attempt_at = now
        delivery.lease_until = None
        delivery.last_error = EXPIRED_LEASE_ERROR
        delivery.lease_losses += 1

    def _complete_if_done(self, message_id: int, now: float) -> None:
        """A scheduled or dispatching message with nothing open left is completed."""
        message = self._messages[message_id]
        if message.status not in _OPEN:
            return
        if any(d.status in OPEN_DELIVERY_STATUSES for d in self._of(message_id)):
            return
        message.status = _M.COMPLETED
        message.completed_at = now
        message.updated_at = now

    def _matching(self, status: MessageStatus | None, before: int | None,
                  tenant: str | None, message_id: int | None = None) -> list[MessageRecord]:
        """Messages passing a listing's filters, by id ascending."""
        return [
            m for m_id, m in sorted(self._messages.items())
            if (message_id is None or m_id == message_id)
            and (tenant is None or m.tenant == tenant)
            and (status is None or m.status is status)
            and (before is None or m_id < before)
        ]

    def _view(self, message: MessageRecord) -> MessageView:
        counts = dict.fromkeys(DeliveryStatus, 0)
        for delivery in self._of(message.id):
            counts[delivery.status] += 1
        return MessageView(
            id=message.id, content=message.content, status=message.status,
            scheduled_at=message.scheduled_at, created_at=message.created_at,
            updated_at=message.updated_at, version=message.version,
            dispatch_started_at=message.dispatch_started_at,
            completed_at=message.completed_at, idempotency_key=message.idempotency_key,
            priority=message.priority, counts=counts, uid=message.uid, tenant=message.tenant,
            receipt=message.receipt, encoding=message.encoding, segments=message.segments,
            valid_until=message.valid_until,
        )
