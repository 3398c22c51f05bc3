"""The producer and the sender pool of the threaded mode, and the inbox between them.

The producer releases messages when the model says they arrive (all at once for a burst,
each at its time for Poisson or scheduled arrivals, on real time) and, with retries on,
each failed message again once its backoff has passed (see ``schedule``: the monitor
decides retry or dead-letter, the producer puts the retry back in the inbox).

The sender pool is also the durable worker's: ``Sender`` is generic over its work item and
an optional ``transmit`` step, so the same threads that simulate sends make real ones.
"""

from __future__ import annotations

import heapq
import math
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import count, islice
from random import Random
from typing import Final, Generic, TypeVar

from sms_sim.clock import Clock, RealClock
from sms_sim.config import DEFAULT_QUEUE_SIZE, SenderConfig
from sms_sim.model import SIMULATED_FAILURE, Outcome
from sms_sim.policy import (
    FAILURE_ERRORS,
    capacity_per_s,
    latency_sampler,
    mean_service_s,
    send_classifier,
    send_slot_s,
)
from sms_sim.sim.threaded.schedule import ArrivalCursor, RetryHandoff

__all__ = [
    "DONE",
    "Inbox",
    "OutcomeQueue",
    "Producer",
    "Sender",
    "Transmit",
    "handoff_batch_size",
    "refill_pause_s",
    "drain_inbox",
]

Item = TypeVar("Item")


class _Done:
    """Type of the end-of-input sentinel (a class so the queue's item type stays precise)."""

    def __repr__(self) -> str:
        return "DONE"


DONE: Final = _Done()
# An inbox item is one message, a batch of messages handed off together (see
# ``handoff_batch_size``), or the end-of-input sentinel. The inbox is a SimpleQueue bounded
# by its producer (see ``Producer``), not a bounded queue.Queue: with hundreds of senders,
# queue.Queue's Python-level lock and conditions made the run 4x slower than the same
# senders on a plain loop (21.6x vs 5.8x the ideal time at 1000 senders, measured side by
# side), because every put and get passes a contended lock under the GIL.
Inbox = queue.SimpleQueue[Item | list[Item] | _Done]
OutcomeQueue = queue.SimpleQueue[Outcome[Item]]
# The real send step of one item: None when the provider accepted it, else why it did not.
Transmit = Callable[[Item], str | None]

DEFAULT_REFILL_PAUSE_S = 0.001
# Outcome(...) goes through NamedTuple's Python-level __new__; building the tuple directly
# gives the same object at half the cost, once per message.
_new_tuple = tuple.__new__
# Batching the handoff lets fast senders keep up, but a sender holding a batch delays the
# others at the end of a run; a batch never holds more than this much expected send time,
# so senders slower than this get messages one at a time, exactly as a shared queue would.
HANDOFF_HOLD_S = 0.001
_HANDOFF_BATCH_MAX = 256
# A producer with nothing left to release but messages still in flight waits for the
# monitor's wake-up; this bounds that wait only as a safety net.
_SETTLE_RECHECK_S = 0.5
_INF = math.inf


def refill_pause_s(senders: Sequence[SenderConfig], max_queued: int) -> float:
    """A quarter of the time the senders need to drain a full inbox, within 1-50 ms: short
    enough that they never run dry, long enough that the producer refills in bulk."""
    return min(0.05, max(0.001, max_queued / capacity_per_s(senders) / 4))


def handoff_batch_size(senders: Sequence[SenderConfig]) -> int:
    """How many messages the producer hands over per queue item for these senders."""
    slowest_s = max(mean_service_s(s) for s in senders)
    if slowest_s * _HANDOFF_BATCH_MAX <= HANDOFF_HOLD_S:
        return _HANDOFF_BATCH_MAX
    return max(1, int(HANDOFF_HOLD_S / slowest_s))


