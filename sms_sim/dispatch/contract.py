"""The port between the dispatch engine and its stores: ``DispatchStore`` and its row types.

A store holds messages and one delivery per (message, recipient). The engine never sees SQL;
it calls the domain operations below. Every operation that depends on time takes ``now``
(epoch seconds) from the caller: stores never read a clock, which is what lets a
``VirtualClock`` drive a real SQLite file in tests.

The docstrings of ``DispatchStore`` are the specification that
``tests/contract/test_store_contract.py`` encodes for every backend. What callers ask for is
in ``requests`` (``NewMessage``, ``MessageEdit``), what stores refuse in ``errors``, the
statuses and views they answer with in ``views``; opt-outs (``optouts``), delivery receipts
(``dlrs``), API keys (``keys``) and pruning (``pruning``) are parts of the contract kept in
modules of their own.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple, Protocol, cast

from sms_sim.dispatch.dlrs import DlrOutcome, DlrReport, DlrResult, DlrStore
from sms_sim.dispatch.keys import KeyStore
from sms_sim.dispatch.optouts import OptOut, OptOutResult, OptOutStore
from sms_sim.dispatch.pruning import PruneResult, PruneStore
from sms_sim.dispatch.requests import MessageEdit, NewMessage
from sms_sim.dispatch.validation import InvalidRequestError
from sms_sim.dispatch.views import (
    DLR_STATUSES,
    OPEN_DELIVERY_STATUSES,
    SENT_DELIVERY_STATUSES,
    DeliveryStatus,
    DeliveryView,
    MessageOutcome,
    MessageStatus,
    MessageView,
)

__all__ = [
    "DispatchStore",
    "MessageStatus",
    "MessageOutcome",
    "DeliveryStatus",
    "SettleKind",
    "MessageView",
    "DeliveryView",
    "Claim",
    "Settlement",
    "new_claim",
    "new_settlement",
    "SubmitResult",
    "CancelResult",
    "SettleResult",
    "PruneResult",
    "OptOut",
    "OptOutResult",
    "DlrReport",
    "DlrOutcome",
    "DlrResult",
    "InvalidRequestError",
    "OPEN_DELIVERY_STATUSES",
    "SENT_DELIVERY_STATUSES",
    "DLR_STATUSES",
    "AGING_STEP_S",
    "provider_key",
    "effective_priority",
]

# A due message rises one priority class for every this many seconds it has waited since it
# was last served (or since it became due): classes stay strict, but nothing starves.
AGING_STEP_S = 60.0


def effective_priority(priority: int, waiting_since: float, now: float,
                       kept: int | None = None) -> int:
    """The class a due message competes in: its priority plus one per ``AGING_STEP_S``
    waited, and at least ``kept``, the raised class it was last served in.

    A message served in a raised class keeps that class until it has nothing left due
    (``DispatchStore.claim`` then drops it): so a starved message, once aged into the class
    that starved it, shares round-robin with it until it is done, instead of getting one
    share per ``AGING_STEP_S`` and sinking back; and it never climbs above that class while
    it is being served (its wait restarts at each serve).
    """
    waited_s = now - waiting_since
    # A float quotient floored (not ``//``): PostgreSQL's claim states the same arithmetic.
    aged = priority + math.floor(waited_s / AGING_STEP_S) if waited_s > 0 else priority
    return aged if kept is None else max(aged, kept)


class SettleKind(enum.StrEnum):
    """What a worker reports for one leased delivery."""

    SENT = "sent"  # the provider accepted it
    RETRY = "retry"  # the attempt failed; try again at ``next_attempt_at``
    DEAD = "dead"  # the attempt failed and it was the last one
    RELEASE = "release"  # never attempted (shutdown): back to pending, attempt not counted


class Claim(NamedTuple):
    """One delivery leased to a worker. ``attempts`` counts this attempt (1 = first try) and,
    with the owner, fences the completion: a re-lease bumps it, so a stale report cannot match.

    ``lease_losses`` of those attempts ended with the lease running out (the worker died or
    stalled): whether they reached the provider is unknown, so they are counted apart from
    reported failures (``attempts - lease_losses`` is this attempt's number among reported
    ones) and have a budget of their own.

    A NamedTuple, like ``Settlement``: both are made once per delivery on the dispatch hot
    path, where a frozen dataclass's ``__init__`` cost a tenth of the whole loop.
    """

    delivery_id: int
    message_id: int
    recipient: str
    content: str
    attempts: int
    lease_until: float
    lease_losses: int = 0
    message_uid: str = ""
    priority: int = 0
    # The message's validity end (epoch seconds; None: none): a worker must not start a
    # send at or after it (the claim never leases past it, but a lease may outlive it).
    valid_until: float | None = None

    @property
    def idempotency_key(self) -> str:
        """The provider-side dedup key: the same on every attempt of one (message, recipient),
        and different for every other pair, in any database: built on the message's UUID, not
        its id (a recreated database, or two sharing one provider account, reuse ids)."""
        return provider_key(self.message_uid, self.recipient)


def provider_key(message_uid: str, recipient: str) -> str:
    """The provider's idempotency key for one delivery (see ``Claim.idempotency_key``)."""
    return f"{message_uid}:{recipient}"


