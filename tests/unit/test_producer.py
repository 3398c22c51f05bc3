"""Producer on a scripted fake clock: arrivals at their times, retries merged in time order,
sentinels only once every message is final, stops during a backoff, the untouched burst path."""

from __future__ import annotations

import heapq
import itertools
import random
import threading
from collections.abc import Callable

import pytest

from sms_sim import DONE, VirtualClock
from sms_sim.config import Jitter, RetryPolicy
from sms_sim.sim.threaded.components import Inbox, Producer
from sms_sim.sim.threaded.schedule import RetryHandoff

START_S = 100.0


class ScriptedClock(VirtualClock):
    """A VirtualClock that plays the other threads' part in a single-threaded test.

    ``at(when, action)`` runs ``action`` once a sleep reaches ``when``; that sleep ends
    there, as a wake-up ends a real wait (the producer re-checks everything after any
    wait). A sleep that would run past ``horizon_s`` raises, so a producer that never
    finishes fails the test instead of hanging it.
    """

    def __init__(self, start_s: float = START_S, horizon_s: float = 1000.0) -> None:
        super().__init__(start_s)
        self._script: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._horizon = start_s + horizon_s

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._script, (when, next(self._order), action))

    def sleep(self, seconds: float, stop: threading.Event) -> bool:
        if stop.is_set():
            return True
        until = self.now() + max(0.0, seconds)
        if self._script and self._script[0][0] <= until:
            when, _, action = heapq.heappop(self._script)
            self.advance_to(max(when, self.now()))
            action()
            return stop.is_set()
        if until > self._horizon:
            raise AssertionError(f"the producer still waits at {until}: it never finished")
        self.advance_to(until)
        return stop.is_set()


class RecordingInbox(Inbox[str]):
    """An inbox that notes the clock's time of every put."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock
        self.log: list[tuple[float, object]] = []

    def put(self, item: object, block: bool = True, timeout: float | None = None) -> None:
        self.log.append((self.clock.monotonic() - START_S, item))
        super().put(item)  # type: ignore[arg-type]


def handoff(max_attempts: int = 3, base_s: float = 0.5) -> RetryHandoff[str]:
    return RetryHandoff(RetryPolicy(max_attempts=max_attempts, base_s=base_s, jitter=Jitter.NONE),
                        random.Random(1))


def producer(
    clock: VirtualClock,
    messages: list[str],
    *,
    arrivals: list[tuple[float, int]] | None = None,
    retries: RetryHandoff[str] | None = None,
    batch_size: int = 1,
    max_queued: int = 100,
    stop: threading.Event | None = None,
) -> tuple[Producer[str], RecordingInbox]:
    inbox = RecordingInbox(clock)
    made = Producer(messages, inbox, stop or threading.Event(), num_consumers=2,
                    max_queued=max_queued, batch_size=batch_size, refill_pause_s=0.01,
                    arrivals=arrivals, retries=retries, clock=clock, started_at=START_S)
    return made, inbox


def test_each_arrival_is_released_at_its_time_then_the_sentinels() -> None:
    clock = ScriptedClock()
    made, inbox = producer(clock, list("abcd"), arrivals=[(0.5, 1), (1.0, 2), (2.5, 1)])
    made.run()
    assert inbox.log == [(0.5, "a"), (1.0, "b"), (1.0, "c"), (2.5, "d"), (2.5, DONE),
                         (2.5, DONE)]
    assert made.produced == 4 and made.retried == 0


def test_what_is_due_at_once_goes_in_one_batch() -> None:
    clock = ScriptedClock()
    made, inbox = producer(clock, list("abcde"), arrivals=[(0.0, 1), (1.0, 4)], batch_size=3)
    made.run()
    assert inbox.log[:3] == [(0.0, "a"), (1.0, ["b", "c", "d"]), (1.0, "e")]


def test_arrivals_end_when_the_messages_run_out() -> None:
    clock = ScriptedClock()
    made, inbox = producer(clock, list("ab"), arrivals=[(1.0, 5), (2.0, 1)], batch_size=4)
    made.run()
    assert inbox.log == [(1.0, ["a", "b"]), (1.0, DONE), (1.0, DONE)]
    assert made.produced == 2


def test_retries_merge_with_arrivals_in_time_order_an_arrival_first_on_a_tie() -> None:
    """As the virtual-time FIFO serves them: a retry due at the same time as an arrival
    goes in after it. (The retries here were queued by a "monitor" before the run.)"""
    clock = ScriptedClock()
    retries = handoff()
    retries.due.put((START_S + 1.0, "r1"))
    retries.due.put((START_S + 0.25, "r0"))
    retries.due.put((START_S + 0.75, "r2"))
    retries.settled = 2  # the two arrivals below end final: only then may input end
    made, inbox = producer(clock, ["a0", "a1"], arrivals=[(0.25, 1), (1.0, 1)], retries=retries)
    made.run()
    assert inbox.log == [(0.25, "a0"), (0.25, "r0"), (0.75, "r2"), (1.0, "a1"), (1.0, "r1"),
                         (1.0, DONE), (1.0, DONE)]
    assert (made.produced, made.retried, made.retries_pending) == (2, 3, [])


def test_a_burst_with_retries_ends_input_only_once_every_message_is_final() -> None:
    """The monitor's part is scripted: at 0.25 s message "a" fails (retry due 0.5 s later,
    no jitter) and "b" is sent; at 1 s the retry of "a" is sent. The sentinels go in then,
    not when the arrivals ran out."""
    clock = ScriptedClock()
    retries = handoff()
    made, inbox = producer(clock, ["a", "b"], retries=retries, batch_size=8)

    def first_outcomes() -> None:
        assert retries.failed("a", clock.monotonic()) == START_S + 0.75
        retries.succeeded("b")
        retries.wake.set()

    def retry_sent() -> None:
        retries.succeeded("a")
        retries.wake.set()

    clock.at(START_S + 0.25, first_outcomes)
    clock.at(START_S + 1.0, retry_sent)
    made.run()
    assert inbox.log == [(0.0, ["a", "b"]), (0.75, "a"), (1.0, DONE), (1.0, DONE)]
    assert (made.produced, made.retried, retries.settled, retries.dead) == (2, 1, 2, 0)


def test_a_stop_during_a_backoff_ends_the_producer_with_the_retry_pending() -> None:
    clock = ScriptedClock()
    retries = handoff(base_s=30.0)
    stop = threading.Event()
    made, inbox = producer(clock, ["a", "b"], arrivals=[(0.0, 1), (60.0, 1)], retries=retries,
                           stop=stop)

    def fail_a() -> None:
        retries.failed("a", clock.monotonic())
        retries.wake.set()

    def stop_run() -> None:  # as run() does: stop, then wake whoever waits on the handoff
        stop.set()
        retries.wake.set()

    clock.at(START_S + 0.1, fail_a)
    clock.at(START_S + 1.0, stop_run)
    made.run()
    assert inbox.log == [(0.0, "a"), (1.0, DONE), (1.0, DONE)]
    assert made.produced == 1 and made.retries_pending == ["a"]


class StopOnClear(threading.Event):
    """The handoff's wake-up, through which a stop arrives (stop set, then the wake-up)
    just before the producer clears it: the lost wake-up the loop's order must rule out."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__()
        self._stop = stop
        self.armed = False

    def clear(self) -> None:
        if self.armed and not self._stop.is_set():
            self._stop.set()
            self.set()
        super().clear()


