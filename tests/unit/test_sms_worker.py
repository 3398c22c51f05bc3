"""The SMS model in the dispatch worker's simulated provider (issue 14), on a fake clock.

The worker's pieces are driven one step at a time, as its threads would: a ``Sender`` of the
simulator takes a ``Slot`` from the ``SenderPool``'s inbox and ``step``s it on a
``VirtualClock`` (which advances instantly), the monitor's part is ``pool.on_outcome``, the
dispatcher settles with ``settle_completed`` into a real store. No threads, no sleeps.
"""

from __future__ import annotations

import queue
import random
import threading

import pytest

from sms_sim.clock import VirtualClock
from sms_sim.config import RetryPolicy, SenderConfig
from sms_sim.dispatch.contract import DeliveryStatus, SettleKind
from sms_sim.dispatch.dispatcher import DispatchConfig, Dispatcher
from sms_sim.dispatch.failures import SendFailure, settlement_for, simulated_failure
from sms_sim.dispatch.jobs import SendJob
from sms_sim.dispatch.receipt_pump import ReceiptTally
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.sender_pool import SenderPool, Slot, needs_segments
from sms_sim.dispatch.stores import MemoryStore
from sms_sim.dispatch.transport import MemoryProvider
from sms_sim.dispatch.worker import WorkerReport, format_worker_report
from sms_sim.model import SIMULATED_FAILURE, ErrorClass, Outcome
from sms_sim.policy import FAILURE_ERRORS
from sms_sim.report import StopReason
from sms_sim.sim.threaded.components import Inbox, OutcomeQueue, Sender
from tests.conftest import T0, phones

THROTTLED = FAILURE_ERRORS[ErrorClass.THROTTLED]
PERMANENT = FAILURE_ERRORS[ErrorClass.PERMANENT]


@pytest.mark.parametrize(("error", "error_class"), [
    (SIMULATED_FAILURE, ErrorClass.TRANSIENT),
    (PERMANENT, ErrorClass.PERMANENT),
    (THROTTLED, ErrorClass.THROTTLED),
    ("a text no simulator writes", ErrorClass.TRANSIENT),  # the safe default: backoff
])
def test_simulated_failures_take_the_class_their_error_names(error: str,
                                                             error_class: ErrorClass) -> None:
    sender = SenderConfig(0.0, 0.0, 0.0, throttle_rate=0.5, retry_after_s=2.5)
    failure = simulated_failure(error, sender)
    assert (failure.reason, failure.error_class) == (error, error_class)
    # Only a throttle carries a retry-after: the sender's, as a 429 carries its own.
    assert failure.retry_after_s == (2.5 if error_class is ErrorClass.THROTTLED else None)


def test_a_throttle_drawn_by_an_unknown_sender_falls_back_to_the_first_backoff() -> None:
    assert simulated_failure(THROTTLED, None) == SendFailure(THROTTLED, ErrorClass.THROTTLED)


def test_simulated_classes_settle_by_the_shared_policy() -> None:
    """Permanent: dead on the first attempt of five; throttled: a retry no sooner than the
    sender's retry-after (the backoff with full jitter would allow 0.01 s)."""
    from sms_sim.dispatch.contract import Claim
    claim = Claim(1, 1, "555-000-0001", "hi", 1, T0 + 30)
    policy = RetryPolicy(max_attempts=5, base_s=0.01, cap_s=0.01)
    sender = SenderConfig(0.0, 0.0, 0.0, throttle_rate=0.5, retry_after_s=7.0)
    dead = settlement_for(claim, simulated_failure(PERMANENT, sender), policy=policy,
                          rng=random.Random(1), now=T0)
    assert (dead.kind, dead.error) == (SettleKind.DEAD, PERMANENT)
    retry = settlement_for(claim, simulated_failure(THROTTLED, sender), policy=policy,
                           rng=random.Random(1), now=T0)
    assert retry.kind is SettleKind.RETRY and retry.next_attempt_at == T0 + 7.0


class Rig:
    """One worker's pieces on a fake clock: store, dispatcher, pool, one sender."""

    def __init__(self, sender: SenderConfig, *, content: str = "hi", recipients: int = 1,
                 retry: RetryPolicy | None = None) -> None:
        self.clock = VirtualClock(T0)
        self.store = MemoryStore()
        self.store.submit(NewMessage.validated(content=content,
                                               recipients=phones(recipients)), T0)
        config = DispatchConfig(retry=retry or RetryPolicy(max_attempts=5, base_s=0.01,
                                                           cap_s=0.01))
        self.dispatcher = Dispatcher(self.store, clock=self.clock, rng=random.Random(1),
                                     config=config)
        self.provider = MemoryProvider()
        self.inbox: Inbox[Slot] = queue.SimpleQueue()
        self.pool = SenderPool(self.inbox, threading.Event(), 100,
                               self.dispatcher.transmitter(self.provider),
                               now=self.clock.now, senders=[sender],
                               on_failure=self.dispatcher.note_failure)
        self.successes: OutcomeQueue[Slot] = queue.SimpleQueue()
        self.failures: OutcomeQueue[Slot] = queue.SimpleQueue()
        self.sender = Sender(0, sender, rng=random.Random(2), inbox=self.inbox,
                             successes=self.successes, failures=self.failures,
                             stop=threading.Event(), clock=self.clock,
                             transmit=self.pool.transmit,
                             segments_of=(self.pool.segments_of if needs_segments(sender)
                                          else None))

    def claim(self) -> int:
        """One dispatcher round without settling: claim what is due, hand it to the pool."""
        before = self.dispatcher.stats.claimed
        if self.dispatcher.gate.is_open():
            claims = self.dispatcher.claim()
            self.pool.submit([SendJob(c.recipient, c.content, self.dispatcher.provider_key(c),
                                      c) for c in claims])
        return self.dispatcher.stats.claimed - before

    def send_one(self) -> Outcome[Slot]:
        """The sender's next send, from when it may start; its outcome through the pool."""
        slot = self.inbox.get_nowait()
        assert isinstance(slot, Slot)
        outcome = self.sender.step(slot, max(self.clock.monotonic(), self.sender.next_start))
        assert outcome is not None
        self.pool.on_outcome(outcome)
        return outcome

    def settle(self) -> None:
        self.dispatcher.settle_completed(self.pool.completed())


