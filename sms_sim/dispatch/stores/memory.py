"""The reference ``DispatchStore``: a few dicts behind one lock, obviously correct before fast.

Every method takes the lock for its whole body, so each call is atomic and calls from several
threads are serialised. Nothing is durable. It is also the model the stateful property test
compares the SQLite store against, so it follows the contract's wording literally.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Collection, Sequence

from sms_sim.dispatch.contract import (
    CancelResult,
    Claim,
    DeliveryStatus,
    DeliveryView,
    DispatchStore,
    MessageStatus,
    MessageView,
    SENT_DELIVERY_STATUSES,
    SettleKind,
    SettleResult,
    Settlement,
    SubmitResult,
    effective_priority,
)
from sms_sim.dispatch.errors import ConflictError, LockedError
from sms_sim.dispatch.pruning import PRUNE_BATCH_ROWS, PruneResult, check_prune
from sms_sim.dispatch.requests import MessageEdit, NewMessage
from sms_sim.dispatch.stores.common import (
    clock_jumped_back_after_s,
    key_conflict,
    locked_message,
    sent_time,
)
from sms_sim.dispatch.stores.fairness import DueMessage, fair_split
from sms_sim.dispatch.stores.memory_lists import MemoryLists
from sms_sim.dispatch.stores.memory_state import (
    OPEN_MESSAGES as _OPEN,
    DeliveryRecord as _Delivery,
    MessageRecord as _Message,
)
from sms_sim.dispatch.validation import check_claim, check_listing, check_settlements
from sms_sim.segments import segments

__all__ = ["MemoryStore"]

_D = DeliveryStatus
_M = MessageStatus
_JUMP_S = clock_jumped_back_after_s(0.0)  # threads wait for the lock briefly, not seconds


class MemoryStore(MemoryLists):
    """In-memory store; see ``DispatchStore`` for the promises of each method."""

    # --- writes ------------------------------------------------------------------------

    def submit(self, message: NewMessage, now: float) -> SubmitResult:
        with self._lock:
            self._check_open()
            key = message.idempotency_key
            fingerprint = None if key is None else message.fingerprint()
            scoped = (message.tenant, key or "")
            if key is not None and scoped in self._keys:
                first = self._messages[self._keys[scoped]]
                if first.fingerprint != fingerprint:
                    raise key_conflict(key, first.id)
                return SubmitResult(message_id=first.id, created=False, receipt=first.receipt)
            message_id = self._next_message_id
            self._next_message_id += 1
            due_at = now if message.scheduled_at is None else message.scheduled_at
            shape = segments(message.content)
            uid = uuid.uuid4().hex
            self._messages[message_id] = _Message(
                id=message_id, content=message.content, status=_M.SCHEDULED,
                scheduled_at=due_at, created_at=now, updated_at=now, version=1,
                dispatch_started_at=None, completed_at=None, idempotency_key=key,
                priority=message.priority, uid=uid, fingerprint=fingerprint,
                tenant=message.tenant, encoding=shape.encoding, segments=shape.count,
                valid_until=message.validity_end(due_at),
            )
            self._by_uid[uid] = message_id
            self._by_message[message_id] = []
            suppressed = self._add_deliveries(message_id, message.recipients, due_at)
            self._complete_if_done(message_id, now)
            if key is not None:
                self._keys[scoped] = message_id
            return SubmitResult(message_id=message_id, created=True, suppressed=suppressed,
                                view=self._view(self._messages[message_id]))

    def edit(self, message_id: int, expected_version: int, edit: MessageEdit,
             now: float, *, tenant: str | None = None) -> MessageView:
        with self._lock:
            self._check_open()
            message = self._get(message_id, tenant)
            if message.status is not _M.SCHEDULED:
                raise LockedError(locked_message(message_id, message.status,
                                                 message.dispatch_started_at))
            if message.version != expected_version:
                raise ConflictError(
                    f"message {message_id} is at version {message.version}, "
                    f"not {expected_version}: read it again and retry"
                )
            due_at = message.scheduled_at if edit.scheduled_at is None else edit.scheduled_at
            message.valid_until = edit.validity_end(due_at, message.valid_until)  # may refuse
            if edit.content is not None:
                message.content = edit.content
                shape = segments(edit.content)
                message.encoding, message.segments = shape.encoding, shape.count
            if edit.scheduled_at is not None:
                message.scheduled_at = edit.scheduled_at
                for delivery_id in self._by_message[message_id]:
                    self._deliveries[delivery_id].next_attempt_at = edit.scheduled_at
            if edit.recipients is not None:
                for delivery_id in self._by_message[message_id]:
                    del self._deliveries[delivery_id]
                self._by_message[message_id] = []
                self._add_deliveries(message_id, edit.recipients, message.scheduled_at)
            message.version += 1
            message.updated_at = now
            self._complete_if_done(message_id, now)
            return self._view(message)

    def cancel(self, message_id: int, now: float, *,
               tenant: str | None = None) -> CancelResult:
        with self._lock:
            self._check_open()
            message = self._get(message_id, tenant)
            was = message.status
            if was not in (_M.SCHEDULED, _M.DISPATCHING):
                raise LockedError(f"message {message_id} is already {was}; nothing to cancel")
            cancelled = sent = in_flight = 0
            for delivery in self._of(message_id):
                if delivery.status in (_D.PENDING, _D.RETRYING):
                    delivery.status = _D.CANCELLED
                    cancelled += 1
                elif delivery.status in SENT_DELIVERY_STATUSES:
                    sent += 1
                elif delivery.status is _D.LEASED:
                    in_flight += 1
            message.status = _M.CANCELLED
            message.updated_at = now
            message.version += 1
            return CancelResult(message_id=message_id, cancelled=cancelled, already_sent=sent,
                                in_flight=in_flight, was_status=was)

    def claim(self, owner: str, limit: int, lease_s: float, now: float) -> list[Claim]:
        check_claim(limit, lease_s, now)
        with self._lock:
            self._check_open()
            if limit <= 0:
                return []
            for delivery in self._deliveries.values():
                if delivery.status is not _D.LEASED:
                    continue
                until = delivery.lease_until or 0.0
                # Granted this long after our ``now``: it predates a backward clock jump.
                granted = until - lease_s if delivery.leased_at is None else delivery.leased_at
                if until <= now or granted > now + _JUMP_S:
                    self._reclaim(delivery, now)
                    self._complete_if_done(delivery.message_id, now)
            self._expire(now)
            due = [
                m for m in self._messages.values()
                if m.status in (_M.SCHEDULED, _M.DISPATCHING) and m.scheduled_at <= now
                and (m.valid_until is None or m.valid_until > now)
            ]
            due.sort(key=_fair_order)
            classes = {m.id: effective_priority(m.priority, _waiting_since(m), now, m.kept_class)
                       for m in due}
            ready = {m.id: self._ready(m.id, now) for m in due}
            grants = fair_split([DueMessage(m.tenant, classes[m.id], m.id, len(ready[m.id]))
                                 for m in due], limit, self._tenant_served)
            claims: list[Claim] = []
            for message_id, count in grants:
                message = self._messages[message_id]
                if message.status is _M.SCHEDULED:
                    message.status = _M.DISPATCHING
                    message.dispatch_started_at = now
                self._served_seq += 1
                message.served_seq = self._served_seq
                self._tenant_served[message.tenant] = self._served_seq
                message.served_at = now
                message.updated_at = now
                if classes[message_id] > message.priority:
                    message.kept_class = classes[message_id]
                for delivery in sorted(ready[message_id][:count], key=lambda d: d.id):
                    delivery.status = _D.LEASED
                    delivery.lease_owner = owner
                    delivery.lease_until = now + lease_s
                    delivery.leased_at = now
                    delivery.attempts += 1
                    claims.append(Claim(delivery.id, message_id, delivery.recipient,
                                        message.content, delivery.attempts, now + lease_s,
                                        delivery.lease_losses, message.uid,
                                        classes[message_id], message.valid_until))
            for message in due:  # aging: a kept class lasts while something is due
                if message.kept_class is not None and not self._ready(message.id, now):
                    message.kept_class = None
            return claims

    def settle(self, owner: str, settlements: Sequence[Settlement], now: float) -> SettleResult:
        check_settlements(settlements, now)
        with self._lock:
            self._check_open()
            accepted = 0
            touched: set[int] = set()
            for item in settlements:
                delivery = self._deliveries.get(item.delivery_id)
                if (delivery is None or delivery.status is not _D.LEASED
                        or delivery.lease_owner != owner or delivery.attempts != item.attempts
                        or (delivery.lease_until or 0.0) <= now):
                    continue
                accepted += 1
                touched.add(delivery.message_id)
                delivery.lease_owner = None
                delivery.lease_until = None
                if item.kind is SettleKind.SENT:
                    delivery.status = _D.SENT
                    delivery.sent_at = sent_time(item.sent_at, delivery.leased_at, now)
                    held = self._held.take(self._messages[delivery.message_id].uid,
                                           delivery.recipient)
                    if held is not None:
                        delivery.status, delivery.dlr_at = _D(held[0]), held[1]
                elif item.kind is SettleKind.RELEASE:
                    delivery.status = self._back(delivery, _D.PENDING)
                    delivery.attempts -= 1
                elif item.kind is SettleKind.DEAD:
                    delivery.status = _D.DEAD
                    delivery.last_error = item.error
                else:
                    delivery.status = self._back(delivery, _D.RETRYING)
                    delivery.last_error = item.error
                    delivery.next_attempt_at = (
                        now if item.next_attempt_at is None else item.next_attempt_at
                    )
            for message_id in touched:
                self._complete_if_done(message_id, now)
            return SettleResult(accepted=accepted, refused=len(settlements) - accepted)

    def requeue_dead(self, message_id: int | None, now: float, *,
                     delivery_ids: Collection[int] | None = None,
                     tenant: str | None = None) -> int:
        with self._lock:
            self._check_open()
            if message_id is not None:
                self._get(message_id, tenant)
            wanted = None if delivery_ids is None else set(delivery_ids)
            count = 0
            for delivery in self._deliveries.values():
                if delivery.status is not _D.DEAD:
                    continue
                if message_id is not None and delivery.message_id != message_id:
                    continue
                if wanted is not None and delivery.id not in wanted:
                    continue
                message = self._messages[delivery.message_id]
                if message.status is _M.CANCELLED or tenant not in (None, message.tenant):
                    continue
                delivery.attempts = 0
                delivery.lease_losses = 0
                delivery.next_attempt_at = now
                if self._opt_outs.listed(message.tenant, delivery.recipient):
                    delivery.status = _D.SUPPRESSED
                    continue
                delivery.status = _D.PENDING
                count += 1
                if message.status is _M.COMPLETED:
                    message.status = _M.DISPATCHING
                    message.completed_at = None
                    message.updated_at = now
            return count

    def keyed(self, idempotency_key: str, *, tenant: str, now: float) -> int | None:
        with self._lock:
            self._check_open()
            return self._keys.get((tenant, idempotency_key))

    def keep_receipt(self, message_id: int, receipt: str, *,
                     tenant: str | None = None) -> bool:
        with self._lock:
            self._check_open()
            message = self._get(message_id, tenant)
            if message.receipt is not None:
                return False
            message.receipt = receipt
            return True

    def prune(self, finished_before: float, *, dry_run: bool = False,
              batch_rows: int = PRUNE_BATCH_ROWS) -> PruneResult:
        """One lock for all of it (no one waits on a dict for long); ids come from counters,
        so none is handed out again."""
        check_prune(finished_before, batch_rows)
        with self._lock:
            self._check_open()
            gone = [m for m in self._messages.values() if _finished_before(
                m, finished_before, self._of(m.id))]
            deliveries = sum(len(self._by_message[m.id]) for m in gone)
            if not dry_run:
                for message in gone:
                    for delivery_id in self._by_message.pop(message.id):
                        del self._deliveries[delivery_id]
                    del self._messages[message.id]
                    del self._by_uid[message.uid]
                    if message.idempotency_key is not None:
                        del self._keys[(message.tenant, message.idempotency_key)]
                self._held.forget({message.uid for message in gone})
            return PruneResult(messages=len(gone), deliveries=deliveries)

    def check_writable(self, within_s: float | None = None) -> None:
        with self._lock:
            self._check_open()

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def cancelled(self, message_ids: Collection[int]) -> set[int]:
        with self._lock:
            self._check_open()
            return {i for i in message_ids
                    if i in self._messages and self._messages[i].status is _M.CANCELLED}

    # --- reads -------------------------------------------------------------------------

    def next_due_at(self, now: float) -> float | None:
        with self._lock:
            self._check_open()
            times: list[float] = []
            for delivery in self._deliveries.values():
                message = self._messages[delivery.message_id]
                if delivery.status in (_D.PENDING, _D.RETRYING) and message.status in _OPEN:
                    times.append(max(delivery.next_attempt_at, message.scheduled_at))
                    if message.valid_until is not None:  # a claim then expires it
                        times.append(message.valid_until)
                elif delivery.status is _D.LEASED and delivery.lease_until is not None:
                    times.append(delivery.lease_until)
            return min(times, default=None)

    def messages(self, *, message_id: int | None = None, status: MessageStatus | None = None,
                 limit: int = 100, newest_first: bool = False, before: int | None = None,
                 tenant: str | None = None) -> list[MessageView]:
        check_listing(message_id, limit, before=before)
        with self._lock:
            self._check_open()
            found = self._matching(status, before, tenant, message_id)
            if newest_first:
                found.reverse()
            return [self._view(m) for m in found[:limit]]

    def count_messages(self, *, status: MessageStatus | None = None,
                       before: int | None = None, tenant: str | None = None) -> int:
        check_listing(None, 0, before=before)
        with self._lock:
            self._check_open()
            return len(self._matching(status, before, tenant))

    def deliveries(self, *, message_id: int | None = None,
                   status: DeliveryStatus | None = None, limit: int = 1000,
                   recipient: str | None = None, after: int | None = None,
                   tenant: str | None = None) -> list[DeliveryView]:
        check_listing(message_id, limit, after=after)
        with self._lock:
            self._check_open()
            found = [
                DeliveryView(**{k: v for k, v in dataclasses.asdict(d).items()
                                if k != "leased_at"})
                for d_id, d in sorted(self._deliveries.items())
                if (message_id is None or d.message_id == message_id)
                and (status is None or d.status is status)
                and (recipient is None or d.recipient == recipient)
                and (after is None or d_id > after)
                and (tenant is None or self._messages[d.message_id].tenant == tenant)
            ]
            return found[:limit]

    def delivery_counts(self, *, tenant: str | None = None) -> dict[DeliveryStatus, int]:
        with self._lock:
            self._check_open()
            counts = dict.fromkeys(DeliveryStatus, 0)
            for delivery in self._deliveries.values():
                if tenant is None or self._messages[delivery.message_id].tenant == tenant:
                    counts[delivery.status] += 1
            return counts


def _fair_order(message: _Message) -> tuple[float, float, int]:
    """Never served first (oldest due first), then the least recently served."""
    served = float("-inf") if message.served_seq is None else message.served_seq
    return (served, message.scheduled_at, message.id)


def _finished_before(message: _Message, cutoff: float, deliveries: list[_Delivery]) -> bool:
    """``PruneStore.prune``'s test, word for word."""
    if message.status is _M.COMPLETED:
        return message.completed_at is not None and message.completed_at < cutoff
    return message.status is _M.CANCELLED and message.updated_at < cutoff \
        and all(d.status is not _D.LEASED for d in deliveries)


def _waiting_since(message: _Message) -> float:
    return message.scheduled_at if message.served_at is None else message.served_at


_check: type[DispatchStore] = MemoryStore
