"""The threaded mode end to end, with tiny latencies: counts, stops, failures, no duplicates,
arrivals spread in time, retries and dead letters."""

from __future__ import annotations

import io
import queue
import random
import threading
from collections.abc import Iterator

import pytest

from sms_sim import (
    DONE,
    Message,
    Outcome,
    Producer,
    Sender,
    SenderConfig,
    SimulationConfig,
    StopReason,
    generate_messages,
    run,
)
from sms_sim.config import ArrivalKind, Arrivals, Jitter, RetryPolicy
from sms_sim.sim.threaded.components import Inbox, OutcomeQueue
from tests.stop_requests import StopAfterPolls

# Real threads, processes or wall-clock waits (STYLE.md section 10).
pytestmark = pytest.mark.slow

JOIN_TIMEOUT_S = 10.0


def fast(rate: float = 0.2, senders: int = 4) -> list[SenderConfig]:
    return [SenderConfig(0.0002, 0.0001, rate)] * senders


def test_clean_run_sends_everything_and_accounts_for_it() -> None:
    output = io.StringIO()
    report = run(SimulationConfig(num_messages=500, senders=fast(), seed=3), output=output)
    assert report.stopped_by is StopReason.COMPLETED
    assert report.produced == 500 and report.unsent == 0
    assert report.sent + report.failed == 500
    assert report.is_accounted
    assert sum(s.sent for s in report.senders) == report.sent
    assert sum(s.failed for s in report.senders) == report.failed
    assert report.seed == 3
    text = output.getvalue()
    assert "completed: 500 produced" in text
    assert "accounting: produced 500 = sent" in text and ": ok" in text


@pytest.mark.parametrize(("rate", "sent", "failed"), [(0.0, 300, 0), (1.0, 0, 300)])
def test_failure_rate_zero_and_one(rate: float, sent: int, failed: int) -> None:
    report = run(SimulationConfig(num_messages=300, senders=fast(rate), seed=1), output=None)
    assert (report.sent, report.failed) == (sent, failed)


def test_zero_messages_completes_at_once() -> None:
    report = run(SimulationConfig(num_messages=0, senders=fast(), seed=1), output=None)
    assert (report.produced, report.sent, report.failed, report.unsent) == (0, 0, 0, 0)
    assert report.stopped_by is StopReason.COMPLETED


def test_stop_request_mid_run_loses_nothing() -> None:
    config = SimulationConfig(num_messages=100_000, senders=[SenderConfig(0.001, 0, 0.1)] * 3,
                              seed=2, queue_size=64)
    report = run(config, output=None, stop_requests=StopAfterPolls(3))
    assert report.stopped_by is StopReason.SIGNAL
    # A burst is there whole from t = 0 (as in virtual time): what the producer had not
    # queued yet is unsent, not missing from the report (it counted only what it queued).
    assert report.produced == 100_000
    assert 0 < report.sent + report.failed < 100_000
    assert report.unsent > 0
    assert report.is_accounted
    assert report.threads_alive == ()


def test_duration_limit_stops_the_run() -> None:
    config = SimulationConfig(num_messages=100_000, senders=[SenderConfig(0.001, 0, 0)] * 2,
                              seed=2, duration_s=0.05)
    report = run(config, output=None)
    assert report.stopped_by is StopReason.DURATION
    assert report.is_accounted and report.unsent > 0 and report.produced == 100_000
    # The sends in flight at the stop finished and were counted, so their time is too.
    assert report.elapsed_s >= 0.05


def test_a_failing_thread_stops_the_run_and_is_reported() -> None:
    def messages_then_crash() -> Iterator[Message]:
        yield from generate_messages(50, seed=1)
        raise RuntimeError("generator broke")

    report = run(SimulationConfig(num_messages=50, senders=fast(), seed=1), output=None,
                 messages=messages_then_crash())
    assert report.stopped_by is StopReason.ERROR
    assert report.produced == 50
    assert report.is_accounted