def test_a_stop_arriving_as_the_wake_up_is_cleared_ends_the_producer_at_once() -> None:
    """The old loop looked at stop, then cleared the wake-up: a stop in between was
    erased and the producer slept out the next arrival (a minute here) before ending."""
    clock = ScriptedClock()
    retries = handoff()
    stop = threading.Event()
    wake = retries.wake = StopOnClear(stop)
    made, inbox = producer(clock, ["a", "b"], arrivals=[(0.0, 1), (60.0, 1)], retries=retries,
                           stop=stop)

    def arm() -> None:
        wake.armed = True

    clock.at(START_S + 1.0, arm)
    made.run()
    assert inbox.log == [(0.0, "a"), (1.0, DONE), (1.0, DONE)]
    assert made.produced == 1


def test_the_bound_holds_for_timed_arrivals_and_a_stop_ends_the_refill_wait() -> None:
    clock = ScriptedClock()
    stop = threading.Event()
    made, inbox = producer(clock, list("abcdef"), arrivals=[(0.0, 6)], max_queued=3, stop=stop)
    clock.at(START_S + 0.5, stop.set)
    made.run()
    assert [item for _, item in inbox.log] == ["a", "b", "c", DONE, DONE]
    assert made.produced == 3


class UntouchableClock(VirtualClock):
    def monotonic(self) -> float:
        raise AssertionError("the burst path read the clock")

    def sleep(self, seconds: float, stop: threading.Event) -> bool:
        raise AssertionError("the burst path slept on the clock")


def test_a_burst_without_retries_keeps_the_plain_loop() -> None:
    """No arrivals, no retries: the hot loop of before, which never reads the clock."""
    clock = UntouchableClock()
    inbox = RecordingInbox(VirtualClock(START_S))
    made = Producer(list("abcde"), inbox, threading.Event(), num_consumers=1, batch_size=2,
                    clock=clock)
    made.run()
    assert [item for _, item in inbox.log] == [["a", "b"], ["c", "d"], ["e"], DONE]


def test_a_handoff_needs_at_least_two_attempts() -> None:
    with pytest.raises(ValueError, match="max_attempts >= 2"):
        RetryHandoff(RetryPolicy(max_attempts=1), random.Random(1))
