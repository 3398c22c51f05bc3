"""Dispatcher on a fake clock over a real SQLite file: scheduling, lease expiry, backoff.

No sleeps: ``VirtualClock.sleep`` advances time instantly, so ``Dispatcher.run`` with
``until_idle`` plays a whole dispatch in simulated time and the asserts are exact.
"""

from __future__ import annotations

import copy
import queue
import random
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import pytest

from sms_sim.clock import VirtualClock
from sms_sim.config import Jitter, RetryPolicy, SenderConfig
from sms_sim.dispatch.contract import (
    Claim,
    DeliveryStatus,
    DispatchStore,
    MessageStatus,
    SettleKind,
    SettleResult,
    Settlement,
)
from sms_sim.dispatch.errors import StoreError
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.dispatcher import Completion, DispatchConfig, Dispatcher, SendJob
from sms_sim.dispatch.failures import (
    MAX_THROTTLE_PAUSE_S,
    SendFailure,
    ThrottleGate,
    simulated_failure,
    throttle_pause_s,
)
from sms_sim.dispatch.stores import SqliteStore
from sms_sim.dispatch.transport import MemoryProvider, TransportError
from sms_sim.errors import ConfigError
from sms_sim.model import SIMULATED_FAILURE, ErrorClass
from sms_sim.policy import retry_delay_after, retry_delay_s
from tests.conftest import T0, RecordingProvider, phones


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "d.db")


def test_dispatch_starts_exactly_at_scheduled_time_and_wakes_without_polling(
        store: SqliteStore) -> None:
    clock = VirtualClock(T0)
    store.submit(NewMessage.validated(content="later", recipients=phones(3),
                                      scheduled_at=T0 + 3600), T0)
    provider = RecordingProvider(clock)
    config = DispatchConfig(idle_recheck_s=3600 * 2)
    dispatcher = Dispatcher(store, clock=clock, rng=random.Random(1), config=config)
    dispatcher.run(provider, threading.Event(), until_idle=True)
    assert provider.sent_at == [T0 + 3600] * 3
    # One empty claim before the wait and one that got all three; it came back short of a
    # batch, so nothing more was due and no third, empty claim is made.
    assert dispatcher.stats.claims == 2
    assert store.messages()[0].status is MessageStatus.COMPLETED


def test_wait_is_capped_by_idle_recheck_when_nothing_is_scheduled(store: SqliteStore) -> None:
    clock = VirtualClock(T0)
    dispatcher = Dispatcher(store, clock=clock, rng=random.Random(1),
                            config=DispatchConfig(idle_recheck_s=0.25))
    assert dispatcher.wait_s() == 0.25
    store.submit(NewMessage.validated(content="x", recipients=phones(1),
                                      scheduled_at=T0 + 0.1), T0)
    assert dispatcher.wait_s() == pytest.approx(0.1)


class _Channel:
    """A wake channel whose state the test sets (``dispatch.wake.WakeChannel``)."""

    def __init__(self) -> None:
        self.listening = False

    def run(self, wake: threading.Event) -> None:
        raise AssertionError("the dispatcher never listens itself")

    def is_listening(self) -> bool:
        return self.listening

    def close(self) -> None:
        pass


def test_while_a_wake_channel_is_down_the_idle_wait_is_capped_by_the_fallback_poll(
        store: SqliteStore) -> None:
    clock = VirtualClock(T0)
    channel = _Channel()
    dispatcher = Dispatcher(store, clock=clock, rng=random.Random(1), channel=channel,
                            config=DispatchConfig(idle_recheck_s=30, fallback_poll_s=0.5))
    assert dispatcher.wait_s() == 0.5  # not listening (yet): poll
    channel.listening = True
    assert dispatcher.wait_s() == 30  # listening: wake-ups come; the long cap is safe
    store.submit(NewMessage.validated(content="x", recipients=phones(1),
                                      scheduled_at=T0 + 0.1), T0)
    assert dispatcher.wait_s() == pytest.approx(0.1)  # the next due time bounds either
    channel.listening = False
    assert dispatcher.wait_s() == pytest.approx(0.1)


