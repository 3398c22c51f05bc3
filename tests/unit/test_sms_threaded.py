"""The threaded mode's SMS pieces on a fake clock (issue 14): the sender's segments, error
classes, throttle pause and validity; the retry handoff's classes and expiry; the monitor's
accounting of segments, classes, expiry and receipts. No threads, no sleeps."""

from __future__ import annotations

import io
import queue
import random
import threading

import pytest

from sms_sim import Message, Monitor, Outcome, SenderConfig, VirtualClock
from sms_sim.config import Content, ReceiptModel, RetryPolicy, ServiceDistribution, SimulationConfig
from sms_sim.model import SIMULATED_FAILURE, ErrorClass, ReceiptStatus
from sms_sim.policy import FAILURE_ERRORS
from sms_sim.sim.threaded.components import Inbox, OutcomeQueue, Sender
from sms_sim.sim.threaded.schedule import RetryHandoff
from sms_sim.sim.threaded.sms import EXPIRED_ERROR, SmsBook

START = 1_000.0
MESSAGE = Message(1, "555-123-4567", "hello")


def _sender(config: SenderConfig, clock: VirtualClock, **sms: object) -> tuple[
    Sender[Message], OutcomeQueue[Message], OutcomeQueue[Message]
]:
    inbox: Inbox[Message] = queue.SimpleQueue()
    successes: OutcomeQueue[Message] = queue.SimpleQueue()
    failures: OutcomeQueue[Message] = queue.SimpleQueue()
    sender = Sender(0, config, rng=random.Random(1), inbox=inbox, successes=successes,
                    failures=failures, stop=threading.Event(), clock=clock,
                    expired_error=EXPIRED_ERROR, **sms)  # type: ignore[arg-type]
    return sender, successes, failures


def test_a_send_takes_per_segment_time_and_its_segments_slots_of_the_rate_limit() -> None:
    clock = VirtualClock(START)
    config = SenderConfig(0.01, 0.0, 0.0, ServiceDistribution.CONSTANT, rate_limit_per_s=2.0,
                          per_segment_s=0.005)
    sender, successes, _ = _sender(config, clock, segments_of=lambda message: 3)
    outcome = sender.step(MESSAGE, START)
    assert outcome is not None and outcome.ok
    assert outcome.duration_s == pytest.approx(0.01 + 3 * 0.005)
    assert sender.next_start == START + 3 / 2.0  # three segments at 2 per second
    assert successes.qsize() == 1


def test_without_the_sms_model_the_sender_is_the_one_before_it() -> None:
    """Same draws, same outcome, same error text: the dispatch worker relies on it."""
    config = SenderConfig(0.01, 0.002, 0.5)
    plain, _, _ = _sender(config, VirtualClock(START))
    sms, _, _ = _sender(config, VirtualClock(START), segments_of=lambda message: 1)
    for _ in range(50):
        a, b = plain.step(MESSAGE, START), sms.step(MESSAGE, START)
        assert a is not None and b is not None
        assert (a.ok, a.duration_s, a.error) == (b.ok, b.duration_s, b.error)
        assert a.error in (None, SIMULATED_FAILURE)


def test_each_error_class_is_named_and_a_throttle_pauses_the_sender() -> None:
    clock = VirtualClock(START)
    config = SenderConfig(0.01, 0.0, 0.0, ServiceDistribution.CONSTANT, throttle_rate=1.0,
                          retry_after_s=2.0)
    sender, _, failures = _sender(config, clock)
    outcome = sender.step(MESSAGE, START)
    assert outcome is not None and not outcome.ok
    assert outcome.error == FAILURE_ERRORS[ErrorClass.THROTTLED]
    assert sender.next_start == START + 0.01 + 2.0
    permanent = SenderConfig(0.01, 0.0, 0.0, ServiceDistribution.CONSTANT, permanent_rate=1.0)
    sender, _, _ = _sender(permanent, VirtualClock(START))
    outcome = sender.step(MESSAGE, START)
    assert outcome is not None and outcome.error == FAILURE_ERRORS[ErrorClass.PERMANENT]


