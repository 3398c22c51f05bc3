"""Sender step and loop on a fake clock: exact durations, deadline scheduling, stop handling."""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Callable
from typing import TypeVar

import pytest

from sms_sim import DONE, Message, Outcome, SenderConfig, VirtualClock
from sms_sim.dispatch.contract import Claim
from sms_sim.dispatch.dispatcher import SendJob
from sms_sim.policy import latency_sampler
from sms_sim.sim.threaded.components import Inbox, OutcomeQueue, Sender


class OversleepingClock(VirtualClock):
    """A fake clock whose every sleep overruns by a fixed amount, as an OS sleep does."""

    def __init__(self, start_s: float, oversleep_s: float) -> None:
        super().__init__(start_s)
        self.oversleep_s = oversleep_s

    def sleep(self, seconds: float, stop: threading.Event) -> bool:
        if seconds > 0:
            return super().sleep(seconds + self.oversleep_s, stop)
        return stop.is_set()


Queues = OutcomeQueue[Message]
T = TypeVar("T")


def make_sender(
    config: SenderConfig, clock: VirtualClock, *, seed: int = 1,
    transmit: Callable[[Message], str | None] | None = None,
) -> tuple[Sender[Message], Inbox[Message], Queues, Queues, threading.Event]:
    inbox: Inbox[Message] = queue.SimpleQueue()
    successes: OutcomeQueue[Message] = queue.SimpleQueue()
    failures: OutcomeQueue[Message] = queue.SimpleQueue()
    stop = threading.Event()
    sender = Sender(
        3,
        config,
        rng=random.Random(seed),
        inbox=inbox,
        successes=successes,
        failures=failures,
        stop=stop,
        clock=clock,
        transmit=transmit,
    )
    return sender, inbox, successes, failures, stop


def drain(q: OutcomeQueue[T]) -> list[Outcome[T]]:
    items = []
    while not q.empty():
        items.append(q.get_nowait())
    return items


def message(i: int) -> Message:
    return Message(i, "555-000-1234", f"message {i}")


def test_step_takes_exactly_the_drawn_latency_on_a_fake_clock() -> None:
    clock = VirtualClock(0.0)
    config = SenderConfig(0.01, 0.004, 0.0)
    sender, _, successes, _, _ = make_sender(config, clock, seed=5)
    expected = latency_sampler(random.Random(5), config)()
    outcome = sender.step(message(1), clock.monotonic())
    assert outcome is not None
    assert outcome.ok and outcome.sender == 3 and outcome.message == message(1)
    assert outcome.duration_s == expected
    assert clock.now() == expected
    assert drain(successes) == [outcome]


def test_failures_go_to_the_failure_queue() -> None:
    clock = VirtualClock(0.0)
    sender, _, successes, failures, _ = make_sender(SenderConfig(0.001, 0.0, 1.0), clock)
    outcome = sender.step(message(1), 0.0)
    assert outcome is not None and not outcome.ok
    assert drain(failures) == [outcome]
    assert drain(successes) == []


def send_all(sender: Sender[Message], inbox: Inbox[Message], successes: Queues,
             count: int) -> list[Outcome[Message]]:
    """Run ``sender`` over ``count`` messages; the outcomes of those it sent."""
    for i in range(count):
        inbox.put(message(i))
    inbox.put(DONE)
    sender.run()
    return drain(successes)


def test_deadline_scheduling_does_not_accumulate_oversleep() -> None:
    """100 sends of 10 ms with 1 ms oversleep each end at 1.001 s, not 1.1 s."""
    clock = OversleepingClock(0.0, oversleep_s=0.001)
    sender, inbox, successes, _, _ = make_sender(SenderConfig(0.01, 0.0, 0.0), clock)
    outcomes = send_all(sender, inbox, successes, 100)
    assert len(outcomes) == 100
    assert abs(clock.now() - 1.001) < 1e-9
    assert sender.lag_s == sender.max_lag_s
    assert abs(sender.max_lag_s - 0.001) < 1e-9


