"""Monitor on a fake clock: drain, tick timing, line content, lag warning, final report."""

from __future__ import annotations

import io
import queue
import random
import threading

from sms_sim import Message, Monitor, Outcome, SenderConfig, VirtualClock
from sms_sim.sim.threaded.components import Inbox, OutcomeQueue, Sender


def build(
    interval_s: float = 1.0, output: io.StringIO | None = None
) -> tuple[Monitor[Message], VirtualClock, OutcomeQueue[Message], OutcomeQueue[Message], Inbox[Message], list[Sender[Message]], io.StringIO]:
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
    assert monitor._stop.is_set()  # noqa: SLF001 - the Event the monitor was given


def test_an_interval_below_clock_resolution_cannot_spin_the_monitor() -> None:
    monitor, clock, *_, output = build(interval_s=1e-300)
    for _ in range(3):
        clock.advance(0.5)
        monitor.step(clock.monotonic())  # returns: the next tick is computed, not stepped
    assert len(output.getvalue().splitlines()) == 3