class Settlement(NamedTuple):
    """A worker's report on one claim. ``next_attempt_at`` is required for RETRY only.
    ``sent_at`` (SENT only): when the provider accepted the send, by the worker's clock;
    None: the settle's ``now``."""

    delivery_id: int
    attempts: int
    kind: SettleKind
    error: str | None = None
    next_attempt_at: float | None = None
    sent_at: float | None = None


# A Claim or Settlement from the tuple of all its fields, in order: the same object as the
# class's call, built in C. Both are made once per delivery on the dispatch hot path, where
# NamedTuple's Python-level ``__new__`` (keyword and default handling) showed in profiles.
new_claim = cast("Callable[[tuple[object, ...]], Claim]", partial(tuple.__new__, Claim))
new_settlement = cast("Callable[[tuple[object, ...]], Settlement]",
                      partial(tuple.__new__, Settlement))


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitResult:
    message_id: int
    created: bool  # False: the idempotency key was known; nothing was created
    receipt: str | None = None  # when not created: the first message's kept receipt
    # Deliveries created ``suppressed`` (their numbers had opted out); 0 when not created.
    suppressed: int = 0
    # When created, the message as the submit's own transaction left it (what ``messages``
    # would have read at its commit), if the store has it at hand: an edge answering with
    # the new message then needs no second trip to the store. None: read it. Not compared:
    # two results are equal when the submits did the same thing, whoever kept a copy.
    view: MessageView | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelResult:
    """What a cancel did: deliveries cancelled now, already sent, and still in flight."""

    message_id: int
    cancelled: int
    already_sent: int
    in_flight: int
    was_status: MessageStatus


@dataclass(frozen=True, slots=True, kw_only=True)
class SettleResult:
    accepted: int
    refused: int  # stale: not leased any more, another owner, or an older attempt