def _transmitting_sender(config: SenderConfig, clock: VirtualClock, answer_s: float
                         ) -> tuple[Sender[Message], Inbox[Message], Queues]:
    """A sender whose real send step (a provider's answer) takes ``answer_s``."""

    def transmit(_: Message) -> str | None:
        clock.advance(answer_s)
        return None

    sender, inbox, successes, _, _ = make_sender(config, clock, transmit=transmit)
    return sender, inbox, successes


@pytest.mark.parametrize("sms", [False, True], ids=["plain", "sms-model"])
def test_a_real_send_follows_the_simulated_time_and_is_not_counted_as_lag(sms: bool) -> None:
    """The simulated send time comes before each real send (the worker's ``--mean``: "before
    each send"), so 100 sends of 10 ms with a provider answering in 30 ms take 4 s; and the
    provider's time is not the host's lag. The schedule had stayed on the simulated times
    alone: each send started where the last one's simulated time ended, already 30 ms in
    the past, so sends took max(10, 30) ms, not 40, and the lag grew by 20 ms a send, the
    worker's progress line saying "LAGGING real time by 1.98s (host slower than the
    senders)" after 100 (by 30 ms a send with ``--provider``'s default ``--mean 0``)."""
    clock = VirtualClock(0.0)
    # The SMS model's path: the same 10 ms as one segment's time.
    config = SenderConfig(0.0, 0.0, 0.0, per_segment_s=0.01) if sms else SenderConfig(
        0.01, 0.0, 0.0)
    sender, inbox, successes = _transmitting_sender(config, clock, answer_s=0.03)
    outcomes = send_all(sender, inbox, successes, 100)
    assert len(outcomes) == 100
    assert clock.now() == pytest.approx(4.0)
    assert all(o.duration_s == pytest.approx(0.04) for o in outcomes)
    assert sender.max_lag_s == pytest.approx(0.0, abs=1e-9)


def test_a_real_send_keeps_oversleep_from_accumulating_and_counts_it_as_lag() -> None:
    """With a real send in each, 1 ms oversleep a sleep still does not accumulate: the
    next send is scheduled from when this one would have ended without it."""
    clock = OversleepingClock(0.0, oversleep_s=0.001)
    sender, inbox, successes = _transmitting_sender(SenderConfig(0.01, 0.0, 0.0), clock,
                                                    answer_s=0.03)
    assert len(send_all(sender, inbox, successes, 100)) == 100
    assert clock.now() == pytest.approx(4.001)
    assert sender.max_lag_s == pytest.approx(0.001)


def test_a_rate_limit_spaces_the_starts_of_real_sends() -> None:
    """2 sends a second, a 10 ms simulated time and a 30 ms answer: a send every 0.5 s."""
    clock = VirtualClock(0.0)
    config = SenderConfig(0.01, 0.0, 0.0, rate_limit_per_s=2.0)
    sender, inbox, successes = _transmitting_sender(config, clock, answer_s=0.03)
    assert len(send_all(sender, inbox, successes, 4)) == 4
    assert clock.now() == pytest.approx(1.5 + 0.04)
    assert sender.max_lag_s == pytest.approx(0.0, abs=1e-9)


def test_stop_interrupts_the_send_and_counts_the_message_unsent() -> None:
    clock = VirtualClock(0.0)
    sender, inbox, successes, failures, stop = make_sender(SenderConfig(0.01, 0.0, 0.0), clock)
    stop.set()
    assert sender.step(message(1), 0.0) is None
    assert drain(successes) == drain(failures) == []
    for i in range(5):
        inbox.put(message(i))
    inbox.put(DONE)
    sender.run()  # after stop: takes everything up to its sentinel, sends nothing
    assert len(sender.abandoned) == 5
    assert inbox.empty()
    assert clock.now() == 0.0