def test_a_permanent_failure_is_dead_after_exactly_one_attempt() -> None:
    rig = Rig(SenderConfig(0.01, 0.0, 0.0, permanent_rate=1.0), recipients=3)
    assert rig.claim() == 3
    for _ in range(3):
        assert rig.send_one().error == PERMANENT
    rig.settle()
    deliveries = rig.store.deliveries()
    assert [(d.status, d.attempts, d.last_error) for d in deliveries] == [
        (DeliveryStatus.DEAD, 1, PERMANENT)] * 3
    assert rig.provider.attempts == 0  # the simulator refused them: none reached it
    assert rig.claim() == 0  # nothing comes back


def test_a_simulated_throttle_waits_out_the_retry_after_and_closes_the_gate() -> None:
    """--throttle-rate 1 --retry-after 2: the delivery is retried no sooner than 2 s after
    the answer, the worker claims and sends nothing meanwhile (its gate), and the sender
    itself pauses for the retry-after (``policy.send_slot_s``)."""
    rig = Rig(SenderConfig(0.1, 0.0, 0.0, throttle_rate=1.0, retry_after_s=2.0),
              recipients=2)
    assert rig.claim() == 2
    assert rig.send_one().error == THROTTLED
    answered = rig.clock.now()
    assert answered == T0 + 0.1
    assert not rig.dispatcher.gate.is_open() and rig.dispatcher.gate.remaining_s() == 2.0
    # The pause is the sender's too: its next send may not start before the retry-after.
    assert rig.sender.next_start == T0 + 0.1 + 2.0
    rig.settle()
    retrying = rig.store.deliveries()[0]
    assert retrying.status is DeliveryStatus.RETRYING
    assert retrying.next_attempt_at == answered + 2.0  # the backoff alone: at most 0.01 s
    rig.clock.advance(1.9)
    assert rig.claim() == 0  # the route is still throttled
    # The job still held by the pool reaches the gate and is given back unsent.
    second = rig.inbox.get_nowait()
    assert isinstance(second, Slot)
    assert rig.pool.transmit(second) == "provider route throttled; given back unsent"
    rig.clock.advance(0.1)
    assert rig.dispatcher.gate.is_open()
    assert rig.claim() == 1  # the throttled delivery, due again exactly now


def test_rate_limits_and_per_segment_time_count_each_jobs_segments() -> None:
    """A long code (1 segment/s) sending 200 UCS-2 characters (3 segments): each send
    holds the sender 3 s, takes 3 x per-segment more, and the report counts 3 segments."""
    rig = Rig(SenderConfig(0.01, 0.0, 0.0, rate_limit_per_s=1.0, per_segment_s=0.02),
              content="ж" * 200, recipients=2)
    rig.claim()
    first = rig.send_one()
    assert first.ok and first.duration_s == pytest.approx(0.01 + 3 * 0.02)
    assert rig.sender.next_start == T0 + 3.0
    second = rig.send_one()
    assert second.ok and rig.clock.now() == pytest.approx(T0 + 3.0 + 0.07)
    assert rig.pool.segments_sent == 6
    rig.settle()
    assert rig.dispatcher.stats.sent == 2


def test_without_rate_limit_or_sms_fields_the_plain_path_still_counts_segments() -> None:
    sender = SenderConfig(0.01, 0.0, 0.0)
    assert not needs_segments(sender)
    assert needs_segments(SenderConfig(0.01, 0.0, 0.0, rate_limit_per_s=5.0))
    rig = Rig(sender, content="x" * 161)  # GSM-7, two segments
    rig.claim()
    assert rig.send_one().ok and rig.sender.next_start == T0 + 0.01
    assert rig.pool.segments_sent == 2


def _report(**fields: object) -> WorkerReport:
    base: dict[str, object] = dict(
        owner="worker-1", seed=1, stopped_by=StopReason.COMPLETED, elapsed_s=1.0, claimed=10,
        claims=1, sent=8, retried=0, dead=2, released=0, expired=0, refused=0, withdrawn=0,
        store_errors=0, avg_send_s=0.01, senders=())
    base.update(fields)
    return WorkerReport(**base)  # type: ignore[arg-type]


def test_the_report_counts_segments_and_receipts() -> None:
    text = format_worker_report(_report(segments_sent=24, receipts=ReceiptTally(
        delivered=5, undelivered=1, expired=1, unknown=1, outstanding=0)))
    assert "segments: 24 sent (3.00 per delivery sent)" in text
    assert ("receipts: delivered 5, undelivered 1, expired 1, unknown 1 (never to come); "
            "0 outstanding (not due yet at the stop)\n") in text
    plain = format_worker_report(_report(sent=0))
    assert "segments: 0 sent (0.00 per delivery sent)" in plain and "receipts:" not in plain
