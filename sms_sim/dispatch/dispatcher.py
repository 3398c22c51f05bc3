"""Claim, send, retry, settle: the one dispatch loop, over any ``DispatchStore``.

A ``Dispatcher`` is one worker's identity: a fresh UUID lease token per start (never a host
name or pid, which are reused and hide orphans). It reads time only through the injected
``Clock`` and draws retry jitter from the injected ``random.Random``, with the same
``RetryPolicy`` and ``policy.retry_delay_after`` the simulator uses (``failures``: what each
class of failed send leads to, and the throttle gate).

``run`` is the loop every worker runs: claim as much as the ``SendPool`` has room for, hand
the claims over as ``SendJob``s, settle what the pool finished. The pool decides where sends
happen: ``InlinePool`` sends on the dispatcher's own thread (tests, benchmarks), the worker's
pool on the simulator's sender threads. Either way each send goes through ``transmit``, the
one place that checks, just before the provider, that the route is not throttled, the lease
still runs and the message was not cancelled. A failing store is waited out (``patience``), a
damaged one is not.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter

from sms_sim.clock import Clock
from sms_sim.config import RetryPolicy
from sms_sim.dispatch.contract import (
    Claim,
    DispatchStore,
    SettleKind,
    Settlement,
    new_settlement,
)
from sms_sim.dispatch.errors import StoreDamagedError, StoreError
from sms_sim.dispatch.failures import (
    CANCELLED_UNSENT,
    LEASE_EXPIRED,
    NOT_SENT,
    THROTTLED_UNSENT,
    UNCHECKED,
    VALIDITY_ENDED,
    SendFailure,
    ThrottleGate,
    settlement_for,
    throttle_pause_s,
)
from sms_sim.dispatch.jobs import Completion, InlinePool, SendJob, SendPool
from sms_sim.dispatch.patience import StorePatience
from sms_sim.dispatch.transport import Transport, TransportError
from sms_sim.dispatch.wake import WakeChannel
from sms_sim.errors import ConfigError, SmsSimError
from sms_sim.model import ErrorClass

__all__ = ["DispatchConfig", "DispatchStats", "Dispatcher", "DEFAULT_RETRY",
           "LEASE_LOSSES_EXHAUSTED", "LEASE_EXPIRED", "NOT_SENT", "SendJob", "SendPool",
           "InlinePool", "Completion"]

log = logging.getLogger(__name__)

MAX_BATCH = 100_000
MAX_LEASE_S = 86_400.0  # a day: longer would park a crashed worker's claims for longer
MAX_IDLE_RECHECK_S = 86_400.0
DEFAULT_RETRY = RetryPolicy(max_attempts=5, base_s=1.0, factor=2.0, cap_s=300.0)
LEASE_LOSSES_EXHAUSTED = "lease ran out too many times (each time the worker died or stalled)"
# The outcomes of sends that never happened, made once (``failures`` has their reasons).
_LEASE_EXPIRED = SendFailure(LEASE_EXPIRED)
_CANCELLED_UNSENT = SendFailure(CANCELLED_UNSENT)
_UNCHECKED = SendFailure(UNCHECKED)
_THROTTLED_UNSENT = SendFailure(THROTTLED_UNSENT)
_VALIDITY_ENDED = SendFailure(VALIDITY_ENDED)
_new_tuple = tuple.__new__
_SENT = SettleKind.SENT


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatchConfig:
    """How a worker claims and retries.

    ``batch_size``: deliveries per claim transaction. ``lease_s``: how long a claim is
    exclusive; it must exceed the time to send a batch, or other workers re-send (which the
    provider's keys absorb, but which wastes work). ``idle_recheck_s``: the longest an idle
    worker waits before looking again, because another process may have submitted; with
    work scheduled it wakes exactly at the next due time instead; a store that pushes
    wake-ups (``dispatch.wake``) makes a long one cheap. ``fallback_poll_s``: the cap instead
    while such a store's wake-up channel is down (lost, or not connected yet), so a lost
    listening connection costs latency, never work. ``fencing=False``
    disables the safeguards that prevent duplicates (one provider key per attempt, sending
    on an expired lease): only the crash test's negative control uses it.
    ``store_outage_s``: how long a store may fail every call (other than "busy", which is
    waited out for ever) before the worker gives up; a damaged store stops it at once.

    ``retry.max_attempts`` counts attempts whose outcome was reported. An attempt whose lease
    ran out (its worker died or stalled) is not one of them: it may never have reached the
    provider, and sending again is safe under the idempotency key, so one crash cannot turn
    a never-sent delivery ``dead``. Those have their own budget, ``max_lease_losses``, so a
    delivery that kills every worker that takes it still ends ``dead`` instead of looping.
    """

    batch_size: int = 100
    lease_s: float = 30.0
    idle_recheck_s: float = 0.05
    fallback_poll_s: float = 1.0
    retry: RetryPolicy = DEFAULT_RETRY
    max_lease_losses: int = 5
    fencing: bool = True
    store_outage_s: float = 300.0

    def __post_init__(self) -> None:
        for name, low, high in (("batch_size", 1, MAX_BATCH), ("max_lease_losses", 0, 1000)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"{name} must be an integer from {low} to {high:,} "
                                  f"(got {value!r})")
        for name, most_s in (("lease_s", MAX_LEASE_S), ("idle_recheck_s", MAX_IDLE_RECHECK_S),
                             ("fallback_poll_s", MAX_IDLE_RECHECK_S),
                             ("store_outage_s", MAX_IDLE_RECHECK_S)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not 0 < value <= most_s:
                raise ConfigError(f"{name.removesuffix('_s')} must be > 0 and at most "
                                  f"{most_s:,.0f} seconds (got {value!r})")


@dataclass(slots=True)
class DispatchStats:
    """Counts kept by one dispatcher; written by whichever thread settles (one at a time)."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    dead: int = 0
    released: int = 0
    refused: int = 0  # stale completions the store refused (lease lost)
    skipped_expired: int = 0  # claims not sent because their lease had run out
    exhausted: int = 0  # claims made dead unsent: out of lease losses (also counted dead)
    withdrawn: int = 0  # given back unsent: the message was cancelled (among ``released``)
    claims: int = 0  # claim transactions
    store_errors: int = 0  # store calls that failed and were tried again


class Dispatcher:
    """One worker's claim/settle logic. Not itself thread-safe: one thread settles at a time."""

    def __init__(
        self,
        store: DispatchStore,
        *,
        clock: Clock,
        rng: random.Random,
        config: DispatchConfig | None = None,
        owner: str | None = None,
        channel: WakeChannel | None = None,
    ) -> None:
        self.store = store
        # The store's wake-ups, listened to by someone else (the worker's listener thread):
        # consulted only for whether they are arriving, which decides the idle cap.
        self._channel = channel
        self.clock = clock
        self.config = config or DispatchConfig()
        self.owner = owner or f"worker-{uuid.uuid4()}"
        self.stats = DispatchStats()
        self._rng = rng
        # Completions the store has not taken yet because settling raised (a store error):
        # kept for the next try, at the latest the worker's at shutdown, never dropped.
        self._unsettled: list[Completion] = []
        # The last store error a send's cancel check met (on a sender thread); ``step``
        # raises it after settling, so the loop's patience (backoff, outage limit, a damaged
        # store's stop) applies instead of claiming and giving back in a loop.
        self._check_error: StoreError | None = None
        # Closed by a throttled answer on any sender: nothing is claimed or sent meanwhile.
        self.gate = ThrottleGate(clock)

    def claim(self, limit: int | None = None) -> list[Claim]:
        """Lease up to ``limit`` (default ``batch_size``) due deliveries, now.

        A delivery whose lease has run out more than ``max_lease_losses`` times (every worker
        that took it died or stalled) is made ``dead`` here instead of being sent again.
        """
        size = self.config.batch_size if limit is None else limit
        claims = self.store.claim(self.owner, size, self.config.lease_s, self.clock.now())
        self.stats.claims += 1
        self.stats.claimed += len(claims)
        most = self.config.max_lease_losses
        exhausted = [c for c in claims if c.lease_losses > most]
        if exhausted:
            self.stats.exhausted += len(exhausted)
            claims = [c for c in claims if c.lease_losses <= most]
            try:
                self.settle([Settlement(delivery_id=c.delivery_id, attempts=c.attempts,
                                        kind=SettleKind.DEAD, error=LEASE_LOSSES_EXHAUSTED)
                             for c in exhausted])
            except SmsSimError:
                # Give the rest back unsent rather than let their leases run out, which
                # would charge them a lease loss for an attempt never made.
                with contextlib.suppress(SmsSimError):
                    self.release_all(claims)
                raise
        return claims

    def provider_key(self, claim: Claim) -> str:
        """The key sent to the provider: per (message, recipient), or per attempt if unfenced."""
        if self.config.fencing:
            return claim.idempotency_key
        return f"{claim.idempotency_key}#{claim.attempts}"

    def may_send(self, claim: Claim) -> bool:
        """False once the lease has run out: another worker may own the delivery by now.

        The only lease check before a send; thread-safe (it reads the clock and the claim).
        """
        return not self.config.fencing or self.clock.now() < claim.lease_until

    def transmitter(self, transport: Transport) -> Callable[[SendJob], SendFailure | None]:
        """The send step for ``transport``: check the throttle gate, the lease and the
        message's validity end (``Claim.valid_until``: never sent late), ask the store whether
        the message was cancelled (``DispatchStore.cancelled``: an answer as of now, so once a
        cancel has returned no later send goes out), send, return None or the failure; a
        throttled answer closes the gate (``note_failure``).

        Runs on whichever thread sends (the dispatcher's own, or a sender thread), so it
        touches no counters: what happened is read from the returned failure at settle time.
        """
        may_send, send, cancelled = self.may_send, transport.send, self.store.cancelled
        gate_open, note, now = self.gate.is_open, self.note_failure, self.clock.now

        def transmit(job: SendJob) -> SendFailure | None:
            if not gate_open():
                return _THROTTLED_UNSENT
            if not may_send(job.claim):
                return _LEASE_EXPIRED
            valid_until = job.claim.valid_until
            if valid_until is not None and now() >= valid_until:
                return _VALIDITY_ENDED
            try:
                if cancelled((job.claim.message_id,)):
                    return _CANCELLED_UNSENT
            except StoreError as exc:
                self._check_error = exc
                return _UNCHECKED
            try:
                send(job.key, job.recipient, job.content)
            except TransportError as exc:
                return note(SendFailure(str(exc), exc.error_class, exc.retry_after_s))
            return None

        return transmit

    def note_failure(self, failure: SendFailure) -> SendFailure:
        """Close the throttle gate for a throttled failure (``failures.throttle_pause_s``);
        returns ``failure``. Thread-safe: senders call it as answers arrive."""
        if failure.error_class is ErrorClass.THROTTLED:
            pause_s = throttle_pause_s(failure, self.config.retry)
            self.gate.close_for(pause_s)
            log.info("%s: provider throttled; no new sends for %.3gs", self.owner, pause_s)
        return failure

    def outcome(self, claim: Claim, failure: SendFailure | None,
                sent_at: float | None = None) -> Settlement:
        """What the store records for this claim's send (``failures.settlement_for``);
        ``sent_at``: when the provider accepted it (None: the settle's time)."""
        if failure is None:  # once per delivery sent: no clock read, no further call
            return new_settlement((claim.delivery_id, claim.attempts, _SENT, None, None,
                                   sent_at))
        return settlement_for(claim, failure, policy=self.config.retry, rng=self._rng,
                              now=self.clock.now())

    def settle(self, settlements: Sequence[Settlement]) -> int:
        """Record outcomes in the store; returns how many were accepted (the rest are stale)."""
        if not settlements:
            return 0
        result = self.store.settle(self.owner, settlements, self.clock.now())
        stats = self.stats
        stats.refused += result.refused
        if result.refused:
            log.warning("%s: %d stale completions refused (lease lost)", self.owner,
                        result.refused)
        kinds = Counter(map(attrgetter("kind"), settlements))
        stats.sent += kinds[SettleKind.SENT]
        stats.retried += kinds[SettleKind.RETRY]
        stats.dead += kinds[SettleKind.DEAD]
        stats.released += kinds[SettleKind.RELEASE]
        return result.accepted

    def release_all(self, claims: Sequence[Claim]) -> int:
        """Give never-attempted claims back (attempt not counted); returns how many."""
        return self.settle([
            Settlement(delivery_id=c.delivery_id, attempts=c.attempts, kind=SettleKind.RELEASE)
            for c in claims
        ])

    def wait_s(self) -> float:
        """How long to sleep before the next claim could find work: until the next due time,
        but never longer than ``idle_recheck_s`` (other processes may submit meanwhile), nor
        than ``fallback_poll_s`` while a wake channel given to this dispatcher is down.

        The due time is read now: a lease granted later (by another worker, which may then
        die) is not in it, so while idle this worker rescues such a lease within one
        ``idle_recheck_s`` of its end; wake-ups are sent on submits, edits, cancels and
        requeues (and a stopping worker's releases) only, never per claim."""
        now = self.clock.now()
        due_at = self.store.next_due_at(now)
        cap_s = self.config.idle_recheck_s
        if self._channel is not None and not self._channel.is_listening():
            cap_s = min(cap_s, self.config.fallback_poll_s)
        return cap_s if due_at is None else max(0.0, min(cap_s, due_at - now))

    def settle_completed(self, completed: Sequence[Completion]) -> int:
        """Settle finished sends; a job skipped on an expired lease is not reported (the
        store would refuse it: the delivery is, or will be, claimed again). Returns how
        many settlements the store accepted.

        If the store raises, these completions (and any left from an earlier failure) are
        kept and go out with the next call: a store error delays a report, never loses it.
        """
        self._unsettled.extend(completed)
        if not self._unsettled:
            return 0
        settlements: list[Settlement] = []
        skipped = withdrawn = 0
        for job, failure, sent_at in self._unsettled:
            reason = None if failure is None else failure.reason
            if reason == LEASE_EXPIRED:
                skipped += 1
                continue
            withdrawn += reason == CANCELLED_UNSENT
            settlements.append(self.outcome(job.claim, failure, sent_at))
        accepted = self.settle(settlements)
        self._unsettled = []
        self.stats.skipped_expired += skipped
        self.stats.withdrawn += withdrawn
        return accepted

    def step(self, pool: SendPool) -> bool:
        """Claim what ``pool`` has room for (at most a batch; nothing while the throttle
        gate is closed), hand it over, settle what the pool has finished. True when the
        claim came back full, so more may be due now."""
        room = min(self.config.batch_size, pool.room()) if self.gate.is_open() else 0
        claims = self.claim(room) if room > 0 else []
        if claims:
            # tuple.__new__ rather than SendJob(...), and no call per claim: NamedTuple's
            # Python-level __new__ was a measurable part of the per-delivery cost.
            new, key = _new_tuple, self.provider_key
            pool.submit([new(SendJob, (c.recipient, c.content, key(c), c)) for c in claims])
        self.settle_completed(pool.completed())
        error, self._check_error = self._check_error, None
        if error is not None:
            raise error
        return room > 0 and len(claims) == room

    def send_batch(self, transport: Transport) -> int:
        """Claim one batch, send each on this thread, settle the batch; returns how many
        deliveries were claimed (0: nothing was due)."""
        claimed = self.stats.claimed
        self.step(InlinePool(self.transmitter(transport), self.clock.now))
        return self.stats.claimed - claimed

    def run(self, transport: Transport, stop: threading.Event, *,
            pool: SendPool | None = None, wake: threading.Event | None = None,
            until_idle: bool = False) -> None:
        """The dispatch loop: ``step`` until ``stop``, sleeping through ``Clock.sleep`` to
        the next due time when nothing is due.

        ``pool`` defaults to an ``InlinePool`` over ``transport``. ``wake`` (set it when
        the pool finishes sends, and on stop) cuts a sleep short; by default only ``stop``
        does. ``until_idle``: return once the pool is empty and the store has nothing open.
        Returns with sends possibly still in the pool: settling or giving them back is the
        caller's, after the pool has stopped.
        """
        if pool is None:
            pool = InlinePool(self.transmitter(transport), self.clock.now)
        alarm = stop if wake is None else wake
        patience = StorePatience(self.clock, self.config.store_outage_s, self.owner)
        while True:
            if alarm is not stop:
                alarm.clear()  # before looking at stop: a stop set meanwhile is never missed
            if stop.is_set():
                return
            try:
                if self.step(pool):
                    patience.answered()
                    continue
                if until_idle and not pool.in_flight() \
                        and self.store.next_due_at(self.clock.now()) is None:
                    return
                # A full pool makes room only as sends finish, and ``alarm`` says when; the
                # store's next due time says nothing then (work is due, with nowhere to go),
                # and waiting on it would spin on the store. A throttled route opens at a
                # known time; finished sends still cut the wait short to be settled.
                if not self.gate.is_open():
                    delay_s = self.gate.remaining_s()
                elif pool.room() > 0:
                    delay_s = self.wait_s()
                else:
                    delay_s = self.config.idle_recheck_s
                patience.answered()
            except StoreDamagedError:
                raise
            except StoreError as exc:
                self.stats.store_errors += 1
                delay_s = patience.failed(exc)
            self.clock.sleep(delay_s, alarm)
