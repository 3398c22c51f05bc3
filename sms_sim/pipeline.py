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

import logging
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from random import Random
from typing import Final, TextIO, cast

from sms_sim.clock import Clock, RealClock
from sms_sim.config import SenderConfig, SimulationConfig
from sms_sim.generate import generate_messages, new_seed
from sms_sim.model import Message, Outcome
from sms_sim.policy import latency_sampler, sender_rng
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
Inbox = queue.Queue[Message | _Done]
OutcomeQueue = queue.SimpleQueue[Outcome]

_PUT_TIMEOUT_S = 0.05  # how often a producer blocked on a full queue re-checks stop
_MONITOR_DRAIN_S = 0.05  # outcome backlog (and so memory) is bounded by this much sending
_JOIN_SLICE_S = 0.05  # granularity at which joins notice a second stop request
DEFAULT_GRACE_S = 5.0
# After the grace period (or a second stop request) in-flight sends are aborted; threads
# then have this long to exit before they are reported alive.
_ABORT_BUDGET_S = 2.0


class Producer:
    """Streams messages into a bounded inbox, then one ``DONE`` per consumer.

    ``produced`` counts messages actually put. A put blocked on a full queue re-checks
    ``stop`` every ``_PUT_TIMEOUT_S``, so a stop request never leaves it stuck. Sentinels are
    put even after a stop (they are what releases the consumers); a consumer or ``run``
    draining the queue is what makes room for them.
    """

    def __init__(
        self,
        messages: Iterable[Message],
        inbox: Inbox,
        stop: threading.Event,
        *,
        num_consumers: int,
    ) -> None:
        self._messages = messages
        self._inbox = inbox
        self._stop = stop
        self._num_consumers = num_consumers
        self.produced = 0

    def run(self) -> None:
        put, stop = self._inbox.put, self._stop
        try:
            for message in self._messages:
                while True:
                    if stop.is_set():
                        return
                    try:
                        put(message, timeout=_PUT_TIMEOUT_S)
                        break
                    except queue.Full:
                        continue
                self.produced += 1
        finally:
            for _ in range(self._num_consumers):
                while True:
                    try:
                        put(DONE, timeout=_PUT_TIMEOUT_S)
                        break
                    except queue.Full:
                        continue


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
        self._inbox = inbox
        self._successes = successes
        self._failures = failures
        self._stop = stop
        self._abort = stop if abort is None else abort
        self._clock = clock
        self._transmit = transmit
        self.unsent = 0
        self.next_start = float("-inf")
        self.lag_s = 0.0
        self.max_lag_s = 0.0

    def step(self, message: Message, start: float) -> Outcome | None:
        """Send one message starting at monotonic time ``start``.

        Returns the outcome (already put on the success or failure queue), or None if
        ``abort`` interrupted the send, in which case nothing was recorded.
        """
        clock = self._clock
        latency_s = self._draw_latency_s()
        failed = self._rng.random() < self.config.failure_rate
        deadline = start + latency_s
        if clock.sleep(deadline - clock.monotonic(), self._abort):
            return None
        if not failed and self._transmit is not None:
            failed = not self._transmit(message)
        end = clock.monotonic()
        # A rate-limited sender may not start its next send before this one's slot ends.
        self.next_start = start + max(latency_s, self.config.min_interval_s)
        self.lag_s = end - deadline
        if self.lag_s > self.max_lag_s:
            self.max_lag_s = self.lag_s
        outcome = Outcome(message, self.index, end - start, not failed)
        (self._failures if failed else self._successes).put(outcome)
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
            try:
                if isinstance(item, _Done):
                    return
                if stop.is_set():
                    self.unsent += 1
                    continue
                if next_start is None:
                    start = max(clock.monotonic(), self.next_start)
                else:
                    start = next_start
                try:
                    outcome = self.step(item, start)
                except BaseException:
                    self.unsent += 1  # the message in hand is not lost silently
                    raise
                if outcome is None:
                    self.unsent += 1
                else:
                    next_start = self.next_start
            finally:
                inbox.task_done()


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
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self._successes = successes
        self._failures = failures
        self._inbox = inbox
        self._senders = senders
        self._clock = clock
        self._output = output
        self._redraw = output is not None and _is_terminal(output)
        self._interval_s = interval_s
        self._started_at = started_at
        self._next_tick = started_at + interval_s
        self._stop = stop
        self._show_progress = show_progress
        self._on_outcome = on_outcome
        self.total = SendTally()
        self.per_sender = [SendTally() for _ in senders]
        self.output_closed = False

    def drain(self) -> int:
        """Move every outcome waiting on both queues into the tallies; returns how many."""
        moved = 0
        total, per_sender, hook = self.total, self.per_sender, self._on_outcome
        for source in (self._successes, self._failures):
            get = source.get_nowait
            while True:
                try:
                    outcome = get()
                except queue.Empty:
                    break
                total.add(outcome)
                per_sender[outcome.sender].add(outcome)
                moved += 1
                if hook is not None:
                    hook(outcome)
        return moved

    def progress(self, now: float) -> Progress:
        return Progress(
            elapsed_s=now - self._started_at,
            sent=self.total.sent,
            failed=self.total.failed,
            avg_send_s=self.total.avg_send_s,
            queued=self._inbox.qsize(),
            lag_s=max((s.lag_s for s in self._senders), default=0.0),
        )

    def step(self, now: float) -> None:
        """Drain, and print a progress line if a tick is due (missed ticks are skipped)."""
        self.drain()
        if now >= self._next_tick:
            if self._show_progress:
                self._write_progress(self.progress(now))
            while self._next_tick <= now:
                self._next_tick += self._interval_s

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

    def _write(self, text: str) -> None:
        if self._output is None or self.output_closed:
            return
        try:
            self._output.write(text)
            self._output.flush()
        except (BrokenPipeError, ValueError):  # ValueError: the stream was closed
            self.output_closed = True
            self._stop.set()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


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
    inbox: Inbox = queue.Queue(maxsize=config.queue_size)
    successes: OutcomeQueue = queue.SimpleQueue()
    failures: OutcomeQueue = queue.SimpleQueue()
    source = generate_messages(config.num_messages, seed) if messages is None else messages
    producer = Producer(source, inbox, stop, num_consumers=len(config.senders))
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

    # Join order matters: senders first (they may still put outcomes), then the producer
    # (draining the inbox makes room for its sentinels), then the monitor, then one last
    # drain of the outcome queues so nothing put after the monitor's final pass is missed.
    grace_until = clock.monotonic() + grace_s
    join_until = grace_until + _ABORT_BUDGET_S
    left_in_queue = 0

    def escalate() -> None:
        if not abort.is_set() and (requests() >= 2 or clock.monotonic() >= grace_until):
            abort.set()

    def drain_inbox() -> None:
        nonlocal left_in_queue
        escalate()
        left_in_queue += _drain_inbox(inbox)

    alive = _join(sender_threads, clock, join_until, between=escalate)
    alive += _join([producer_thread], clock, join_until, between=drain_inbox)
    drain_inbox()
    alive += _join([monitor_thread], clock, join_until, between=escalate)
    monitor.drain()
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
        max_lag_s=max((s.max_lag_s for s in senders), default=0.0),
        threads_alive=tuple(alive),
    )
    monitor.write_report(report)
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
        inbox.task_done()
        if not isinstance(item, _Done):
            messages += 1