class Producer(Generic[Item]):
    """Streams messages into the inbox, never more than ``max_queued`` items waiting, then
    one ``DONE`` per consumer.

    So memory stays flat whatever the number of messages. When the inbox is full the
    producer pauses ``refill_pause_s`` on ``stop.wait`` (a stop request ends the pause at
    once) and then refills in bulk. With ``batch_size`` above 1 the messages go in lists of
    up to that many (one queue operation each). ``produced`` counts messages actually put.
    Sentinels go in even after a stop, beyond the bound: they are what releases the senders.

    Timed input (optional): ``arrivals`` gives ``(at_s, count)`` batches (seconds after
    ``started_at``, monotonic, default when ``run`` starts; see ``policy.arrival_times``), and
    each batch is released at its time, waiting on ``clock.sleep``; without it every message
    arrives at once (a burst). ``retries`` (a ``RetryHandoff``) brings failed messages back:
    each goes into the inbox once due. Arrivals and retries are released in time order, an
    arrival first on a tie, as the virtual-time mode's FIFO serves them; whatever is due at
    once goes in lists of up to ``batch_size``. With retries the sentinels wait until the
    arrivals are exhausted and every produced message is final (sent or dead). ``retried``
    counts retries put; ``retries_pending`` holds, once ``run`` has returned, the retries
    still waiting out their backoff (unsent after a stop). With neither option the loop is
    the plain burst loop above, unchanged. ``on_arrival`` (optional) is told each new
    message of a timed run and its scheduled arrival time (the SMS model's validity runs
    from it).
    """

    def __init__(
        self,
        messages: Iterable[Item],
        inbox: Inbox[Item],
        stop: threading.Event,
        *,
        num_consumers: int,
        max_queued: int = DEFAULT_QUEUE_SIZE,
        batch_size: int = 1,
        refill_pause_s: float = DEFAULT_REFILL_PAUSE_S,
        arrivals: Iterable[tuple[float, int]] | None = None,
        retries: RetryHandoff[Item] | None = None,
        clock: Clock | None = None,
        started_at: float | None = None,
        on_arrival: Callable[[Item, float], None] | None = None,
    ) -> None:
        self._messages = messages
        self._on_arrival = on_arrival
        self._inbox = inbox
        self._stop = stop
        self._num_consumers = num_consumers
        self._max_queued = max_queued
        self._batch_size = batch_size
        self._refill_pause_s = refill_pause_s
        self._arrivals = arrivals
        self._retries = retries
        self._clock = RealClock() if clock is None else clock
        self._started_at = started_at
        self._heap: list[tuple[float, int, Item]] = []  # (due_at, tiebreak, item)
        self.produced = 0
        self.retried = 0
        self.retries_pending: list[Item] = []

    def run(self) -> None:
        try:
            if self._arrivals is None and self._retries is None:
                self._run_burst()
            else:
                self._run_timed()
        finally:
            self.retries_pending = [item for _, _, item in self._heap]
            for _ in range(self._num_consumers):
                self._inbox.put(DONE)

    def _run_burst(self) -> None:
        inbox, stop = self._inbox, self._stop
        put, queued, limit, pause_s = inbox.put, inbox.qsize, self._max_queued, self._refill_pause_s
        items: Iterable[Item | list[Item]] = self._messages
        if self._batch_size > 1:
            items = _batches(self._messages, self._batch_size)
        for item in items:
            while queued() >= limit:
                if stop.wait(pause_s):
                    return
            if stop.is_set():
                return
            put(item)
            self.produced += len(item) if isinstance(item, list) else 1

    def _run_timed(self) -> None:
        clock, stop, retries, heap = self._clock, self._stop, self._retries, self._heap
        # The producer waits on the handoff's wake-up (set on every new retry or final
        # outcome, and at a stop) when there is one, else on stop itself.
        wake = stop if retries is None else retries.wake
        started_at = clock.monotonic() if self._started_at is None else self._started_at
        schedule = ArrivalCursor(self._arrivals, self._messages, started_at)
        tiebreak = count()
        while True:
            if retries is not None:
                # Cleared before looking at stop and collecting: a stop or a retry that
                # comes after this sets it again, so the sleep below cannot miss either.
                wake.clear()
            if stop.is_set():
                return
            if retries is not None:
                for due_at, item in retries.take_due():
                    heapq.heappush(heap, (due_at, next(tiebreak), item))
            if self._inbox.qsize() >= self._max_queued:
                clock.sleep(self._refill_pause_s, stop)
                continue
            now = clock.monotonic()
            if self._release_due(schedule, now):
                continue
            next_at = min(schedule.next_at, heap[0][0] if heap else _INF)
            if next_at == _INF:
                if retries is None or retries.settled >= self.produced:
                    return  # nothing will arrive and nothing can come back: end of input
                next_at = now + _SETTLE_RECHECK_S
            clock.sleep(next_at - now, wake)

    def _release_due(self, schedule: ArrivalCursor[Item], now: float) -> bool:
        """Put whatever is due at ``now`` (up to ``batch_size`` messages, in time order) in
        one inbox item; returns whether anything was put."""
        heap, size = self._heap, self._batch_size
        batch: list[Item] = []
        retried = 0
        try:
            while len(batch) < size:
                retry_at = heap[0][0] if heap else _INF
                arrival_at = schedule.next_at
                if arrival_at <= retry_at and arrival_at <= now:
                    taken = len(batch)
                    schedule.take(batch, size - len(batch))
                    if self._on_arrival is not None:
                        for item in batch[taken:]:
                            self._on_arrival(item, arrival_at)
                elif retry_at <= now:
                    batch.append(heapq.heappop(heap)[2])
                    retried += 1
                else:
                    break
        finally:
            # Also when the message source raised: what was taken goes in, so retries
            # already off the heap are not lost and ``produced`` counts what was put.
            if batch:
                self._inbox.put(batch[0] if len(batch) == 1 else batch)
                self.produced += len(batch) - retried
                self.retried += retried
        return bool(batch)


