"""Monitor on a fake clock: drain, tick timing, line content, lag warning, final report, and
the retry-or-dead decision it makes for each failed attempt when retries are on."""

from __future__ import annotations

import io
import queue
import random
import threading

from sms_sim import Message, Monitor, Outcome, SenderConfig, VirtualClock
from sms_sim.config import Jitter, RetryPolicy
from sms_sim.policy import retry_delay_s
from sms_sim.sim.threaded.components import Inbox, OutcomeQueue, Sender
from sms_sim.sim.threaded.schedule import RetryHandoff
from sms_sim.stats import SendTally

Queues = OutcomeQueue[Message]
Built = tuple[Monitor[Message], VirtualClock, Queues, Queues, Inbox[Message],
              list[Sender[Message]], io.StringIO]


def build(interval_s: float = 1.0, output: io.StringIO | None = None) -> Built:
    clock = VirtualClock(100.0)
    inbox: Inbox[Message] = queue.SimpleQueue()
    successes: OutcomeQueue[Message] = queue.SimpleQueue()
    failures: OutcomeQueue[Message] = queue.SimpleQueue()
    stop = threading.Event()
    senders = [
        Sender(i, SenderConfig(0.01, 0.0, 0.0), rng=random.Random(i), inbox=inbox,
               successes=successes, failures=failures, stop=stop, clock=clock)
        for i in range(2)
    ]
    output = io.StringIO() if output is None else output
    monitor = Monitor(successes=successes, failures=failures, inbox=inbox, senders=senders,
                      clock=clock, output=output, interval_s=interval_s, started_at=100.0,
                      stop=stop)
    return monitor, clock, successes, failures, inbox, senders, output


def outcome(i: int, sender: int, duration_s: float, ok: bool) -> Outcome[Message]:
    return Outcome(Message(i, "123-456-7890", "x"), sender, duration_s, ok)


def test_no_line_before_the_first_tick_then_exact_content() -> None:
    monitor, clock, successes, failures, inbox, _, output = build()
    successes.put(outcome(0, 0, 0.010, True))
    successes.put(outcome(1, 1, 0.020, True))
    failures.put(outcome(2, 0, 0.030, False))
    inbox.put(Message(3, "123-456-7890", "y"))
    clock.advance(0.5)
    monitor.step(clock.monotonic())
    assert output.getvalue() == ""
    assert (monitor.total.sent, monitor.total.failed) == (2, 1)
    clock.advance(0.5)
    monitor.step(clock.monotonic())
    line = output.getvalue()
    assert line == (
        "[     1.0s] sent 2  failed 1  avg 20.00 ms/msg  3.0 msg/s  queued 1\n"
    )
    assert [t.sent for t in monitor.per_sender] == [1, 1]
    assert [t.failed for t in monitor.per_sender] == [1, 0]


def test_one_line_per_interval_and_missed_ticks_are_skipped() -> None:
    monitor, clock, *_, output = build(interval_s=0.25)
    for _ in range(4):
        clock.advance(0.25)
        monitor.step(clock.monotonic())
    assert len(output.getvalue().splitlines()) == 4
    clock.advance(10.0)  # a stalled monitor prints once, not 40 times
    monitor.step(clock.monotonic())
    clock.advance(0.1)
    monitor.step(clock.monotonic())
    assert len(output.getvalue().splitlines()) == 5


def test_lagging_senders_are_reported_on_the_line() -> None:
    monitor, clock, _, _, _, senders, output = build()
    senders[1].lag_s = 0.75
    clock.advance(1.0)
    monitor.step(clock.monotonic())
    assert "LAGGING real time by 0.75s" in output.getvalue()


class BrokenPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_broken_output_sets_stop_instead_of_raising() -> None:
    monitor, clock, *_ = build(output=BrokenPipe())
    clock.advance(1.0)
    monitor.step(clock.monotonic())
    assert monitor.output_closed
    assert monitor._stop.is_set()  # the Event the monitor was given


def test_an_interval_below_clock_resolution_cannot_spin_the_monitor() -> None:
    monitor, clock, *_, output = build(interval_s=1e-300)
    for _ in range(3):
        clock.advance(0.5)
        monitor.step(clock.monotonic())  # returns: the next tick is computed, not stepped
    assert len(output.getvalue().splitlines()) == 3


POLICY = RetryPolicy(max_attempts=3, base_s=0.5, factor=2.0, cap_s=10.0, jitter=Jitter.FULL)


