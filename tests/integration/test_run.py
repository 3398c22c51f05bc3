"""The threaded pipeline end to end, with tiny latencies: counts, stops, failures, no duplicates."""

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
    assert 0 < report.produced < 100_000
    assert report.unsent > 0
    assert report.is_accounted
    assert report.threads_alive == ()


def test_duration_limit_stops_the_run() -> None:
    config = SimulationConfig(num_messages=100_000, senders=[SenderConfig(0.001, 0, 0)] * 2,
                              seed=2, duration_s=0.05)
    report = run(config, output=None)
    assert report.stopped_by is StopReason.DURATION
    assert report.is_accounted and report.unsent > 0


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