def test_failed_sends_back_off_with_the_policy_and_end_dead(store: SqliteStore) -> None:
    clock = VirtualClock(T0)
    policy = RetryPolicy(max_attempts=3, base_s=2.0, factor=3.0, cap_s=100.0, jitter=Jitter.FULL)
    store.submit(NewMessage.validated(content="x", recipients=phones(1)), T0)
    provider = RecordingProvider(clock, fail_first=10)
    dispatcher = Dispatcher(store, clock=clock, rng=random.Random(7),
                            config=DispatchConfig(retry=policy, idle_recheck_s=1000))
    dispatcher.run(provider, threading.Event(), until_idle=True)
    expected = random.Random(7)
    first_retry_at = T0 + retry_delay_s(policy, 1, expected)
    second_retry_at = first_retry_at + retry_delay_s(policy, 2, expected)
    assert provider.sent_at == [T0, first_retry_at, second_retry_at]
    (dead,) = store.deliveries(status=DeliveryStatus.DEAD)
    assert dead.attempts == 3 and dead.last_error == "provider busy"
    assert (dispatcher.stats.retried, dispatcher.stats.dead) == (2, 1)


def test_a_retry_that_succeeds_uses_the_same_idempotency_key(store: SqliteStore) -> None:
    clock = VirtualClock(T0)
    result = store.submit(NewMessage.validated(content="x", recipients=["555-123-4567"]), T0)
    provider = RecordingProvider(clock, fail_first=2)
    dispatcher = Dispatcher(store, clock=clock, rng=random.Random(3),
                            config=DispatchConfig(retry=RetryPolicy(max_attempts=5)))
    dispatcher.run(provider, threading.Event(), until_idle=True)
    (view,) = store.messages(message_id=result.message_id)
    assert provider.keys == [f"{view.uid}:555-123-4567"] * 3
    assert provider.summary().delivered == 1


def test_an_expired_lease_is_rescued_and_the_stale_completion_refused(
        store: SqliteStore) -> None:
    clock = VirtualClock(T0)
    store.submit(NewMessage.validated(content="x", recipients=phones(2)), T0)
    config = DispatchConfig(lease_s=10.0)
    slow = Dispatcher(store, clock=clock, rng=random.Random(1), config=config)
    fast = Dispatcher(store, clock=clock, rng=random.Random(2), config=config)
    assert slow.owner != fast.owner and slow.owner.startswith("worker-")
    stale = slow.claim()
    assert [c.lease_until for c in stale] == [T0 + 10.0] * 2
    clock.advance(10.0)
    assert not slow.may_send(stale[0])  # the slow worker notices and does not send
    rescued = fast.claim()
    assert sorted(c.delivery_id for c in rescued) == sorted(c.delivery_id for c in stale)
    assert fast.settle([fast.outcome(c, None) for c in rescued]) == 2
    assert slow.settle([slow.outcome(c, None) for c in stale]) == 0
    assert slow.stats.refused == 2
    assert {d.status for d in store.deliveries()} == {DeliveryStatus.SENT}


def test_without_fencing_the_key_changes_per_attempt_and_expired_leases_still_send(
        store: SqliteStore) -> None:
    clock = VirtualClock(T0)
    store.submit(NewMessage.validated(content="x", recipients=phones(1)), T0)
    unsafe = Dispatcher(store, clock=clock, rng=random.Random(1),
                        config=DispatchConfig(fencing=False, lease_s=1.0))
    (claim,) = unsafe.claim()
    clock.advance(5.0)
    assert unsafe.may_send(claim)
    assert unsafe.provider_key(claim).endswith("#1")


def test_release_all_gives_claims_back_unattempted(store: SqliteStore) -> None:
    clock = VirtualClock(T0)
    store.submit(NewMessage.validated(content="x", recipients=phones(3)), T0)
    dispatcher = Dispatcher(store, clock=clock, rng=random.Random(1))
    claims = dispatcher.claim()
    assert dispatcher.release_all(claims) == 3
    assert {(d.status, d.attempts) for d in store.deliveries()} == {(DeliveryStatus.PENDING, 0)}
    assert dispatcher.stats.released == 3