def test_with_a_separate_abort_event_stop_lets_the_send_in_flight_finish() -> None:
    """Graceful stop: ``stop`` ends new work, only ``abort`` interrupts a send."""
    clock = VirtualClock(0.0)
    inbox: Inbox[Message] = queue.SimpleQueue()
    successes: OutcomeQueue[Message] = queue.SimpleQueue()
    stop, abort = threading.Event(), threading.Event()
    sender = Sender(0, SenderConfig(0.01, 0.0, 0.0), rng=random.Random(1), inbox=inbox,
                    successes=successes, failures=queue.SimpleQueue(), stop=stop, clock=clock,
                    abort=abort)
    stop.set()
    assert sender.step(message(1), 0.0) is not None
    abort.set()
    assert sender.step(message(2), 0.01) is None
    assert [o.message.id for o in drain(successes)] == [1]


class StopWhileWaiting(VirtualClock):
    """A fake clock on which a stop request arrives during any wait longer than
    ``longer_than_s`` (the wait for a rate-limit slot, not a send)."""

    def __init__(self, request: threading.Event, longer_than_s: float) -> None:
        super().__init__(0.0)
        self.request, self.longer_than_s = request, longer_than_s

    def sleep(self, seconds: float, stop: threading.Event) -> bool:
        if seconds > self.longer_than_s:
            self.request.set()
        return super().sleep(seconds, stop)


@pytest.mark.parametrize("sms", [False, True], ids=["plain", "sms-model"])
def test_a_stop_during_the_wait_for_a_rate_limit_slot_starts_no_send(sms: bool) -> None:
    # The wait was part of the send's sleep, on ``abort``: after a graceful stop a sender
    # waiting for its slot still sent (4 sends after a 1.5 s stop; a 0.1/s limit kept the
    # run 5 s past its end).
    stop, abort = threading.Event(), threading.Event()
    clock = StopWhileWaiting(stop, longer_than_s=0.5)
    inbox: Inbox[Message] = queue.SimpleQueue()
    successes: OutcomeQueue[Message] = queue.SimpleQueue()
    sender = Sender(0, SenderConfig(0.01, 0.0, 0.0, rate_limit_per_s=1.0), rng=random.Random(1),
                    inbox=inbox, successes=successes, failures=queue.SimpleQueue(), stop=stop,
                    clock=clock, abort=abort,
                    segments_of=(lambda item: 1) if sms else None)
    inbox.put([message(1), message(2), message(3)])
    inbox.put(DONE)
    sender.run()
    assert [o.message.id for o in drain(successes)] == [1]
    assert [m.id for m in sender.abandoned] == [2, 3]
    assert clock.now() == pytest.approx(0.01)  # no time passed waiting for the slot


def test_the_pool_carries_any_work_item_and_returns_the_providers_error() -> None:
    """The durable worker's send jobs are not simulator messages: an E.164 recipient and
    1,600 Unicode characters go through untouched, and a refusal comes back in the
    outcome instead of a side table (or an exception that would end the thread)."""
    clock = VirtualClock(1000.0)
    inbox: Inbox[SendJob] = queue.SimpleQueue()
    successes: OutcomeQueue[SendJob] = queue.SimpleQueue()
    failures: OutcomeQueue[SendJob] = queue.SimpleQueue()
    seen: list[SendJob] = []

    def transmit(job: SendJob) -> str | None:
        seen.append(job)
        return None if job.key.endswith("ok") else "provider said 21211 invalid number"

    sender = Sender(0, SenderConfig(0.01, 0.0, 0.0), rng=random.Random(1), inbox=inbox,
                    successes=successes, failures=failures, stop=threading.Event(),
                    clock=clock, transmit=transmit)
    claim = Claim(delivery_id=1, message_id=1, recipient="+447700900123",
                  content="Évacuez 🚨" * 160, attempts=1, lease_until=2000.0)
    jobs = [SendJob(claim.recipient, claim.content, key, claim) for key in ("k-ok", "k-no")]
    for job in jobs:
        inbox.put(job)
    inbox.put(DONE)
    sender.run()
    assert seen == jobs
    (sent,) = drain(successes)
    (refused,) = drain(failures)
    assert (sent.message, sent.ok, sent.error) == (jobs[0], True, None)
    assert (refused.message, refused.ok, refused.error) == (
        jobs[1], False, "provider said 21211 invalid number")