class Sender(Generic[Item]):
    """One simulated gateway connection: takes work items, "sends" each, reports the outcome.

    The item is whatever the caller sends: the simulator's ``Message``, or the durable
    worker's send job (recipient, content, idempotency key). The sender never looks inside.

    Sends are scheduled from deadlines: a send that follows directly on the previous one
    starts at the previous deadline, not when ``sleep`` happened to return, so OS oversleep
    does not accumulate. A sender that had to wait for work starts its schedule afresh.
    ``lag_s`` is how late the last send began against its deadline (the end of its simulated
    time); it grows without bound only when the host cannot keep up. A real send (below)
    comes after the simulated time, and its own time is the provider's, not lag.
    ``abandoned`` holds the items this sender took but did not send because ``stop`` was
    set (or ``abort`` cut the send short), so a caller can count them unsent or give them
    back. Counters are written only by the sender's own thread.
    An in-flight send is interrupted by ``abort`` (by default the ``stop`` Event itself).

    ``transmit`` (optional) is the real send step, called on the sender's thread once the
    simulated send time has passed and only if the simulated draw did not fail; it returns
    None for a send the provider accepted, or the provider's reason for refusing it, which the
    outcome carries (a simulated failure carries ``SIMULATED_FAILURE``). The durable worker
    plugs its transport in here.

    The SMS model (issue 14) is on when ``segments_of`` or ``valid_until`` is given or the
    config has an SMS field: a send then takes ``per_segment_s`` more per segment, its
    outcome is classified by ``policy.send_classifier`` (the error names the class, see
    ``policy.FAILURE_ERRORS``), and ``policy.send_slot_s`` says when the next send may
    start (rate limits count segments; a throttled send pauses the sender for its
    retry-after). With
    ``valid_until``, a message whose validity has ended by its start is not sent: its
    outcome is a failure with ``expired_error`` and no send time.
    """

    def __init__(
        self,
        index: int,
        config: SenderConfig,
        *,
        rng: Random,
        inbox: Inbox[Item],
        successes: OutcomeQueue[Item],
        failures: OutcomeQueue[Item],
        stop: threading.Event,
        clock: Clock,
        abort: threading.Event | None = None,
        transmit: Transmit[Item] | None = None,
        segments_of: Callable[[Item], int] | None = None,
        valid_until: Callable[[Item], float] | None = None,
        expired_error: str = "expired",
    ) -> None:
        self.index = index
        self.name = f"sender-{index}"
        self.config = config
        self._rng = rng
        self._draw_latency_s = latency_sampler(rng, config)
        self._uniform01 = rng.random
        self._failure_rate = config.failure_rate
        self._min_interval_s = config.min_interval_s
        self._monotonic = clock.monotonic
        self._inbox = inbox
        self._successes = successes
        self._failures = failures
        self._stop = stop
        self._abort = stop if abort is None else abort
        self._clock = clock
        self._transmit = transmit
        self.abandoned: list[Item] = []  # taken but not sent because of a stop
        self.taken = 0  # messages taken from the inbox (for the monitor's queued count)
        self.next_start = float("-inf")
        # When this sender's last recorded send ended (monotonic): a run's elapsed time
        # runs to the last counted outcome, not to sends interrupted and never counted.
        self.ended_at = float("-inf")
        self.lag_s = 0.0
        self.max_lag_s = 0.0
        self._sms = (segments_of is not None or valid_until is not None
                     or config.has_sms_fields)
        self._segments_of = segments_of or _one_segment
        self._valid_until = valid_until
        self._expired_error = expired_error
        self._classify = send_classifier(config)

    def step(self, message: Item, start: float) -> Outcome[Item] | None:
        """Send one message starting at monotonic time ``start``.

        Returns the outcome (already put on the success or failure queue), or None if
        ``abort`` interrupted the send, in which case nothing was recorded.
        """
        if self._sms:
            return self._step_sms(message, start)
        # Hot path (once per message): everything is read once into locals.
        latency_s = self._draw_latency_s()
        ok = self._uniform01() >= self._failure_rate
        deadline = start + latency_s
        now = self._monotonic()
        if deadline > now:
            if self._clock.sleep(deadline - now, self._abort):
                return None
            now = self._monotonic()
        lag_s = self.lag_s = now - deadline
        if lag_s > self.max_lag_s:
            self.max_lag_s = lag_s
        # A rate-limited sender may not start its next send before this one's slot ends.
        next_start = start + (latency_s if latency_s > self._min_interval_s
                              else self._min_interval_s)
        error = None if ok else SIMULATED_FAILURE
        if ok and self._transmit is not None:
            error = self._transmit(message)
            ok = error is None
            # ``_after_transmit``, inline: once per message.
            began, now = now, self._monotonic()
            ended = deadline + (now - began)
            if ended > next_start:
                next_start = ended
        self.next_start = next_start
        self.ended_at = now
        outcome = _new_tuple(Outcome, (message, self.index, now - start, ok, error))
        (self._successes if ok else self._failures).put(outcome)
        return outcome

    def _step_sms(self, message: Item, start: float) -> Outcome[Item] | None:
        """``step`` with the SMS model: segments, error classes and validity."""
        if self._valid_until is not None and start >= self._valid_until(message):
            self.ended_at = max(self.ended_at, start)
            outcome = _new_tuple(Outcome, (message, self.index, 0.0, False,
                                           self._expired_error))
            self._failures.put(outcome)
            return outcome
        k = self._segments_of(message)
        latency_s = self._draw_latency_s() + k * self.config.per_segment_s
        error_class = self._classify(self._uniform01())
        deadline = start + latency_s
        now = self._monotonic()
        if deadline > now:
            if self._clock.sleep(deadline - now, self._abort):
                return None
            now = self._monotonic()
        lag_s = self.lag_s = now - deadline
        if lag_s > self.max_lag_s:
            self.max_lag_s = lag_s
        next_start = start + send_slot_s(self.config, latency_s, k, error_class)
        error = None if error_class is None else FAILURE_ERRORS[error_class]
        if error is None and self._transmit is not None:
            error = self._transmit(message)
            now, next_start = self._after_transmit(now, deadline, next_start)
        self.next_start = next_start
        self.ended_at = now
        ok = error is None
        outcome = _new_tuple(Outcome, (message, self.index, now - start, ok, error))
        (self._successes if ok else self._failures).put(outcome)
        return outcome

    def _after_transmit(self, began: float, deadline: float,
                        next_start: float) -> tuple[float, float]:
        """The time after a real send that began at ``began`` (its simulated time having
        ended at ``deadline``), and when the next send may start: not before this one's
        slot ends (``next_start``), nor before its real send would have ended had it begun
        on time. The real send's own time is the provider's: it is neither the host's lag
        nor lost from the schedule (sends taking max(simulated, real) time instead of their
        sum, and the lag growing by the difference every send)."""
        now = self._monotonic()
        ended = deadline + (now - began)
        return now, ended if ended > next_start else next_start

    def run(self) -> None:
        inbox, stop, clock = self._inbox, self._stop, self._clock
        # A rate limit or a throttle pause can put the next start in the future. Waiting
        # for it is no send in flight: a stop ends the wait and the message stays unsent
        # (on ``abort`` alone, a graceful stop let it start after the stop).
        paced = self._min_interval_s > 0 or self._sms
        next_start: float | None = None
        while True:
            try:
                item = inbox.get_nowait()
            except queue.Empty:
                item = inbox.get()  # the producer's sentinel guarantees this returns
                next_start = None  # we were idle: the schedule restarts now
            if isinstance(item, _Done):
                return
            batch = item if isinstance(item, list) else (item,)
            self.taken += len(batch)
            for position, message in enumerate(batch):
                if stop.is_set():
                    self.abandoned.extend(batch[position:])
                    break
                if next_start is None:
                    start = max(clock.monotonic(), self.next_start)
                else:
                    start = next_start
                if paced and clock.sleep(start - clock.monotonic(), stop):
                    self.abandoned.extend(batch[position:])
                    break
                try:
                    outcome = self.step(message, start)
                except BaseException:
                    # The messages in hand are not lost silently.
                    self.abandoned.extend(batch[position:])
                    raise
                if outcome is None:
                    self.abandoned.extend(batch[position:])
                    break
                next_start = self.next_start


def _one_segment(item: object) -> int:
    return 1


def _batches(messages: Iterable[Item], size: int) -> Iterator[list[Item]]:
    iterator = iter(messages)
    while batch := list(islice(iterator, size)):
        yield batch


def drain_inbox(inbox: Inbox[Item]) -> list[Item]:
    """Empty the inbox; returns the items (not sentinels) it held, in order."""
    items: list[Item] = []
    while True:
        try:
            item = inbox.get_nowait()
        except queue.Empty:
            return items
        if isinstance(item, list):
            items.extend(item)
        elif not isinstance(item, _Done):
            items.append(item)