def test_a_failed_attempt_is_retried_after_the_policy_delay_until_the_last_is_dead() -> None:
    """Attempts 1 and 2 fail: retries due ``now + retry_delay_s(policy, n, rng)`` (the same
    policy function as virtual time, drawn in order from the handoff's stream); attempt 3
    fails: dead-lettered, final, and nothing queued."""
    retries: RetryHandoff[Message] = RetryHandoff(POLICY, random.Random(4))
    expected = random.Random(4)
    message = Message(1, "123-456-7890", "x")
    for attempt in (1, 2):
        due_at = retries.failed(message, 10.0 * attempt)
        assert due_at == 10.0 * attempt + retry_delay_s(POLICY, attempt, expected)
        assert retries.take_due() == [(due_at, message)]
    assert retries.failed(message, 30.0) is None
    assert retries.take_due() == []
    assert (retries.dead, retries.settled) == (1, 1)


def test_attempts_are_counted_per_message_object_and_forgotten_once_final() -> None:
    """Equal messages (user-supplied ones may repeat ids) keep separate counts; a message
    sent after a failure starts afresh if it is ever queued again."""
    retries: RetryHandoff[Message] = RetryHandoff(POLICY, random.Random(4))
    first, twin = Message(1, "123-456-7890", "x"), Message(1, "123-456-7890", "x")
    assert first == twin and first is not twin
    assert retries.failed(first, 0.0) is not None
    assert retries.failed(first, 1.0) is not None
    assert retries.failed(twin, 2.0) is not None  # twin's first failure, not first's third
    retries.succeeded(first)
    assert retries.failed(first, 3.0) is not None
    assert (retries.dead, retries.settled) == (0, 1)


def build_retrying(
    max_attempts: int = 2,
) -> tuple[Monitor[Message], VirtualClock, Queues, Queues, RetryHandoff[Message]]:
    monitor, clock, successes, failures, inbox, senders, output = build()
    retries: RetryHandoff[Message] = RetryHandoff(
        RetryPolicy(max_attempts=max_attempts, base_s=0.25, jitter=Jitter.NONE), random.Random(1)
    )
    monitor = Monitor(successes=successes, failures=failures, inbox=inbox, senders=senders,
                      clock=clock, output=output, interval_s=1.0, started_at=100.0,
                      stop=monitor._stop, retries=retries)  # reuse its Event
    return monitor, clock, successes, failures, retries


def test_the_monitor_judges_each_failure_as_it_drains_and_wakes_the_producer() -> None:
    monitor, clock, successes, failures, retries = build_retrying(max_attempts=2)
    m1, m2 = Message(1, "123-456-7890", "x"), Message(2, "123-456-7890", "y")
    failures.put(outcome(0, 0, 0.01, False)._replace(message=m1))
    successes.put(outcome(0, 1, 0.01, True)._replace(message=m2))
    clock.advance(0.5)
    monitor.step(clock.monotonic())
    assert retries.take_due() == [(100.75, m1)]  # due 0.25 s after the failure was seen
    assert retries.wake.is_set() and retries.settled == 1
    retries.wake.clear()
    failures.put(outcome(0, 0, 0.01, False)._replace(message=m1))  # its second and last attempt
    clock.advance(0.5)
    monitor.step(clock.monotonic())
    assert retries.take_due() == [] and (retries.dead, retries.settled) == (1, 2)
    assert retries.wake.is_set()
    # Progress and per-sender tallies count attempts: two failed, one sent.
    assert (monitor.total.sent, monitor.total.failed) == (1, 2)


def test_a_monitor_with_retries_wakes_the_producer_when_its_loop_ends() -> None:
    monitor, *_, retries = build_retrying()
    monitor._stop.set()  # the Event the monitor was given
    monitor.run()
    assert retries.wake.is_set()


def test_outcomes_of_sends_that_never_happened_are_tallied_neither_sent_nor_failed() -> None:
    """The durable worker's withdrawn sends (message cancelled before the send) showed as
    "failed" in every sender's line; they still reach ``on_outcome``."""
    successes: OutcomeQueue[str] = queue.SimpleQueue()
    failures: OutcomeQueue[str] = queue.SimpleQueue()
    seen: list[Outcome[str]] = []
    monitor = Monitor(successes=successes, failures=failures, inbox=queue.SimpleQueue(),
                      senders=[], clock=VirtualClock(), output=None, interval_s=1.0,
                      started_at=0.0, stop=threading.Event(), show_progress=False,
                      on_outcome=seen.append, not_sent=frozenset({"withdrawn"}))
    monitor.per_sender.append(SendTally())
    successes.put(Outcome("a", 0, 0.5, True, None))
    failures.put(Outcome("b", 0, 0.5, False, "withdrawn"))
    failures.put(Outcome("c", 0, 0.5, False, "timeout"))
    assert monitor.drain() == 3
    tally = monitor.per_sender[0]
    assert (tally.sent, tally.failed, tally.total_send_s) == (1, 1, 1.0)
    assert [o.message for o in seen] == ["a", "b", "c"]