def test_outcome_kinds_follow_attempts() -> None:
    from sms_sim.dispatch.contract import Claim
    from sms_sim.dispatch.stores import MemoryStore

    clock = VirtualClock(T0)
    dispatcher = Dispatcher(MemoryStore(), clock=clock, rng=random.Random(1),
                            config=DispatchConfig(retry=RetryPolicy(max_attempts=2)))
    claim = Claim(delivery_id=1, message_id=1, recipient="555-000-0000", content="x",
                  attempts=1, lease_until=T0 + 30)
    assert dispatcher.outcome(claim, None).kind is SettleKind.SENT
    assert dispatcher.outcome(claim, SendFailure("boom")).kind is SettleKind.RETRY
    last = Claim(delivery_id=1, message_id=1, recipient="555-000-0000", content="x",
                 attempts=2, lease_until=T0 + 30)
    assert dispatcher.outcome(last, SendFailure("boom")).kind is SettleKind.DEAD


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("batch_size", 0, "batch_size must be an integer from 1 to 100,000 (got 0)"),
    ("batch_size", True, "batch_size must be an integer"),
    ("max_lease_losses", -1, "max_lease_losses must be an integer from 0 to 1,000"),
    ("lease_s", 0.0, "lease must be > 0 and at most 86,400 seconds"),
    ("lease_s", 1e308, "lease must be > 0 and at most 86,400 seconds"),
    ("idle_recheck_s", float("nan"), "idle_recheck must be > 0 and at most 86,400 seconds"),
    ("fallback_poll_s", 0, "fallback_poll must be > 0 and at most 86,400 seconds"),
])
def test_dispatch_config_names_the_bad_field(field: str, value: float, fragment: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        DispatchConfig(**{field: value})  # type: ignore[arg-type]


def test_lost_leases_do_not_use_up_attempts_but_have_a_budget_of_their_own(
        store: SqliteStore) -> None:
    """Workers that die holding a claim never reported a send, so with max_attempts=1 the
    delivery is still sent by the next worker (the key makes a resend safe); but a delivery
    whose lease runs out more than max_lease_losses times ends dead instead of looping."""
    clock = VirtualClock(T0)
    store.submit(NewMessage.validated(content="x", recipients=phones(2)), T0)
    config = DispatchConfig(batch_size=1, lease_s=10.0, retry=RetryPolicy(max_attempts=1),
                            max_lease_losses=2)
    for _ in range(2):  # two workers die holding the first delivery
        crashed = Dispatcher(store, clock=clock, config=config, rng=random.Random(1))
        assert len(crashed.claim()) == 1
        clock.advance(11.0)
    survivor = Dispatcher(store, clock=clock, config=config, rng=random.Random(1))
    (claim,) = survivor.claim()
    assert (claim.attempts, claim.lease_losses) == (3, 2)
    assert survivor.settle([survivor.outcome(claim, None)]) == 1
    assert store.deliveries()[0].status is DeliveryStatus.SENT
    assert store.deliveries()[0].lease_losses == 2

    for _ in range(3):  # the second delivery loses its lease three times: one too many
        crashed = Dispatcher(store, clock=clock, config=config, rng=random.Random(1))
        assert len(crashed.claim()) == 1
        clock.advance(11.0)
    assert survivor.claim() == []
    delivery = store.deliveries()[1]
    assert (delivery.status, delivery.lease_losses) == (DeliveryStatus.DEAD, 3)
    assert delivery.last_error is not None and "too many times" in delivery.last_error
    # claimed counts the exhausted claim too: it ends dead, never sent
    assert (survivor.stats.dead, survivor.stats.claimed, survivor.stats.sent) == (1, 2, 1)
    assert survivor.stats.exhausted == 1


def test_a_failure_after_a_lost_lease_still_gets_every_reported_attempt(
        store: SqliteStore) -> None:
    clock = VirtualClock(T0)
    store.submit(NewMessage.validated(content="x", recipients=phones(1)), T0)
    dispatcher = Dispatcher(store, clock=clock, rng=random.Random(1),
                            config=DispatchConfig(retry=RetryPolicy(max_attempts=2)))
    lost = Claim(1, 1, "555-000-0000", "x", attempts=2, lease_until=T0 + 30, lease_losses=1)
    boom = SendFailure("boom")
    assert dispatcher.outcome(lost, boom).kind is SettleKind.RETRY  # reported attempt 1
    second = lost._replace(attempts=3)
    assert dispatcher.outcome(second, boom).kind is SettleKind.DEAD  # reported attempt 2


@pytest.mark.parametrize("fencing", [True, False])
def test_a_worker_that_dies_between_send_and_settle_is_absorbed_by_the_key(
        store: SqliteStore, fencing: bool) -> None:
    """The crash the idempotency key exists for, made exact: the provider accepted the send,
    the worker died before recording it, the lease ran out, and another worker sent again.
    With keys per (message, recipient) the provider absorbs the repeat; with a key per
    attempt (the negative control) the phone gets it twice."""
    clock = VirtualClock(T0)
    store.submit(NewMessage.validated(content="x", recipients=phones(3)), T0)
    provider = MemoryProvider()
    config = DispatchConfig(lease_s=10.0, fencing=fencing)
    doomed = Dispatcher(store, clock=clock, rng=random.Random(1), config=config)
    for claim in doomed.claim():
        provider.send(doomed.provider_key(claim), claim.recipient, claim.content)
    # ... and it dies here, before settling.
    clock.advance(10.0)
    survivor = Dispatcher(store, clock=clock, rng=random.Random(2), config=config)
    survivor.run(provider, threading.Event(), until_idle=True)
    assert {d.status for d in store.deliveries()} == {DeliveryStatus.SENT}
    summary = provider.summary()
    assert summary.attempts == 6 and summary.recipients_delivered == 3
    if fencing:
        assert (summary.absorbed, summary.effective_duplicates) == (3, 0)
    else:
        assert (summary.absorbed, summary.effective_duplicates) == (0, 3)


class _FullPool:
    """A pool with no room (its senders are all busy) that finishes nothing; it sets
    ``stop`` once the dispatcher has looked at it ``looks`` times."""

    def __init__(self, stop: threading.Event, looks: int) -> None:
        self._stop = stop
        self._looks = looks

    def room(self) -> int:
        return 0

    def submit(self, jobs: Sequence[SendJob]) -> None:
        raise AssertionError("a full pool is given nothing")

    def completed(self) -> list[Completion]:
        self._looks -= 1
        if self._looks <= 0:
            self._stop.set()
        return []

    def in_flight(self) -> int:
        return 1


def test_a_full_pool_is_waited_on_not_spun_on(store: SqliteStore) -> None:
    """Work is due but the pool has no room: the loop waits (here the idle recheck, cut
    short in real use by the pool's wake-up) instead of asking the store again at once.
    The old loop slept until the next due time, which is now: 0 s, a spin."""
    clock = VirtualClock(T0)
    store.submit(NewMessage.validated(content="due", recipients=phones(5)), T0)
    config = DispatchConfig(idle_recheck_s=0.25)
    dispatcher = Dispatcher(store, clock=clock, rng=random.Random(1), config=config)
    stop = threading.Event()
    dispatcher.run(MemoryProvider(), stop, pool=_FullPool(stop, looks=4),
                   wake=threading.Event())
    assert clock.now() - T0 == pytest.approx(4 * 0.25)  # a wait after each of four looks
    assert dispatcher.stats.claims == 0


class _StopOnClear(threading.Event):
    """A wake-up Event through which a stop arrives exactly between the loop's look at
    ``stop`` and its clearing of the wake-up: the lost wake-up the order must rule out."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__()
        self._stop = stop

    def clear(self) -> None:
        if not self._stop.is_set():  # the stopping thread sets stop, then the wake-up...
            self._stop.set()
            self.set()
        super().clear()  # ...just before the loop clears it


def test_a_stop_arriving_while_the_wake_up_is_cleared_is_not_missed(
        store: SqliteStore) -> None:
    clock = VirtualClock(T0)
    store.submit(NewMessage.validated(content="later", recipients=phones(1),
                                      scheduled_at=T0 + 3600), T0)
    config = DispatchConfig(idle_recheck_s=3600.0)
    dispatcher = Dispatcher(store, clock=clock, rng=random.Random(1), config=config)
    stop = threading.Event()
    dispatcher.run(MemoryProvider(), stop, wake=_StopOnClear(stop))
    assert clock.now() == T0  # returned at once; the old order slept an hour first


class _FailingOnce:
    """A store whose next ``settle`` raises (the database refused), then behaves."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.fail_next_settle = False

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    def settle(self, owner: str, settlements: Sequence[Settlement],
               now: float) -> SettleResult:
        if self.fail_next_settle:
            self.fail_next_settle = False
            raise StoreError("disk I/O error")
        return self._store.settle(owner, settlements, now)


def test_a_store_error_while_settling_delays_the_reports_and_loses_none(
        store: SqliteStore) -> None:
    clock = VirtualClock(T0)
    store.submit(NewMessage.validated(content="x", recipients=phones(3)), T0)
    flaky = _FailingOnce(store)
    dispatcher = Dispatcher(cast(DispatchStore, flaky), clock=clock, rng=random.Random(1))
    jobs = [SendJob(c.recipient, c.content, dispatcher.provider_key(c), c)
            for c in dispatcher.claim()]
    flaky.fail_next_settle = True
    with pytest.raises(StoreError):
        dispatcher.settle_completed([(job, None, T0) for job in jobs])
    assert {d.status for d in store.deliveries()} == {DeliveryStatus.LEASED}
    assert dispatcher.settle_completed([]) == 3  # the next call reports them
    assert {d.status for d in store.deliveries()} == {DeliveryStatus.SENT}
    assert dispatcher.stats.sent == 3


def test_two_databases_sharing_one_provider_both_deliver(tmp_path: Path) -> None:
    """Issue 11, item 2: the provider key was "message_id:recipient", so message 1 of a
    recreated database was absorbed as a repeat of the old database's message 1."""
    clock = VirtualClock(T0)
    provider = RecordingProvider(clock)
    for name, text in (("monday.db", "office closed"), ("tuesday.db", "EVACUATE NOW")):
        store = SqliteStore(tmp_path / name)
        result = store.submit(NewMessage.validated(content=text, recipients=["555-123-4567"]),
                              T0)
        assert result.message_id == 1
        Dispatcher(store, clock=clock, rng=random.Random(1)).run(
            provider, threading.Event(), until_idle=True)
        store.close()
    assert provider.summary().delivered == 2
    assert len(set(provider.keys)) == 2


class _ClassifyingProvider(MemoryProvider):
    """Fails the sends to the numbers in ``script`` with the errors listed for each, in
    order (then accepts them); records when each number was tried."""

    def __init__(self, clock: VirtualClock, script: dict[str, list[TransportError]]) -> None:
        super().__init__()
        self._clock = clock
        self._script = script
        self.tried: list[tuple[float, str]] = []

    def send(self, key: str, recipient: str, content: str) -> None:
        self.tried.append((self._clock.now(), recipient))
        errors = self._script.get(recipient)
        if errors:
            raise errors.pop(0)
        super().send(key, recipient, content)


def test_a_permanent_error_is_dead_after_one_attempt_with_its_reason(
        store: SqliteStore) -> None:
    clock = VirtualClock(T0)
    bad, good = phones(2)
    store.submit(NewMessage.validated(content="x", recipients=[bad, good]), T0)
    provider = _ClassifyingProvider(clock, {bad: [
        TransportError("permanent: invalid number", ErrorClass.PERMANENT)] * 5})
    dispatcher = Dispatcher(store, clock=clock, rng=random.Random(1),
                            config=DispatchConfig(retry=RetryPolicy(max_attempts=5)))
    dispatcher.run(provider, threading.Event(), until_idle=True)
    assert [who for _, who in provider.tried].count(bad) == 1
    (dead,) = store.deliveries(status=DeliveryStatus.DEAD)
    assert (dead.recipient, dead.attempts) == (bad, 1)
    assert dead.last_error == "permanent: invalid number"
    assert (dispatcher.stats.sent, dispatcher.stats.dead, dispatcher.stats.retried) == (1, 1, 0)


def test_a_throttle_delays_its_retry_and_closes_the_route_until_the_retry_after(
        store: SqliteStore) -> None:
    """One 429 with Retry-After 30 s: the throttled delivery retries at T0 + 30 (the backoff
    alone would be under a second), and the two others in the same batch are given back
    unsent (no attempt counted) and go out then too, not one by one into the throttle."""
    clock = VirtualClock(T0)
    first, *others = phones(3)
    store.submit(NewMessage.validated(content="x", recipients=[first, *others]), T0)
    provider = _ClassifyingProvider(clock, {first: [
        TransportError("throttled: HTTP 429", ErrorClass.THROTTLED, 30.0)]})
    config = DispatchConfig(retry=RetryPolicy(max_attempts=5, base_s=0.5, cap_s=1.0),
                            idle_recheck_s=0.05)
    dispatcher = Dispatcher(store, clock=clock, rng=random.Random(1), config=config)
    dispatcher.run(provider, threading.Event(), until_idle=True)
    assert provider.tried[0] == (T0, first)
    assert sorted(provider.tried[1:]) == sorted((T0 + 30.0, who) for who in phones(3))
    # The throttled one used two attempts; the two given back were sent on their first.
    assert sorted((d.recipient, d.attempts) for d in store.deliveries()) == [
        (first, 2), (others[0], 1), (others[1], 1)]
    assert {d.status for d in store.deliveries()} == {DeliveryStatus.SENT}
    assert dispatcher.stats.released == 2 and dispatcher.stats.retried == 1
    assert dispatcher.gate.closures == 1


def test_a_throttle_without_retry_after_pauses_for_the_first_backoff() -> None:
    policy = RetryPolicy(max_attempts=3, base_s=2.0, factor=3.0, cap_s=60.0)
    assert throttle_pause_s(SendFailure("x", ErrorClass.THROTTLED), policy) == 2.0
    assert throttle_pause_s(SendFailure("x", ErrorClass.THROTTLED, 7.5), policy) == 7.5
    huge = SendFailure("x", ErrorClass.THROTTLED, float("inf"))
    assert throttle_pause_s(huge, policy) == MAX_THROTTLE_PAUSE_S


def test_the_throttle_gate_opens_at_the_latest_retry_after_on_a_fake_clock() -> None:
    clock = VirtualClock(T0)
    gate = ThrottleGate(clock)
    assert gate.is_open() and gate.remaining_s() == 0
    gate.close_for(10.0)
    gate.close_for(4.0)  # a shorter one never shortens it
    assert not gate.is_open() and gate.remaining_s() == 10.0
    clock.advance(6.0)
    gate.close_for(8.0)  # a longer one extends it: now T0 + 14
    clock.advance(7.9)
    assert not gate.is_open()
    clock.advance(0.1)
    assert gate.is_open() and gate.closures == 2


@pytest.mark.parametrize(("error_class", "kind"), [
    (ErrorClass.PERMANENT, SettleKind.DEAD),
    (ErrorClass.TRANSIENT, SettleKind.RETRY),
    (ErrorClass.THROTTLED, SettleKind.RETRY),
])
def test_each_class_settles_by_the_shared_policy(error_class: ErrorClass,
                                                 kind: SettleKind) -> None:
    from sms_sim.dispatch.stores import MemoryStore

    clock = VirtualClock(T0)
    policy = RetryPolicy(max_attempts=3, base_s=1.0, cap_s=4.0)
    dispatcher = Dispatcher(MemoryStore(), clock=clock, rng=random.Random(3),
                            config=DispatchConfig(retry=policy))
    claim = Claim(1, 1, "555-000-0000", "x", attempts=1, lease_until=T0 + 30)
    settlement = dispatcher.outcome(claim, SendFailure("why", error_class, 120.0))
    assert settlement.kind is kind and settlement.error == "why"
    expected = retry_delay_after(policy, 1, error_class, random.Random(3), retry_after_s=120.0)
    if kind is SettleKind.RETRY:
        assert expected is not None and settlement.next_attempt_at == T0 + expected
        assert (settlement.next_attempt_at >= T0 + 120.0) == (error_class is ErrorClass.THROTTLED)


def test_simulated_failures_are_transient_and_keep_their_reason() -> None:
    failure = simulated_failure(SIMULATED_FAILURE, SenderConfig(0.0, 0.0, 0.5))
    assert failure == SendFailure(SIMULATED_FAILURE, ErrorClass.TRANSIENT)


def test_providers_that_do_not_classify_stay_transient() -> None:
    error = TransportError("provider busy")
    assert (error.error_class, error.retry_after_s, str(error)) == (
        ErrorClass.TRANSIENT, None, "provider busy")
    throttled = copy.copy(TransportError("slow down", ErrorClass.THROTTLED, 2.0))
    assert (throttled.error_class, throttled.retry_after_s) == (ErrorClass.THROTTLED, 2.0)


def test_the_sender_pool_hands_back_each_failure_with_its_class() -> None:
    """A transmitted send's failure comes back as the transmit step returned it; one the
    simulator drew itself (never transmitted) is classified on the way back and shown to
    ``on_failure`` (the dispatcher's gate); a transmitted one was seen by the transmit step
    (``Dispatcher.transmitter``), so the pool does not show it again."""
    from sms_sim.dispatch.sender_pool import SenderPool, Slot
    from sms_sim.model import Outcome
    from sms_sim.sim.threaded.components import Inbox, drain_inbox

    inbox: Inbox[Slot] = queue.SimpleQueue()
    throttled = SendFailure("throttled: HTTP 429", ErrorClass.THROTTLED, 5.0)
    noted: list[SendFailure] = []
    pool = SenderPool(inbox, threading.Event(), 10, lambda job: throttled, now=lambda: T0,
                      senders=[SenderConfig(0.0, 0.0, 0.5)], on_failure=noted.append)
    claims = [Claim(i, 1, f"555-000-000{i}", "x", 1, T0 + 30) for i in (1, 2)]
    pool.submit([SendJob(c.recipient, c.content, f"u:{c.recipient}", c) for c in claims])
    sent, drawn = drain_inbox(inbox)
    assert pool.transmit(sent) == "throttled: HTTP 429"
    pool.on_outcome(Outcome(sent, 0, 0.0, False, "throttled: HTTP 429"))
    drawn.take()  # the simulator failed this one before any transmit
    pool.on_outcome(Outcome(drawn, 0, 0.0, False, SIMULATED_FAILURE))
    assert [failure for _, failure, _ in pool.completed()] == [
        throttled, SendFailure(SIMULATED_FAILURE, ErrorClass.TRANSIENT)]
    assert noted == [SendFailure(SIMULATED_FAILURE, ErrorClass.TRANSIENT)]


def test_a_delivery_is_recorded_sent_when_the_provider_accepted_it() -> None:
    """Its ``sent_at`` was the settle's time: a claim round after the send on a busy worker
    (on PostgreSQL due -> sent read 2.3 to 3.7 claim rounds; the sends came within 1.6),
    and a whole outage later when the store was unreachable meanwhile. The pool stamps
    each accepted send with the dispatcher's clock, and the settle records that."""
    from sms_sim.dispatch.sender_pool import SenderPool, Slot
    from sms_sim.dispatch.stores import MemoryStore
    from sms_sim.model import Outcome
    from sms_sim.sim.threaded.components import Inbox, drain_inbox

    store = MemoryStore()
    store.submit(NewMessage.validated(content="x", recipients=phones(2)), T0)
    clock = VirtualClock(T0)
    dispatcher = Dispatcher(store, clock=clock, rng=random.Random(1))
    inbox: Inbox[Slot] = queue.SimpleQueue()
    pool = SenderPool(inbox, threading.Event(), 10, dispatcher.transmitter(MemoryProvider()),
                      now=clock.now)
    pool.submit([SendJob(c.recipient, c.content, dispatcher.provider_key(c), c)
                 for c in dispatcher.claim()])
    for slot in drain_inbox(inbox):
        clock.advance(1.0)
        assert pool.transmit(slot) is None
        pool.on_outcome(Outcome(slot, 0, 0.0, True, None))
    clock.advance(10.0)  # the settle comes later
    assert dispatcher.settle_completed(pool.completed()) == 2
    assert sorted(d.sent_at or 0.0 for d in store.deliveries()) == [T0 + 1, T0 + 2]