class DispatchStore(KeyStore, PruneStore, OptOutStore, DlrStore, Protocol):
    """Durable state of the dispatch engine, and the API keys that give access to it
    (``keys.KeyStore``); finished messages are deleted by ``pruning.PruneStore.prune``;
    each tenant's opt-outs are ``optouts.OptOutStore``'s and delivery receipts are
    recorded by ``dlrs.DlrStore.record_dlrs``.

    Thread safety: one store object may be shared by several threads (each call is
    serialised); several store objects, threads or processes may open the same database at
    once. Every method is atomic: it commits all of its effects or none of them, and a
    refused call (an exception) changes nothing. Time is always the caller's ``now``.

    Tenants: every message belongs to ``NewMessage.tenant``. The operations that name or
    list messages take ``tenant``: given, a message of another tenant does not exist for
    the call (``NotFoundError`` with the same words as an unknown id, listings and counts
    leave it out); None (the operator's view) sees every tenant.
    """

    def submit(self, message: NewMessage, now: float) -> SubmitResult:
        """Store a message and one ``pending`` delivery per distinct recipient, atomically.

        A recipient on the tenant's opt-out list gets a ``suppressed`` delivery instead
        (``SubmitResult.suppressed`` counts them; a message with nothing else is
        ``completed`` at once). The message keeps its ``segments.segments(content)``
        (``MessageView.encoding``, ``segments``) and its validity end
        (``NewMessage.validity_end`` of its due time).

        Idempotency keys are scoped to the message's tenant: if ``idempotency_key`` is
        already known in that tenant for the same request (same
        ``NewMessage.fingerprint``), nothing is created and the first message's id and kept
        ``receipt`` are returned with ``created=False``; for a different request it raises
        ``KeyReusedError`` naming the key and the first message, and creates nothing. Of
        concurrent submits with one key exactly one creates; while the first is still being
        loaded (see below), a repeat is refused with ``StillSubmittingError``. The due time
        is ``scheduled_at`` or ``now``. Every message gets a fresh ``uid`` (32 hex digits).
        A created result may carry ``view``, equal to what ``messages`` read at the commit.

        Readers and claims see the message whole or not at all. A store may load a large
        recipient list in several short transactions (so workers are not locked out for
        seconds) as long as that stays true and a load cut short leaves nothing claimable.
        """
        ...

    def edit(self, message_id: int, expected_version: int, edit: MessageEdit,
             now: float, *, tenant: str | None = None) -> MessageView:
        """Apply ``edit`` if the message is ``scheduled`` and at ``expected_version``.

        Check and change are one transaction, so an edit racing the start of dispatch
        either lands first or is refused. Raises ``NotFoundError``, ``LockedError`` (not
        ``scheduled``: "locked: dispatching since ..."), ``ConflictError`` (naming both
        versions). On success the version goes up by one; new recipients replace the old
        (suppressed ones as at submit); new content recomputes the segments; a new due time
        with a relative validity (``MessageEdit.valid_for_s``) moves its end with it.
        """
        ...

    def cancel(self, message_id: int, now: float, *,
               tenant: str | None = None) -> CancelResult:
        """Cancel a ``scheduled`` or ``dispatching`` message and its unleased deliveries.

        Sent deliveries (and those receipts moved on: ``SENT_DELIVERY_STATUSES``, counted
        as ``already_sent``) stay; leased ones finish their attempt (a failure then becomes
        ``cancelled``, not retried), and workers ask ``cancelled`` before each send, so once
        this returns only sends already started go out (on a store shared by hosts, also
        those started before a worker elsewhere saw it: see ``cancelled``). Raises
        ``NotFoundError``, or
        ``LockedError`` if the message is already completed or cancelled.
        """
        ...

    def cancelled(self, message_ids: Collection[int]) -> set[int]:
        """Which of ``message_ids`` are cancelled now (unknown ids are not). A read.

        A cancel made through this store object is seen at once. One made through another
        is seen at once on SQLite (its side file is shared memory) and within
        ``CANCEL_RECHECK_S`` (50 ms) on PostgreSQL, which remembers each answer that long
        so that a send does not cost a round trip."""
        ...

    def claim(self, owner: str, limit: int, lease_s: float, now: float) -> list[Claim]:
        """Lease up to ``limit`` due deliveries to ``owner`` until ``now + lease_s``, atomically.

        Due: the message is ``scheduled``/``dispatching`` with ``scheduled_at <= now``, and the
        delivery is ``pending``/``retrying`` with ``next_attempt_at <= now``. Expired leases
        (``lease_until <= now``), and leases granted more than a store's jump allowance
        (``stores.common.clock_jumped_back_after_s``, at least 60 s and more than any wait
        for the store's lock) after ``now`` (so granted before the clock jumped back), are
        first returned to ``retrying`` by a compare-and-set on status and lease
        (``cancelled`` if the message was cancelled, ``suppressed`` if the number opted
        out), counting one more ``lease_losses``. Then every ``pending`` or ``retrying``
        delivery of a message whose ``valid_until <= now`` becomes ``expired`` (a message
        left with nothing open completes), so nothing is leased at or after its validity
        end; and no delivery to an opted-out number is ever ``pending`` or ``retrying``
        (``OptOutStore.add_opt_outs``), so none is leased.
        A live lease is never judged by this claimer's ``lease_s``, nor taken because the
        claimer's ``now`` is stale: workers with different leases, and a claim that waited
        for the lock, never take each other's live claims.

        Fairness, stated on what one claim leased: a message's (or a tenant's) share is the
        number of its deliveries leased; it ran out if none of its deliveries is left due
        afterwards.

        0. Tenants first: the shares of two tenants differ by at most one, unless the
           smaller ran out; across claims, tenants left out go first (never served, then
           least recently served). So one tenant's broadcast never slows another tenant's
           message by more than one share, whatever their priorities; everything below
           holds among one tenant's messages.
        1. Priority classes are strict: a delivery of one class is leased only if every
           message of every higher class (of its tenant) ran out. The class is
           ``effective_priority``: the message's priority, plus one per ``AGING_STEP_S`` it
           has waited since it was last served (or became due), and at least the raised
           class a claim last served it in; after each claim, a message served above its
           priority keeps that class, and one with nothing left due loses it. So a low class
           is delayed, never starved, and once aged in it is served round-robin until it is
           done.
        2. Within a class, no message waits while another is served twice: the shares of
           two messages of one tenant's class differ by at most one, unless the smaller ran
           out.
        3. It leases ``min(limit, due deliveries)``: never more than ``limit``, and fewer
           only when every message ran out.
        4. So a lone due message gets the full ``limit``, or all it has due.
        5. Across claims, those left out go first: never served messages first (oldest
           due first), then the least recently served. So if two claims serve a message,
           every other message of its class with due work at the second was served by
           one of the two or by a claim in between.

        Within a message, due retries are taken before pending deliveries, each by due time
        and id. The returned list holds each message's grants in the order made, by
        delivery id within a grant; each ``Claim`` carries its message's ``uid``,
        priority and ``valid_until``. A message with a claimed delivery becomes
        ``dispatching``. No delivery is leased to two owners at once. Raises
        ``InvalidRequestError`` for a ``now`` or ``lease_s`` that is not finite (or a lease
        <= 0) and a non-integer ``limit``.
        """
        ...

    def settle(self, owner: str, settlements: Sequence[Settlement], now: float) -> SettleResult:
        """Record outcomes; each is a compare-and-set on status ``leased``, owner and attempts,
        accepted only while the lease runs (``lease_until > now``).

        Refused ones (a stale or expired lease: the delivery will be, or has been, claimed
        again and re-sent with the same idempotency key) change nothing and are counted. A
        RETRY or RELEASE of a delivery whose message was cancelled becomes ``cancelled``,
        and of one whose number opted out meanwhile ``suppressed``. A SENT records the
        report's ``sent_at`` as the delivery's (never later than ``now`` nor earlier than
        the lease's start, so a clock step between the send and the settle cannot place it
        outside them; ``now`` when absent) and applies a
        delivery receipt held for it (``DlrStore.record_dlrs``) at once. A message
        with no open delivery left becomes ``completed``. All accepted rows commit together.
        Raises ``InvalidRequestError`` for a ``now`` that is not finite or one attempt of a
        delivery reported twice in one call.
        """
        ...

    def next_due_at(self, now: float) -> float | None:
        """The earliest time at which ``claim`` could return something (may be <= ``now``),
        counting scheduled messages, retries and lease expiries, or change something: the
        validity end of a message with deliveries still to send (the claim then expires
        them); None if nothing is open."""
        ...

    def messages(self, *, message_id: int | None = None, status: MessageStatus | None = None,
                 limit: int = 100, newest_first: bool = False, before: int | None = None,
                 tenant: str | None = None) -> list[MessageView]:
        """Up to ``limit`` messages by id ascending (``newest_first``: descending), with
        delivery counts; optionally one id, one status, one tenant, and only ids below
        ``before`` (a cursor: the last id of the page before). The filters combine; an id no
        store hands out matches nothing. Raises ``InvalidRequestError`` for a negative or
        non-integer ``limit`` or a non-integer cursor."""
        ...

    def count_messages(self, *, status: MessageStatus | None = None,
                       before: int | None = None, tenant: str | None = None) -> int:
        """How many messages ``messages`` would list with these filters and no limit (what
        a listing says is left beyond its page), without building them."""
        ...

    def deliveries(self, *, message_id: int | None = None,
                   status: DeliveryStatus | None = None, limit: int = 1000,
                   recipient: str | None = None, after: int | None = None,
                   tenant: str | None = None) -> list[DeliveryView]:
        """Up to ``limit`` deliveries by id ascending (a message's in recipient order),
        optionally of one message, one status, one recipient (as stored), one tenant's
        messages, and only ids above ``after`` (a cursor: the last id of the page before).
        Raises ``InvalidRequestError`` as ``messages`` does."""
        ...

    def delivery_counts(self, *, tenant: str | None = None) -> dict[DeliveryStatus, int]:
        """Deliveries of every message (of one tenant) counted by status, every status
        present: what a dashboard and ``/metrics`` show without listing them."""
        ...

    def keyed(self, idempotency_key: str, *, tenant: str, now: float) -> int | None:
        """The id of the message submitted under ``idempotency_key`` in ``tenant`` (one
        still being loaded included, but not a load ``submit`` would clear as abandoned at
        ``now``), or None. An edge asks before it applies a rule only a new request must
        meet: a retry of a request whose send time has since passed is a repeat (``submit``
        answers it), not a send time in the past."""
        ...

    def keep_receipt(self, message_id: int, receipt: str, *,
                     tenant: str | None = None) -> bool:
        """Keep what an edge answered when it created the message, for replaying to
        repeats of the request (``SubmitResult.receipt``, ``MessageView.receipt``). The
        first receipt kept stays: returns False, changing nothing, if one was kept already.
        Raises ``NotFoundError``."""
        ...

    def check_writable(self, within_s: float | None = None) -> None:
        """Prove the store can take a write now (SQLite: take and release the write lock);
        raises ``StoreError`` (``StoreBusyError`` while another writer holds it too long)
        if not. Changes nothing. ``within_s``: wait at most that long for a lock held
        elsewhere (None: as long as any write would); a readiness probe must answer
        within its own timeout, whatever a writer holds."""
        ...

    def requeue_dead(self, message_id: int | None, now: float, *,
                     delivery_ids: Collection[int] | None = None,
                     tenant: str | None = None) -> int:
        """Dead deliveries (of one message, or all; only those in ``delivery_ids`` when
        given; of one tenant's messages when given) back to ``pending`` with attempts and
        lease losses 0, due ``now``, keeping ``last_error``; their completed messages return
        to ``dispatching``. Deliveries of cancelled messages stay dead, those to a number
        that opted out become ``suppressed`` (not counted), and ids that are not dead
        deliveries are passed over. Returns how many were requeued; raises
        ``NotFoundError`` for an unknown ``message_id``."""
        ...

    def close(self) -> None:
        """Release the store's resources; further calls raise ``StoreError``."""
        ...