def test_components_wired_by_hand_deliver_each_message_exactly_once() -> None:
    """Producer, senders and queues the caller owns; every outcome collected and checked."""
    inbox: Inbox[Message] = queue.SimpleQueue()
    successes: OutcomeQueue[Message] = queue.SimpleQueue()
    failures: OutcomeQueue[Message] = queue.SimpleQueue()
    stop = threading.Event()
    from sms_sim import RealClock

    senders = [
        Sender(i, SenderConfig(0.0, 0.0, 0.3), rng=random.Random(i), inbox=inbox,
               successes=successes, failures=failures, stop=stop, clock=RealClock())
        for i in range(5)
    ]
    producer = Producer(generate_messages(2000, seed=8), inbox, stop, num_consumers=5,
                        max_queued=8)
    threads = [threading.Thread(target=producer.run)]
    threads += [threading.Thread(target=s.run) for s in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
        assert not thread.is_alive()
    outcomes: list[Outcome[Message]] = []
    for q in (successes, failures):
        while not q.empty():
            outcomes.append(q.get_nowait())
    ids = [o.message.id for o in outcomes]
    assert sorted(ids) == list(range(2000))  # each exactly once
    assert producer.produced == 2000


def test_producer_keeps_the_inbox_bounded_and_stops_while_full() -> None:
    """Nobody consumes: the producer fills the inbox to its bound, waits, and on stop puts
    its sentinel (beyond the bound) and ends; nothing after the bound was produced."""
    inbox: Inbox[Message] = queue.SimpleQueue()
    stop = threading.Event()
    producer = Producer(generate_messages(100, seed=1), inbox, stop, num_consumers=1,
                        max_queued=3, refill_pause_s=0.001)
    thread = threading.Thread(target=producer.run)
    thread.start()
    while inbox.qsize() < 3:
        thread.join(0.001)
    thread.join(0.05)  # it is waiting for room, not producing
    assert producer.produced == 3 and inbox.qsize() == 3
    stop.set()
    thread.join(JOIN_TIMEOUT_S)
    assert not thread.is_alive()
    taken = [inbox.get_nowait() for _ in range(inbox.qsize())]
    assert taken[-1] is DONE and len(taken) == 4


def test_every_attempt_failing_dead_letters_every_message_after_its_last_attempt() -> None:
    """Failure rate 1, three attempts, no backoff: each message is tried exactly three times
    and then dead (not failed: that is for a single allowed attempt, as in virtual time)."""
    config = SimulationConfig(num_messages=200, senders=fast(1.0), seed=4,
                              retry=RetryPolicy(max_attempts=3, base_s=0.0))
    report = run(config, output=None)
    assert report.stopped_by is StopReason.COMPLETED
    assert (report.produced, report.sent, report.failed, report.dead_lettered, report.unsent) == (
        200, 0, 0, 200, 0)
    assert sum(s.failed for s in report.senders) == 600  # failed attempts
    assert report.is_accounted


def test_retries_get_failed_messages_through() -> None:
    """Failure rate 0.3 and 20 attempts: a message is dead with probability 0.3**20 ~ 3e-11,
    so every one is sent; the attempts beyond one per message are the retries."""
    config = SimulationConfig(num_messages=300, senders=fast(0.3), seed=5,
                              retry=RetryPolicy(max_attempts=20, base_s=0.001, cap_s=0.002))
    report = run(config, output=None)
    assert (report.sent, report.failed, report.dead_lettered, report.unsent) == (300, 0, 0, 0)
    assert sum(s.failed for s in report.senders) > 0
    assert report.is_accounted


@pytest.mark.parametrize("arrivals", [
    Arrivals(kind=ArrivalKind.POISSON, rate_per_s=5000.0),
    Arrivals(kind=ArrivalKind.SCHEDULE, schedule=((0.0, 50), (0.02, 0), (0.03, 150))),
])
def test_timed_arrivals_produce_every_message(arrivals: Arrivals) -> None:
    config = SimulationConfig(num_messages=200, senders=fast(), seed=6, arrivals=arrivals)
    report = run(config, output=None)
    assert report.stopped_by is StopReason.COMPLETED
    assert report.produced == report.sent + report.failed == 200
    assert report.unsent == report.dead_lettered == 0


def test_stop_with_retries_pending_counts_them_unsent() -> None:
    """A 30 s backoff (no jitter) holds every failed message when the stop comes (after
    about 0.15 s of polls): each of them is unsent, none dead, the run ends without waiting
    for the backoff, and the identity holds."""
    config = SimulationConfig(num_messages=300, senders=fast(0.5), seed=7,
                              retry=RetryPolicy(max_attempts=3, base_s=30.0, cap_s=60.0,
                                                jitter=Jitter.NONE))
    report = run(config, output=None, stop_requests=StopAfterPolls(3))
    assert report.stopped_by is StopReason.SIGNAL
    assert report.produced == 300 and report.dead_lettered == report.failed == 0
    assert report.unsent == sum(s.failed for s in report.senders) > 0
    assert report.sent + report.unsent == 300
    assert report.is_accounted
    assert report.threads_alive == ()


def test_a_duration_limit_during_backoffs_and_arrivals_loses_nothing() -> None:
    config = SimulationConfig(
        num_messages=1000, senders=fast(0.5), seed=8, duration_s=0.2,
        arrivals=Arrivals(kind=ArrivalKind.POISSON, rate_per_s=1000.0),
        retry=RetryPolicy(max_attempts=4, base_s=0.05, cap_s=10.0),
    )
    report = run(config, output=None)
    assert report.stopped_by is StopReason.DURATION
    assert 0 < report.produced < 1000
    assert report.is_accounted and report.unsent > 0
    assert report.threads_alive == ()


def test_a_stop_between_slow_arrivals_ends_the_run_at_once() -> None:
    """One arrival a second: the stop ends the producer's wait for the next one."""
    config = SimulationConfig(num_messages=100, senders=fast(), seed=9,
                              arrivals=Arrivals(kind=ArrivalKind.POISSON, rate_per_s=1.0))
    report = run(config, output=None, stop_requests=StopAfterPolls(2))
    assert report.stopped_by is StopReason.SIGNAL
    assert report.produced < 100 and report.is_accounted
    assert report.threads_alive == ()


def test_the_elapsed_time_covers_the_sends_in_flight_at_a_stop() -> None:
    # It was taken at the stop, before the sends in flight finished and were counted: two
    # 0.3 s sends "in 0.05 s" made a throughput of 40/s out of senders that can do 6.7/s.
    config = SimulationConfig(num_messages=8, senders=[SenderConfig(0.3, 0, 0)] * 2, seed=3,
                              duration_s=0.05)
    report = run(config, output=None)
    assert report.stopped_by is StopReason.DURATION
    assert report.sent == 2 and report.unsent == 6 and report.is_accounted
    assert report.elapsed_s >= 0.3


def test_the_elapsed_time_leaves_out_sends_interrupted_and_never_counted() -> None:
    # Taken after the senders' join, it ran through the grace period of a send that was
    # then interrupted: "0 sent in 6.038 s" for a 1 s run.
    config = SimulationConfig(num_messages=2, senders=[SenderConfig(20.0, 0, 0)], seed=3,
                              duration_s=0.05)
    report = run(config, output=None, grace_s=1.0)
    assert report.sent == 0 and report.unsent == 2 and report.is_accounted
    assert report.elapsed_s < 0.5  # the stop, not the stop plus the 1 s of grace
