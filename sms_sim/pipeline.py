"""Real-time mode: a producer thread, N sender threads and a monitor thread.

Shutdown protocol (the part that makes "nothing lost, nothing counted twice" hold):

* One ``stop`` Event is the only shutdown signal. Setting it stops the producer from putting
  more messages, stops senders from starting new sends and ends the monitor loop. A send
  already in flight finishes (the grace period) unless ``abort`` is set: ``run`` sets it on a
  second stop request or when the grace period runs out, and the interrupted message is
  counted unsent.
* The producer always ends by putting one ``_DONE`` sentinel per sender, after its last
  message, so a sender's blocking ``get`` always returns. Once ``stop`` is set a sender still
  takes items but counts each message as unsent instead of sending it, until its sentinel.
* Each count has one owner: the producer counts what it put, the monitor counts outcomes, each
  sender counts what it abandoned, and ``run`` counts what is left in the queue. The report
  checks the identity across those independent counts rather than deriving one from the others.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from random import Random
from typing import Final, TextIO, cast

from sms_sim.clock import Clock, RealClock
from sms_sim.config import DEFAULT_QUEUE_SIZE, SenderConfig, SimulationConfig
from sms_sim.generate import generate_messages, new_seed
from sms_sim.model import Message, Outcome
from sms_sim.output import SafeWriter
from sms_sim.policy import capacity_per_s, latency_sampler, mean_service_s, sender_rng
from sms_sim.report import (
    Progress,
    Report,
    SenderReport,
    StopReason,
    format_progress,
    format_report,
)
from sms_sim.stats import SendTally

__all__ = [
    "Producer",
    "Sender",
    "Monitor",
    "run",
    "DONE",
    "Inbox",
    "OutcomeQueue",
    "DEFAULT_GRACE_S",
]

log = logging.getLogger(__name__)


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
Inbox = queue.SimpleQueue[Message | list[Message] | _Done]
OutcomeQueue = queue.SimpleQueue[Outcome]

DEFAULT_REFILL_PAUSE_S = 0.001
# Outcome(...) goes through NamedTuple's Python-level __new__; building the tuple directly
# gives the same object at half the cost, once per message.
_new_tuple = tuple.__new__
_MONITOR_DRAIN_S = 0.01  # outcome backlog (and so memory) is bounded by this much sending
_JOIN_SLICE_S = 0.05  # granularity at which joins notice a second stop request
DEFAULT_GRACE_S = 5.0
# After the grace period (or a second stop request) in-flight sends are aborted; threads
# then have this long to exit before they are reported alive.
_ABORT_BUDGET_S = 2.0
# Batching the handoff lets fast senders keep up, but a sender holding a batch delays the
# others at the end of a run; a batch never holds more than this much expected send time,
# so senders slower than this get messages one at a time, exactly as a shared queue would.
HANDOFF_HOLD_S = 0.001
_HANDOFF_BATCH_MAX = 256


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


class Producer:
    """Streams messages into the inbox, never more than ``max_queued`` items waiting, then
    one ``DONE`` per consumer.

    So memory stays flat whatever the number of messages. When the inbox is full the
    producer pauses ``refill_pause_s`` on ``stop.wait`` (a stop request ends the pause at
    once) and then refills in bulk. With ``batch_size`` above 1 the messages go in lists of
    up to that many (one queue operation each). ``produced`` counts messages actually put.
    Sentinels go in even after a stop, beyond the bound: they are what releases the senders.
    """

    def __init__(
        self,
        messages: Iterable[Message],
        inbox: Inbox,
        stop: threading.Event,
        *,
        num_consumers: int,
        max_queued: int = DEFAULT_QUEUE_SIZE,
        batch_size: int = 1,
        refill_pause_s: float = DEFAULT_REFILL_PAUSE_S,
    ) -> None:
        self._messages = messages
        self._inbox = inbox
        self._stop = stop
        self._num_consumers = num_consumers
        self._max_queued = max_queued
        self._batch_size = batch_size
        self._refill_pause_s = refill_pause_s
        self.produced = 0

    def run(self) -> None:
        inbox, stop = self._inbox, self._stop
        put, queued, limit, pause_s = inbox.put, inbox.qsize, self._max_queued, self._refill_pause_s
        items: Iterable[Message | list[Message]] = self._messages
        if self._batch_size > 1:
            items = _batches(self._messages, self._batch_size)
        try:
            for item in items:
                while queued() >= limit:
                    if stop.wait(pause_s):
                        return
                if stop.is_set():
                    return
                put(item)
                self.produced += len(item) if isinstance(item, list) else 1
        finally:
            for _ in range(self._num_consumers):
                put(DONE)


class Sender:
    """One simulated gateway connection: takes messages, "sends" each, reports the outcome.

    Sends are scheduled from deadlines: a send that follows directly on the previous one
    starts at the previous deadline, not when ``sleep`` happened to return, so OS oversleep
    does not accumulate. A sender that had to wait for work starts its schedule afresh.
    ``lag_s`` is how late the last send finished against its deadline; it grows without bound
    only when the host cannot keep up. ``unsent`` counts messages this sender took but did
    not send because ``stop`` was set. Counters are written only by the sender's own thread.
    An in-flight send is interrupted by ``abort`` (by default the ``stop`` Event itself).

    ``transmit`` (optional) is the real send step, called on the sender's thread once the
    simulated send time has passed and only if the simulated draw did not fail; it returns
    False for a send the provider refused. The durable worker plugs its transport in here.
    """

    def __init__(
        self,
        index: int,
        config: SenderConfig,
        *,
        rng: Random,
        inbox: Inbox,
        successes: OutcomeQueue,
        failures: OutcomeQueue,
        stop: threading.Event,
        clock: Clock,
        abort: threading.Event | None = None,
        transmit: Callable[[Message], bool] | None = None,
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
        self.unsent = 0
        self.taken = 0  # messages taken from the inbox (for the monitor's queued count)
        self.next_start = float("-inf")
        self.lag_s = 0.0
        self.max_lag_s = 0.0

    def step(self, message: Message, start: float) -> Outcome | None:
        """Send one message starting at monotonic time ``start``.

        Returns the outcome (already put on the success or failure queue), or None if
        ``abort`` interrupted the send, in which case nothing was recorded.
        """
        # Hot path (once per message): everything is read once into locals.
        latency_s = self._draw_latency_s()
        ok = self._uniform01() >= self._failure_rate
        deadline = start + latency_s
        now = self._monotonic()
        if deadline > now:
            if self._clock.sleep(deadline - now, self._abort):
                return None
            now = self._monotonic()
        if ok and self._transmit is not None:
            ok = self._transmit(message)
            now = self._monotonic()
        # A rate-limited sender may not start its next send before this one's slot ends.
        self.next_start = start + (latency_s if latency_s > self._min_interval_s
                                   else self._min_interval_s)
        lag_s = self.lag_s = now - deadline
        if lag_s > self.max_lag_s:
            self.max_lag_s = lag_s
        outcome = _new_tuple(Outcome, (message, self.index, now - start, ok))
        (self._successes if ok else self._failures).put(outcome)
        return outcome

    def run(self) -> None:
        inbox, stop, clock = self._inbox, self._stop, self._clock
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
                    self.unsent += len(batch) - position
                    break
                if next_start is None:
                    start = max(clock.monotonic(), self.next_start)
                else:
                    start = next_start
                try:
                    outcome = self.step(message, start)
                except BaseException:
                    # The messages in hand are not lost silently.
                    self.unsent += len(batch) - position
                    raise
                if outcome is None:
                    self.unsent += len(batch) - position
                    break
                next_start = self.next_start


class Monitor:
    """Drains outcomes into tallies and writes a progress line every ``interval_s``.

    The monitor is the only writer of its tallies. ``step(now)`` is one unit of work and is
    what tests drive with a ``VirtualClock``; ``run`` loops it until ``stop``. A write to
    ``output`` that fails (a closed pipe) sets ``stop``: nobody is reading any more.
    ``on_outcome`` (optional) sees every outcome as it is drained, on the draining thread;
    the durable worker uses it to hand results back to the store.
    """

    def __init__(
        self,
        *,
        successes: OutcomeQueue,
        failures: OutcomeQueue,
        inbox: Inbox,
        senders: Sequence[Sender],
        clock: Clock,
        output: TextIO | None,
        interval_s: float,
        started_at: float,
        stop: threading.Event,
        show_progress: bool = True,
        check_pace: bool = False,
        on_outcome: Callable[[Outcome], None] | None = None,
        queued: Callable[[], int] | None = None,
    ) -> None:
        self._successes = successes
        self._failures = failures
        self._inbox = inbox
        self._senders = senders
        self._clock = clock
        self._writer = SafeWriter(output)
        self._redraw = self._writer.is_terminal
        self._interval_s = interval_s
        self._started_at = started_at
        self._next_tick = started_at + interval_s
        self._stop = stop
        self._show_progress = show_progress
        self._on_outcome = on_outcome
        self._queued = inbox.qsize if queued is None else queued
        self.per_sender = [SendTally() for _ in senders]
        self.max_behind_s = 0.0
        means = [mean_service_s(s.config) for s in senders]
        # Sends per second the senders would complete if the host kept up perfectly, and
        # the slack a healthy run may trail that by (one send of the slowest sender).
        saturated = check_pace and min(means, default=0) > 0
        self._capacity_per_s = sum(1 / m for m in means) if saturated else math.inf
        self._slack_s = 2 * max(means, default=0.0)

    def behind_s(self, now: float) -> float:
        """How far completed sends trail the senders' ideal pace, beyond normal slack.

        Catches what a sender's own deadline lag cannot: senders starved by a producer or a
        GIL that cannot keep up restart their schedules and look punctual, but the run as a
        whole falls behind ``attempts / capacity``. Only meaningful when the senders should
        never run out of work (a burst), so it is off unless ``check_pace`` was given, and
        0.0 when the senders take no time.
        """
        if math.isinf(self._capacity_per_s):
            return 0.0
        elapsed = now - self._started_at
        behind = elapsed - self.total.attempts / self._capacity_per_s - self._slack_s
        self.max_behind_s = max(self.max_behind_s, behind)
        return max(0.0, behind)

    @property
    def total(self) -> SendTally:
        """All senders' tallies summed (computed on demand: drain is the hot path)."""
        tallies = self.per_sender
        return SendTally(
            sent=sum(t.sent for t in tallies),
            failed=sum(t.failed for t in tallies),
            total_send_s=sum(t.total_send_s for t in tallies),
        )

    def drain(self) -> int:
        """Move every outcome waiting on both queues into the tallies; returns how many."""
        moved = 0
        per_sender, hook = self.per_sender, self._on_outcome
        for source in (self._successes, self._failures):
            get = source.get_nowait
            while True:
                try:
                    outcome = get()
                except queue.Empty:
                    break
                _, sender, duration_s, ok = outcome
                tally = per_sender[sender]
                if ok:
                    tally.sent += 1
                else:
                    tally.failed += 1
                tally.total_send_s += duration_s
                moved += 1
                if hook is not None:
                    hook(outcome)
        return moved

    def progress(self, now: float) -> Progress:
        total = self.total
        return Progress(
            elapsed_s=now - self._started_at,
            sent=total.sent,
            failed=total.failed,
            avg_send_s=total.avg_send_s,
            queued=self._queued(),
            lag_s=max(self.behind_s(now), max((s.lag_s for s in self._senders), default=0.0)),
        )

    def step(self, now: float) -> None:
        """Drain, and print a progress line if a tick is due (missed ticks are skipped)."""
        self.drain()
        if now >= self._next_tick:
            if self._show_progress:
                self._write_progress(self.progress(now))
            # The next tick after now, computed (not stepped) so that an interval below the
            # clock's resolution cannot spin here.
            ticks = math.floor((now - self._started_at) / self._interval_s) + 1
            self._next_tick = max(self._started_at + ticks * self._interval_s,
                                  math.nextafter(now, math.inf))

    def run(self) -> None:
        clock, stop = self._clock, self._stop
        while not stop.is_set():
            now = clock.monotonic()
            self.step(now)
            if clock.sleep(min(self._next_tick - now, _MONITOR_DRAIN_S), stop):
                break

    def write_report(self, report: Report) -> None:
        """Write the final report (after ending any in-place progress line)."""
        self._write(("\n" if self._redraw else "") + format_report(report))

    def _write_progress(self, progress: Progress) -> None:
        line = format_progress(progress)
        self._write(f"\r\x1b[K{line}" if self._redraw else line + "\n")

    @property
    def output_closed(self) -> bool:
        return self._writer.closed

    def _write(self, text: str) -> None:
        if not self._writer.write(text):
            self._stop.set()