def test_a_message_past_its_validity_is_not_sent() -> None:
    clock = VirtualClock(START)
    config = SenderConfig(0.5, 0.0, 0.0, ServiceDistribution.CONSTANT)
    sender, successes, failures = _sender(config, clock, valid_until=lambda message: START + 1)
    outcome = sender.step(MESSAGE, START + 1)  # starts exactly when validity ends
    assert outcome is not None and (outcome.ok, outcome.error, outcome.duration_s) == (
        False, EXPIRED_ERROR, 0.0)
    assert clock.monotonic() == START  # no send time passed
    assert sender.step(MESSAGE, START + 0.5) is not None  # still valid: sent
    assert successes.qsize() == 1 and failures.qsize() == 1


def test_the_retry_handoff_acts_on_the_class_and_expires_late_retries() -> None:
    policy = RetryPolicy(max_attempts=5, base_s=1.0, factor=2.0, cap_s=10.0)
    handoff: RetryHandoff[Message] = RetryHandoff(policy, random.Random(1))
    assert handoff.failed(MESSAGE, 0.0, ErrorClass.PERMANENT) is None
    assert (handoff.dead, handoff.settled) == (1, 1)
    due = handoff.failed(MESSAGE, 0.0, ErrorClass.THROTTLED, retry_after_s=7.0)
    assert due is not None and due >= 7.0
    other = Message(2, "555-123-4567", "x")
    assert handoff.failed(other, 0.0, ErrorClass.THROTTLED, retry_after_s=7.0,
                          valid_until=5.0) is None
    assert (handoff.expired, handoff.settled) == (1, 2)
    handoff.expire(MESSAGE)
    assert handoff.settled == 3


def test_the_monitor_counts_segments_classes_expiry_and_receipts() -> None:
    clock = VirtualClock(START)
    config = SimulationConfig(num_messages=3, content=Content(text="ж" * 200),
                              receipts=ReceiptModel(lost_rate=0.0, undelivered_rate=0.0,
                                                    median_s=1.0, sigma=0.0),
                              valid_for_s=10.0, seed=1)
    book: SmsBook[Message] = SmsBook(config, seed=1, started_at=START, timed=True,
                                     text_of=lambda message: message.text)
    successes: OutcomeQueue[Message] = queue.SimpleQueue()
    failures: OutcomeQueue[Message] = queue.SimpleQueue()
    sender = SenderConfig(0.01, 0.0, 0.0)
    senders = [Sender(0, sender, rng=random.Random(1), inbox=queue.SimpleQueue(),
                      successes=successes, failures=failures, stop=threading.Event(),
                      clock=clock)]
    monitor = Monitor(successes=successes, failures=failures, inbox=queue.SimpleQueue(),
                      senders=senders, clock=clock, output=io.StringIO(), interval_s=1.0,
                      started_at=START, stop=threading.Event(), sms=book)
    late = Message(2, "555-123-4567", "late")
    book.arrived(MESSAGE, START)
    book.arrived(late, START - 9.5)  # valid until START + 0.5, before its receipt
    successes.put(Outcome(MESSAGE, 0, 0.01, True, None))
    successes.put(Outcome(late, 0, 0.01, True, None))
    failures.put(Outcome(MESSAGE, 0, 0.01, False, FAILURE_ERRORS[ErrorClass.THROTTLED]))
    failures.put(Outcome(MESSAGE, 0, 0.0, False, EXPIRED_ERROR))
    assert monitor.drain() == 4
    tally = book.tally
    assert (tally.segments_sent, tally.segments_attempted, tally.expired) == (6, 9, 1)
    assert tally.failures[ErrorClass.THROTTLED] == 1
    assert tally.receipts[ReceiptStatus.DELIVERED] == 1
    assert tally.receipts[ReceiptStatus.EXPIRED] == 1
    assert list(tally.delivered_s) == [1.0]  # arrived at START, sent at START, 1 s delay
    assert monitor.per_sender[0].sent == 2 and monitor.per_sender[0].failed == 1
    assert monitor.progress(START + 1.0).segments == 9
