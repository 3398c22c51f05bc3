"""The operations people and programs ask of the dispatch engine, over any ``DispatchStore``.

The CLI and the HTTP API call this and nothing lower, so every edge offers the same
operations with the same checks and the same errors. Each refusal is one of the typed
errors below (all ``SmsSimError``), which an edge maps to its own answer (an exit code,
an HTTP status) without reading messages:

- ``InvalidRequestError``: the request is malformed (HTTP 400/422); nothing was read or changed.
- ``NotFoundError``: no message has that id (404).
- ``ConflictError``: an edit named a version that is no longer current (409).
- ``LockedError``: the message is past the state the operation needs (409/423).
- ``StoreError``: the store failed or is not a usable database (500/503).

A refused operation changes nothing. Time comes only from the injected ``Clock``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Self

from sms_sim.clock import Clock
from sms_sim.dispatch.contract import (
    CancelResult,
    ConflictError,
    DeliveryStatus,
    DeliveryView,
    DispatchStore,
    InvalidRequestError,
    LockedError,
    MessageEdit,
    MessageStatus,
    MessageView,
    NewMessage,
    NotFoundError,
    StoreError,
    SubmitResult,
)
from sms_sim.dispatch.validation import (
    parse_status,
    validate_limit,
    validate_message_id,
    validate_version,
)

__all__ = [
    "DispatchService",
    "Health",
    "InvalidRequestError",
    "NotFoundError",
    "ConflictError",
    "LockedError",
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


class DispatchService:
    """Submit, inspect, change and cancel messages, and look after dead deliveries.

    The service keeps no state of its own: it is as thread-safe as its store (every
    ``DispatchStore`` is), and several services, threads or processes may share one
    database. It owns the store it is given: ``close`` (or leaving a ``with`` block)
    closes it.
    """

    def __init__(self, store: DispatchStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the store; any later call raises ``StoreError``."""
        self._store.close()

    # --- messages ----------------------------------------------------------------------

    def submit(self, message: NewMessage) -> SubmitResult:
        """Queue ``message`` for its recipients, due at its ``scheduled_at`` or now.

        ``message`` comes from ``NewMessage.validated``: the edges build it before they
        open a store, so a malformed request never creates a database. A repeated
        idempotency key creates nothing and returns the first message's id with
        ``created=False``, even under concurrent submits.
        """
        return self._store.submit(message, self._clock.now())

    def get(self, message_id: int) -> MessageView:
        """One message with its deliveries counted by status; ``NotFoundError`` if absent."""
        found = self._store.messages(message_id=validate_message_id(message_id), limit=1)
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
                                validate_version(expected_version), changes, self._clock.now())

    def cancel(self, message_id: int) -> CancelResult:
        """Stop a scheduled or dispatching message: deliveries not yet leased are cancelled,
        sent ones stay sent, and leased ones finish their attempt but are not retried.
        Raises ``NotFoundError``, or ``LockedError`` if it already completed or was cancelled.
        """
        return self._store.cancel(validate_message_id(message_id), self._clock.now())

    def list_messages(self, *, status: MessageStatus | str | None = None,
                      limit: int = 100) -> list[MessageView]:
        """Up to ``limit`` messages by id ascending (oldest first), optionally only those in
        ``status`` (the enum or its text)."""
        wanted = None if status is None else parse_status(MessageStatus, status)
        return self._store.messages(status=wanted, limit=validate_limit(limit))

    # --- deliveries --------------------------------------------------------------------

    def deliveries(self, message_id: int, *, status: DeliveryStatus | str | None = None,
                   limit: int = 1000) -> list[DeliveryView]:
        """Up to ``limit`` deliveries of one message by id ascending, optionally only those
        in ``status``. Raises ``NotFoundError`` for an unknown message rather than
        answering with an empty list, which would look like a message with no recipients."""
        wanted = None if status is None else parse_status(DeliveryStatus, status)
        validate_limit(limit)
        self._require(message_id)
        return self._store.deliveries(message_id=message_id, status=wanted, limit=limit)

    def dead(self, message_id: int | None = None, *, limit: int = 1000) -> list[DeliveryView]:
        """Up to ``limit`` deliveries that ran out of attempts or lease losses, of one
        message or of all, by id ascending; ``NotFoundError`` for an unknown message."""
        validate_limit(limit)
        if message_id is not None:
            self._require(message_id)
        return self._store.deliveries(message_id=message_id, status=DeliveryStatus.DEAD,
                                      limit=limit)

    def requeue(self, message_id: int | None = None) -> int:
        """Give dead deliveries (of one message, or all) a fresh start, due now: attempts and
        lease losses back to 0, last error kept; a completed message returns to dispatching.
        Deliveries of cancelled messages stay dead. Returns how many were requeued;
        ``NotFoundError`` for an unknown message."""
        if message_id is not None:
            validate_message_id(message_id)
        return self._store.requeue_dead(message_id, self._clock.now())

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

    def _require(self, message_id: int) -> None:
        """Raise ``NotFoundError`` unless the message exists. Messages are never deleted,
        so the answer still holds for the listing that follows it."""
        self.get(message_id)