class _ThreadFailures:
    """Collects the names of threads that died of an exception; sets ``stop`` on each."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._lock = threading.Lock()
        self.names: list[str] = []

    def guard(self, target: Callable[[], None], name: str) -> Callable[[], None]:
        def guarded() -> None:
            try:
                target()
            except Exception:
                log.exception("thread %s failed; stopping the run", name)
                with self._lock:
                    self.names.append(name)
                self._stop.set()

        return guarded


_STDOUT: Final = object()  # "sys.stdout at call time", so redirecting stdout later works


def run(
    config: SimulationConfig,
    *,
    output: TextIO | None | object = _STDOUT,
    clock: Clock | None = None,
    stop_requests: Callable[[], int] | None = None,
    grace_s: float = DEFAULT_GRACE_S,
    messages: Iterable[Message] | None = None,
    show_progress: bool = True,
) -> Report:
    """Run the simulation in real time on threads and return its report.

    Progress lines (unless ``show_progress`` is False) and the final report go to
    ``output`` (``None`` for silence).
    ``stop_requests`` is polled by the joining thread: one request stops the run gracefully
    (sends in flight get up to ``grace_s`` to finish), a second interrupts them at once; the
    report is produced and every message accounted for either way. ``messages`` replaces
    the generated stream (its length is then what ``produced`` counts). Blocks until the run
    ends; never raises for a simulated failure, and worker-thread exceptions end the run
    with ``StopReason.ERROR``.
    """
    clock = clock or RealClock()
    requests = stop_requests or (lambda: 0)
    stream = sys.stdout if output is _STDOUT else cast("TextIO | None", output)
    seed = new_seed() if config.seed is None else config.seed

    stop = threading.Event()
    abort = threading.Event()
    inbox: Inbox = queue.SimpleQueue()
    successes: OutcomeQueue = queue.SimpleQueue()
    failures: OutcomeQueue = queue.SimpleQueue()
    source = generate_messages(config.num_messages, seed) if messages is None else messages
    batch_size = handoff_batch_size(config.senders)
    producer = Producer(source, inbox, stop, num_consumers=len(config.senders),
                        # The bound is in messages: a batch counts as its size.
                        max_queued=max(2 * len(config.senders), config.queue_size // batch_size),
                        batch_size=batch_size,
                        refill_pause_s=refill_pause_s(config.senders, config.queue_size))
    senders = [
        Sender(
            index,
            sender_config,
            rng=sender_rng(seed, index),
            inbox=inbox,
            successes=successes,
            failures=failures,
            stop=stop,
            clock=clock,
            abort=abort,
        )
        for index, sender_config in enumerate(config.senders)
    ]
    started_at = clock.monotonic()
    monitor = Monitor(
        successes=successes,
        failures=failures,
        inbox=inbox,
        senders=senders,
        clock=clock,
        output=stream,
        interval_s=config.monitor_interval_s,
        started_at=started_at,
        stop=stop,
        show_progress=show_progress,
        check_pace=True,  # a burst: idle senders mean the host is too slow to feed them
        # In messages: an inbox item may be a batch of them.
        queued=lambda: max(0, producer.produced - sum(s.taken for s in senders)),
    )
    failed_threads = _ThreadFailures(stop)
    sender_threads = [
        threading.Thread(target=failed_threads.guard(s.run, s.name), name=s.name, daemon=True)
        for s in senders
    ]
    producer_thread = threading.Thread(
        target=failed_threads.guard(producer.run, "producer"), name="producer", daemon=True
    )
    monitor_thread = threading.Thread(
        target=failed_threads.guard(monitor.run, "monitor"), name="monitor", daemon=True
    )
    for thread in (monitor_thread, *sender_threads, producer_thread):
        thread.start()

    reason = _wait_for_end(
        config, clock, started_at, requests, failed_threads, monitor, producer_thread,
        sender_threads,
    )
    elapsed_s = clock.monotonic() - started_at
    stop.set()

    # Join order matters: senders first (they may still put outcomes), then the producer,
    # then count what is left in the inbox, then the monitor, then one last drain of the
    # outcome queues so nothing put after the monitor's final pass is missed.
    grace_until = clock.monotonic() + grace_s
    join_until = grace_until + _ABORT_BUDGET_S

    def escalate() -> None:
        if not abort.is_set() and (requests() >= 2 or clock.monotonic() >= grace_until):
            abort.set()

    alive = _join(sender_threads, clock, join_until, between=escalate)
    alive += _join([producer_thread], clock, join_until, between=escalate)
    left_in_queue = _drain_inbox(inbox)
    alive += _join([monitor_thread], clock, join_until, between=escalate)
    monitor.drain()
    monitor.behind_s(started_at + elapsed_s)  # the final pace check counts towards max lag
    if alive:
        log.warning("threads still running after the grace period: %s", ", ".join(alive))

    total = monitor.total
    unsent = left_in_queue + sum(s.unsent for s in senders)
    if alive:
        # A live sender may hold one message it neither sent nor counted; say so rather
        # than let it vanish from the totals.
        unsent = max(unsent, producer.produced - total.sent - total.failed)
    if monitor.output_closed and reason is StopReason.COMPLETED:
        reason = StopReason.OUTPUT_CLOSED
    report = Report(
        produced=producer.produced,
        sent=total.sent,
        failed=total.failed,
        unsent=unsent,
        elapsed_s=elapsed_s,
        avg_send_s=total.avg_send_s,
        throughput_per_s=total.attempts / elapsed_s if elapsed_s > 0 else 0.0,
        senders=tuple(
            SenderReport(index=i, sent=t.sent, failed=t.failed, avg_send_s=t.avg_send_s)
            for i, t in enumerate(monitor.per_sender)
        ),
        seed=seed,
        stopped_by=reason,
        max_lag_s=max(monitor.max_behind_s, max((s.max_lag_s for s in senders), default=0.0)),
        threads_alive=tuple(alive),
    )
    monitor.write_report(report)
    if monitor.output_closed and report.stopped_by is StopReason.COMPLETED:
        # The report itself could not be written (a full disk, a closed pipe): say so.
        report = dataclasses.replace(report, stopped_by=StopReason.OUTPUT_CLOSED)
    return report


def _wait_for_end(
    config: SimulationConfig,
    clock: Clock,
    started_at: float,
    requests: Callable[[], int],
    failed_threads: _ThreadFailures,
    monitor: Monitor,
    producer_thread: threading.Thread,
    sender_threads: Sequence[threading.Thread],
) -> StopReason:
    """Block until the run should end and say why; joins senders so completion is seen at once."""
    end_at = None if config.duration_s is None else started_at + config.duration_s
    pending = list(sender_threads)
    while True:
        if failed_threads.names:
            return StopReason.ERROR
        if monitor.output_closed:
            return StopReason.OUTPUT_CLOSED
        if requests() > 0:
            return StopReason.SIGNAL
        now = clock.monotonic()
        if end_at is not None and now >= end_at:
            return StopReason.DURATION
        while pending and not pending[0].is_alive():
            pending.pop(0)
        if not pending and not producer_thread.is_alive():
            return StopReason.COMPLETED
        timeout = _JOIN_SLICE_S if end_at is None else max(0.0, min(_JOIN_SLICE_S, end_at - now))
        (pending[0] if pending else producer_thread).join(timeout)


def _join(
    threads: Sequence[threading.Thread],
    clock: Clock,
    until: float,
    *,
    between: Callable[[], None],
) -> list[str]:
    """Join each thread until the shared deadline ``until``; names of threads left alive.

    ``between`` runs before every slice of waiting (to escalate a stop, or to drain).
    """
    for thread in threads:
        while thread.is_alive():
            left = until - clock.monotonic()
            if left <= 0:
                break
            between()
            thread.join(min(_JOIN_SLICE_S, left))
    return [t.name for t in threads if t.is_alive()]


def _drain_inbox(inbox: Inbox) -> int:
    """Empty the inbox; returns how many messages (not sentinels) it held."""
    messages = 0
    while True:
        try:
            item = inbox.get_nowait()
        except queue.Empty:
            return messages
        if isinstance(item, list):
            messages += len(item)
        elif not isinstance(item, _Done):
            messages += 1


def _batches(messages: Iterable[Message], size: int) -> Iterator[list[Message]]:
    iterator = iter(messages)
    while batch := list(islice(iterator, size)):
        yield batch
