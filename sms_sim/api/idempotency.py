"""Submitting once, answering the same every time: ``Idempotency-Key`` as the IETF httpapi
draft and Stripe define it.

The store decides which of several requests with one key creates the message (exactly
one, even when they race) and refuses a different request under a used key
(``KeyReusedError``, 422). What is left to this edge is the answer: the first request keeps
the exact body it answered with (``keep_receipt``) and every repeat gets those bytes back,
status 201, with ``Idempotent-Replayed: true``. A repeat that arrives before the first has
kept its answer is told to come back (409 with Retry-After), unless the message is older
than ``RECEIPT_WAIT_S``: then the first request died between storing the message and
keeping its answer, and the answer is built from the message as it is now and kept, so
the client is never stuck with a key that only ever says "in progress".

Keys are the tenant's own: the store scopes them, and the route's service view is the
tenant's. A key is 1-255 characters; sent as a structured-field string (``"abc"``, the
draft's form) or bare (``abc``, Stripe's), it is the same key.
"""

from __future__ import annotations

from dataclasses import dataclass

from sms_sim.api.problems import BUSY_RETRY_AFTER_S, IN_PROGRESS, INVALID, ProblemError
from sms_sim.api.submission import Submission
from sms_sim.api.views import submitted_out
from sms_sim.clock import Clock
from sms_sim.dispatch.contract import DeliveryStatus, MessageView
from sms_sim.dispatch.service import DispatchService

__all__ = ["RECEIPT_WAIT_S", "Answer", "submit_once", "key_from_header"]

# How long a first request may take between creating its message and keeping its answer
# before a repeat stops waiting for it (a million-recipient load takes tens of seconds, and
# its message is created when the load ends).
RECEIPT_WAIT_S = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """A submit's response body (JSON text), its message, and whether it is a replay."""

    body: str
    message_id: int
    replayed: bool


def key_from_header(value: str | None) -> str | None:
    """The key an ``Idempotency-Key`` header names: its value, or the inside of a quoted
    one; the engine checks it further (``validation.validate_idempotency_key``).

    Printable ASCII only, as the IETF draft's structured-field string: a header's bytes
    arrive as Latin-1, so a UTF-8 key was stored garbled, and a tab was kept in it."""
    if value is None:
        return None
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        value = value[1:-1]
    if not all(" " <= char <= "~" for char in value):
        raise ProblemError(INVALID, "header Idempotency-Key must be printable ASCII (letters, "
                                    "digits, punctuation, spaces)")
    return value


def submit_once(service: DispatchService, submission: Submission, clock: Clock) -> Answer:
    """Submit, or replay the answer to the first submit with the same key (blocking).

    Raises what ``DispatchService.submit`` raises, ``ProblemError`` (409) while the
    first request with the key has not kept its answer yet, and ``submission.late`` for a
    new request (not a repeat) asking for a time too far past.
    """
    message = submission.message
    if submission.late is not None and not service.is_repeat(message):
        raise submission.late
    result = service.submit(message)
    if result.created:
        view = service.submitted(result)
        body = _answer(service, view, submission.duplicates_dropped, result.suppressed)
        if message.idempotency_key is not None:
            service.keep_receipt(result.message_id, body)
        return Answer(body=body, message_id=result.message_id, replayed=False)
    if result.receipt is not None:
        return Answer(body=result.receipt, message_id=result.message_id, replayed=True)
    view = service.get(result.message_id)
    if clock.now() - view.created_at < RECEIPT_WAIT_S:
        raise ProblemError(
            IN_PROGRESS, f"the first request with idempotency key {message.idempotency_key!r} "
                         f"is still in progress; send it again in a moment",
            headers={"Retry-After": str(BUSY_RETRY_AFTER_S)})
    body = _answer(service, view, submission.duplicates_dropped)
    if not service.keep_receipt(result.message_id, body):  # another repeat kept one first
        kept = service.get(result.message_id).receipt
        body = kept if kept is not None else body
    return Answer(body=body, message_id=result.message_id, replayed=True)


def _answer(service: DispatchService, view: MessageView, duplicates_dropped: int,
            suppressed: int | None = None) -> str:
    """The submit's answer; ``suppressed`` None (a replay whose first answer was never
    kept): the message's suppressed deliveries now, which a later opt-out may have raised."""
    if suppressed is None:
        suppressed = view.counts[DeliveryStatus.SUPPRESSED]
    return submitted_out(view, service.progress(view), duplicates_dropped,
                         suppressed).model_dump_json()
