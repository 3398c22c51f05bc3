"""The operations people and programs ask of the dispatch engine, over any ``DispatchStore``.

The CLI and the HTTP API call this and nothing lower, so every edge offers the same
operations with the same checks and the same errors. Each refusal is one of the typed
errors below (all ``SmsSimError``), which an edge maps to its own answer (an exit code,
an HTTP status) without reading messages:

- ``InvalidRequestError``: the request is malformed (HTTP 400/422); nothing was read or changed.
- ``NotFoundError``: no message has that id (404).
- ``ConflictError``: an edit named a version that is no longer current (409/412);
  ``KeyReusedError`` an idempotency key reused for another request (422) and
  ``StillSubmittingError`` a repeat while the first is still being stored (409).
- ``LockedError``: the message is past the state the operation needs (409/423).
- ``UnauthorizedError``: an API key that is malformed, unknown or revoked (401);
  ``ForbiddenError`` a valid key of the wrong role (403).
- ``StoreError``: the store failed or is not a usable database (503; ``StoreBusyError``
  is worth retrying soon).

A refused operation changes nothing. Time comes only from the injected ``Clock``.

A service sees every tenant (the operator's view, which the CLI uses) or, made by
``for_tenant``, one: then another tenant's message does not exist for it.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Collection
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from sms_sim.clock import Clock
from sms_sim.dispatch.contract import (
    CancelResult,
    DeliveryStatus,
    DeliveryView,
    DispatchStore,
    InvalidRequestError,
    MessageStatus,
    MessageView,
    OPEN_DELIVERY_STATUSES,
    PruneResult,
    SENT_DELIVERY_STATUSES,
    SubmitResult,
)
from sms_sim.dispatch.errors import (
    ConflictError,
    KeyReusedError,
    LockedError,
    NotFoundError,
    StillSubmittingError,
    StoreError,
)
from sms_sim.dispatch.keys import ForbiddenError, UnauthorizedError
from sms_sim.dispatch.requests import MessageEdit, NewMessage
from sms_sim.dispatch.service_lists import ListsService
from sms_sim.dispatch.tenants import validate_tenant
from sms_sim.dispatch.validation import (
    TIME_MAX_S,
    parse_status,
    validate_idempotency_key,
    validate_limit,
    validate_message_id,
    validate_version,
)

__all__ = [
    "DispatchService",
    "Health",
    "MessagePage",
    "Progress",
    "InvalidRequestError",
    "NotFoundError",
    "ConflictError",
    "KeyReusedError",
    "StillSubmittingError",
    "LockedError",
    "UnauthorizedError",
    "ForbiddenError",
    "StoreError",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Health:
    """Whether the store answers, and whether due work is waiting longer than it should.

    ``behind_s`` is how long the earliest due work (a scheduled message, a retry, or an
    expired lease to rescue) has been waiting at ``checked_at``; 0 when nothing is overdue.
    It grows without bound when no worker is claiming, which is what a monitor alerts on.
    """

    ok: bool
    checked_at: float
    next_due_at: float | None
    behind_s: float
    error: str | None = None  # why the store could not be read, when not ok


@dataclass(frozen=True, slots=True, kw_only=True)
class MessagePage:
    """One page of a newest-first listing: ``more`` messages matching the same filter are
    older than the last one here; ask for them with ``before=next_before``."""

    messages: list[MessageView]
    more: int

    @property
    def next_before(self) -> int | None:
        """The cursor of the next (older) page, None when this is the last."""
        return self.messages[-1].id if self.more and self.messages else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """How far a message has got, for an operator watching it go out.

    ``sent`` counts deliveries the provider accepted (``SENT_DELIVERY_STATUSES``: sent,
    delivered, undelivered); ``segments_sent`` is that many times the message's segments
    (what a carrier bills). ``rate_per_s`` is deliveries sent per second since dispatch
    began (until it completed, for a completed message); ``eta_at`` is when the
    deliveries still open would all be sent at that rate, for a dispatching message that
    has sent something (None past the year 9999). Both are None when there is nothing to
    measure yet. Retries and dead deliveries make the ETA a floor, not a promise.
    """

    total: int
    sent: int
    dead: int
    open: int  # pending, leased or retrying: still to be tried
    sent_fraction: float  # of ``total``, 0 to 1
    rate_per_s: float | None
    eta_at: float | None
    segments_sent: int = 0
    delivered: int = 0  # a receipt said so
    expired: int = 0  # never sent (validity), or a receipt said the network gave up
    suppressed: int = 0  # opted out: not sent, not a failure


@runtime_checkable
class _SelfChecking(Protocol):
    """A store that can verify its own files (SQLite's ``PRAGMA integrity_check``)."""

    def integrity_check(self, *, quick: bool = False) -> str: ...


class DispatchService(ListsService):
    """Submit, inspect, change and cancel messages, and look after dead deliveries; API
    keys, opt-outs and delivery receipts (``service_lists.ListsService``).

    The service keeps no state of its own: it is as thread-safe as its store (every
    ``DispatchStore`` is), and several services, threads or processes may share one
    database. It owns the store it is given: ``close`` (or leaving a ``with`` block)
    closes it. Views made by ``for_tenant`` share that store and do not close it.
    """

    def __init__(self, store: DispatchStore, clock: Clock, *, tenant: str | None = None,
                 owns_store: bool = True) -> None:
        self._store = store
        self._clock = clock
        self._tenant = None if tenant is None else validate_tenant(tenant)
        self._owns_store = owns_store

    @property
    def tenant(self) -> str | None:
        """The one tenant this service acts for, or None: every tenant (the operator)."""
        return self._tenant

    def for_tenant(self, tenant: str) -> DispatchService:
        """A view of the same store that acts for ``tenant`` alone: it submits into it, and
        another tenant's message is ``NotFoundError`` on every operation, as an id that
        does not exist (so ids do not reveal other tenants' traffic). Cheap: one per request
        is fine. Closing it leaves the store open."""
        return DispatchService(self._store, self._clock, tenant=tenant, owns_store=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the store (not for a ``for_tenant`` view); any later call raises
        ``StoreError``."""
        if self._owns_store:
            self._store.close()

    # --- messages ----------------------------------------------------------------------

    def submit(self, message: NewMessage) -> SubmitResult:
        """Queue ``message`` for its recipients, due at its ``scheduled_at`` or now.

        ``message`` comes from ``NewMessage.validated``: the edges build it before they
        open a store, so a malformed request never creates a database. A repeated
        idempotency key creates nothing and returns the first message's id and kept
        receipt with ``created=False``, even under concurrent submits. A tenant's view
        submits into its tenant, whatever ``message.tenant`` says.
        """
        if self._tenant is not None and message.tenant != self._tenant:
            message = dataclasses.replace(message, tenant=self._tenant)
        return self._store.submit(message, self._clock.now())

    def is_repeat(self, message: NewMessage) -> bool:
        """Whether ``message``'s idempotency key was used already in its tenant (this
        view's): then ``submit`` answers it as a repeat of that request or refuses it as a
        conflict, and a rule only a new request must meet (a send time not long past) does
        not apply to it."""
        key = validate_idempotency_key(message.idempotency_key)
        if key is None:
            return False
        tenant = self._tenant if self._tenant is not None else message.tenant
        return self._store.keyed(key, tenant=tenant, now=self._clock.now()) is not None

    def keep_receipt(self, message_id: int, receipt: str) -> bool:
        """Keep what an edge answered on creating ``message_id``, to replay it to repeats of
        the request; the first kept stays (False: one was kept already)."""
        return self._store.keep_receipt(validate_message_id(message_id), receipt,
                                        tenant=self._tenant)

    def submitted(self, result: SubmitResult) -> MessageView:
        """The message a submit created or found: the store's own copy of a new one when it
        kept one (``SubmitResult.view``, no second trip to the store), else read."""
        return result.view if result.view is not None else self.get(result.message_id)

    def get(self, message_id: int) -> MessageView:
        """One message with its deliveries counted by status; ``NotFoundError`` if absent."""
        found = self._store.messages(message_id=validate_message_id(message_id), limit=1,
                                     tenant=self._tenant)
        if not found:
            raise NotFoundError(f"no message with id {message_id}")
        return found[0]

    def edit(self, message_id: int, expected_version: int, changes: MessageEdit) -> MessageView:
        """Apply ``changes`` (from ``MessageEdit.validated``) to a message that has not
        started dispatching, if ``expected_version`` is still its version; returns the
        edited message, one version up.

        Check and change are atomic, so an edit racing the first claim either lands first
        or is refused. Raises ``NotFoundError``, ``LockedError`` (dispatching or finished:
        cancel it instead) or ``ConflictError`` (someone changed it since you read it: read
        it again).
        """
        return self._store.edit(validate_message_id(message_id),
                                validate_version(expected_version), changes, self._clock.now(),
                                tenant=self._tenant)

    def cancel(self, message_id: int) -> CancelResult:
        """Stop a scheduled or dispatching message: deliveries not yet leased are cancelled,
        sent ones stay sent, and leased ones finish their attempt but are not retried.
        Raises ``NotFoundError``, or ``LockedError`` if it already completed or was cancelled.
        """
        return self._store.cancel(validate_message_id(message_id), self._clock.now(),
                                  tenant=self._tenant)

    def await_workers(self, message_id: int, *, timeout_s: float,
                      poll_s: float = 0.05) -> MessageView:
        """The message once no worker holds any of its deliveries, or after ``timeout_s``.

        After a cancel, what workers held is either being sent (it goes out) or withdrawn
        at its send's check, within about one send time: waiting that long lets a cancel
        say how many actually went out instead of how many were held.
        """
        deadline = self._clock.monotonic() + timeout_s
        pause = threading.Event()  # never set: the sleeps are short and bounded
        while True:
            view = self.get(message_id)
            if not view.counts[DeliveryStatus.LEASED] or self._clock.monotonic() >= deadline:
                return view
            self._clock.sleep(poll_s, pause)

    def list_messages(self, *, status: MessageStatus | str | None = None, limit: int = 100,
                      newest_first: bool = False,
                      before: int | None = None) -> list[MessageView]:
        """Up to ``limit`` messages by id ascending (oldest first; ``newest_first`` turns
        it round), optionally only those in ``status`` (the enum or its text) and with an
        id below ``before``."""
        wanted = None if status is None else parse_status(MessageStatus, status)
        return self._store.messages(status=wanted, limit=validate_limit(limit),
                                    newest_first=newest_first, before=before,
                                    tenant=self._tenant)

    def message_page(self, *, status: MessageStatus | str | None = None, limit: int = 100,
                     before: int | None = None) -> MessagePage:
        """The newest ``limit`` messages (below ``before``, if given), and how many more
        older ones match: what an operator listing messages wants to see first."""
        wanted = None if status is None else parse_status(MessageStatus, status)
        page = self._store.messages(status=wanted, limit=validate_limit(limit),
                                    newest_first=True, before=before, tenant=self._tenant)
        if page:
            more = self._store.count_messages(status=wanted, before=page[-1].id,
                                              tenant=self._tenant)
        else:  # nothing matched, or a page of none was asked for: count what would have
            more = 0 if limit else self._store.count_messages(status=wanted, before=before,
                                                              tenant=self._tenant)
        return MessagePage(messages=page, more=more)

    def progress(self, view: MessageView) -> Progress:
        """How far ``view`` has got at the clock's now: share sent, rate and ETA."""
        counts = view.counts
        total = view.recipient_count
        sent = sum(counts[status] for status in SENT_DELIVERY_STATUSES)
        still = sum(counts[status] for status in OPEN_DELIVERY_STATUSES)
        rate_per_s = eta_at = None
        started, now = view.dispatch_started_at, self._clock.now()
        end = view.completed_at if view.status is MessageStatus.COMPLETED else now
        if view.status in (MessageStatus.DISPATCHING, MessageStatus.COMPLETED) \
                and started is not None and end is not None and end > started and sent:
            rate_per_s = sent / (end - started)
            if view.status is MessageStatus.DISPATCHING:
                eta_at = now + still / rate_per_s
                if eta_at > TIME_MAX_S:  # a dispatch stalled for years: no time to name
                    eta_at = None
        return Progress(total=total, sent=sent, dead=counts[DeliveryStatus.DEAD], open=still,
                        sent_fraction=sent / total if total else 0.0, rate_per_s=rate_per_s,
                        eta_at=eta_at, segments_sent=sent * view.segments,
                        delivered=counts[DeliveryStatus.DELIVERED],
                        expired=counts[DeliveryStatus.EXPIRED],
                        suppressed=counts[DeliveryStatus.SUPPRESSED])

    # --- deliveries --------------------------------------------------------------------

    def deliveries(self, message_id: int, *, status: DeliveryStatus | str | None = None,
                   limit: int = 1000, recipient: str | None = None,
                   after: int | None = None) -> list[DeliveryView]:
        """Up to ``limit`` deliveries of one message by id ascending (recipient order),
        optionally only those in ``status``, to ``recipient``, or with an id above
        ``after``. Raises ``NotFoundError`` for an unknown message rather than answering
        with an empty list, which would look like a message with no recipients."""
        wanted = None if status is None else parse_status(DeliveryStatus, status)
        validate_limit(limit)
        self._require(message_id)
        return self._store.deliveries(message_id=message_id, status=wanted, limit=limit,
                                      recipient=recipient, after=after, tenant=self._tenant)

    def dead(self, message_id: int | None = None, *, limit: int = 1000,
             after: int | None = None) -> list[DeliveryView]:
        """Up to ``limit`` deliveries that ran out of attempts or lease losses, of one
        message or of all, by id ascending (above ``after``, a cursor); ``NotFoundError``
        for an unknown message."""
        validate_limit(limit)
        if message_id is not None:
            self._require(message_id)
        return self._store.deliveries(message_id=message_id, status=DeliveryStatus.DEAD,
                                      limit=limit, after=after, tenant=self._tenant)

    def delivery_counts(self) -> dict[DeliveryStatus, int]:
        """Deliveries of every message (of this view's tenant) by status."""
        return self._store.delivery_counts(tenant=self._tenant)

    def requeue(self, message_id: int | None = None, *,
                delivery_ids: Collection[int] | None = None) -> int:
        """Give dead deliveries (of one message, or all; only ``delivery_ids`` when given)
        a fresh start, due now: attempts and lease losses back to 0, last error kept; a
        completed message returns to dispatching. Deliveries of cancelled messages stay
        dead, and ids that are not dead deliveries (of this tenant) are passed over.
        Returns how many were requeued; ``NotFoundError`` for an unknown message."""
        if message_id is not None:
            validate_message_id(message_id)
        ids = None if delivery_ids is None else [validate_message_id(i) for i in delivery_ids]
        return self._store.requeue_dead(message_id, self._clock.now(), delivery_ids=ids,
                                        tenant=self._tenant)

    def prune(self, older_than_s: float, *, dry_run: bool = False) -> tuple[float, PruneResult]:
        """Delete the messages that finished more than ``older_than_s`` ago, with their
        deliveries (``DispatchStore.prune``; ``dry_run``: count them); returns the cutoff
        (epoch seconds) and what went. Every tenant's: a tenant's view may not."""
        if self._tenant is not None:
            raise InvalidRequestError("prune deletes every tenant's finished messages; it "
                                      "is the operator's, not a tenant's")
        if not math.isfinite(older_than_s) or older_than_s < 0:
            raise InvalidRequestError(f"older_than must be a duration >= 0 (got {older_than_s!r})")
        cutoff = self._clock.now() - older_than_s
        if cutoff < 0:  # before 1970: no time a store keeps (nor one ``format_utc`` prints)
            raise InvalidRequestError(f"older_than {older_than_s:g} s reaches back before "
                                      "1970: nothing finished that long ago")
        return cutoff, self._store.prune(cutoff, dry_run=dry_run)

    # --- operations --------------------------------------------------------------------

    def health(self) -> Health:
        """Read the store once and report; a store that fails is reported (``ok`` False,
        with the reason), not raised, so a health check always has an answer."""
        now = self._clock.now()
        try:
            due_at = self._store.next_due_at(now)
        except StoreError as exc:
            return Health(ok=False, checked_at=now, next_due_at=None, behind_s=0.0,
                          error=str(exc))
        behind_s = 0.0 if due_at is None else max(0.0, now - due_at)
        return Health(ok=True, checked_at=now, next_due_at=due_at, behind_s=behind_s)

    def ready(self, *, within_s: float | None = None) -> Health:
        """``health``, and proof that the store takes writes now: what a load balancer asks
        before sending submits here. Never raises for a store failure. ``within_s``: how
        long to wait for a write lock held elsewhere (``DispatchStore.check_writable``)."""
        health = self.health()
        if not health.ok:
            return health
        try:
            self._store.check_writable(within_s)
        except StoreError as exc:
            return dataclasses.replace(health, ok=False, error=str(exc))
        return health

    @property
    def checks_its_files(self) -> bool:
        """Whether ``check`` reads the store's own files (SQLite) rather than trusting a
        server that checks its pages itself (PostgreSQL: reaching it is all ``check``
        shows) or having none (in memory)."""
        return isinstance(self._store, _SelfChecking)

    def check(self, *, quick: bool = False) -> str:
        """The store's own verdict on its files: "ok", or the first problem found (for
        SQLite, ``PRAGMA integrity_check``; ``quick``: ``quick_check``, which a worker runs
        as it starts). A store with no files (in memory) is "ok". A file too damaged to be
        read at all raises ``StoreError``."""
        store = self._store
        return store.integrity_check(quick=quick) if isinstance(store, _SelfChecking) else "ok"

    def _require(self, message_id: int) -> None:
        """Raise ``NotFoundError`` unless the message exists. Only ``prune`` deletes
        messages, and only finished ones, so the answer holds for the listing that follows
        it (at worst that listing comes back empty)."""
        self.get(message_id)
