"""Virtual-time mode: the same senders, policies and report on a simulated clock.

A discrete-event loop, single-threaded, with no ``queue.Queue`` or ``Event.wait`` (they use
real time). Events live in three places, none of which grows with the number of messages:

* ``busy``: a heap of ``(time, sender)`` with at most one entry per sender: when its send
  completes, or when its rate limit lets it start again;
* the next arrival (one pending time; a burst is a single batch at t = 0);
* ``retries``: a heap of failed messages waiting out their backoff (bounded by the number
  of messages in backoff at once, not by N).

Ready work waits in ``waiting``, a FIFO of batches ``[ready_at, next_id, count, attempts,
arrived_at]``, so a burst of a million messages is one entry and the loop is O(N log S).
Sends draw from each sender's own stream via the shared ``policy`` samplers in the same
order as the threaded mode (latency, failure, then backoff), so a seed fixes every outcome;
message texts never influence an outcome and are only generated when asked for.
"""

from __future__ import annotations

import heapq
import math
from array import array
import random
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Final, TextIO, cast

from sms_sim.clock import Clock, RealClock
from sms_sim.config import ArrivalKind, SimulationConfig
from sms_sim.errors import ConfigError
from sms_sim.generate import new_seed
from sms_sim.model import Message
from sms_sim.output import SafeWriter
from sms_sim.policy import latency_sampler, retry_delay_s, sender_rng
from sms_sim.report import (
    Progress,
    Report,
    SenderReport,
    StopReason,
    VirtualStats,
    format_progress,
    format_report,
)
from sms_sim.stats import LogHistogram

__all__ = ["simulate", "WALL_PROGRESS_INTERVAL_S"]

WALL_PROGRESS_INTERVAL_S = 2.0  # a long run prints a wall-clock line this often
_CHUNK_EVENTS = 1 << 15  # events between checks of stop requests and the wall clock
_INF: Final = math.inf
_ZERO_KEY: Final = -(10**9)  # LogHistogram's bucket for a zero time
_MARKS_MAX = 100_000  # the burst loop keeps at most about this many time-to-send marks
_STDOUT: Final = object()


def simulate(
    config: SimulationConfig,
    *,
    output: TextIO | None | object = _STDOUT,
    show_progress: bool = True,
    stop_requests: Callable[[], int] | None = None,
    wall_clock: Clock | None = None,
    messages: Iterable[Message] | None = None,
) -> Report:
    """Run the simulation on a virtual clock and return the same ``Report`` as ``run``.

    ``elapsed_s`` is simulated seconds; ``report.virtual`` adds the makespan, percentiles of
    time to send, utilisation and the queueing statistics. Progress lines are stamped with
    simulated time every ``monitor_interval_s`` simulated seconds, and a wall-clock line
    appears every ``WALL_PROGRESS_INTERVAL_S`` real seconds of a long run. ``duration_s`` is
    a simulated-time limit. With ``messages`` given, each new message consumes one item
    (texts materialised); outcomes are identical either way. Same seed, same report
    (apart from ``virtual.wall_s``).
    """
    stream = sys.stdout if output is _STDOUT else cast("TextIO | None", output)
    writer = SafeWriter(stream)
    wall = wall_clock or RealClock()
    requests = stop_requests or (lambda: 0)
    seed = new_seed() if config.seed is None else config.seed
    run = _VirtualRun(config, seed, writer if show_progress else SafeWriter(None), messages)
    wall_start = wall.monotonic()
    if run.fits_burst_loop():
        reason = run.burst_loop(requests, wall, wall_start)
    else:
        reason = run.loop(requests, wall, wall_start)
    wall_s = wall.monotonic() - wall_start
    if writer.closed and reason is StopReason.COMPLETED:
        reason = StopReason.OUTPUT_CLOSED
    report = run.report(reason, wall_s)
    writer.write(format_report(report))
    return report


class _VirtualRun:
    """State of one virtual-time run; ``loop`` is the hot path and is written for speed."""

    def __init__(
        self,
        config: SimulationConfig,
        seed: int,
        writer: SafeWriter,
        messages: Iterable[Message] | None,
    ) -> None:
        self.config = config
        self.seed = seed
        self.writer = writer
        self.messages: Iterator[Message] | None = None if messages is None else iter(messages)
        self.rngs = [sender_rng(seed, i) for i in range(len(config.senders))]
        self.sent_by = [0] * len(config.senders)
        self.failed_by = [0] * len(config.senders)
        self.send_s = [0.0] * len(config.senders)
        self.histogram = LogHistogram()
        # The burst loop records every ``mark_stride``-th time to send instead (they arrive
        # in order there), which is cheaper per message and exact to within a stride.
        self.marks = array("d")
        self.mark_stride = max(1, config.num_messages // _MARKS_MAX)
        self.now = 0.0
        self.produced = 0
        self.sent = 0
        self.failed = 0
        self.dead = 0
        self.failed_attempts = 0
        self.busy_s = 0.0
        self.sum_wait_s = 0.0
        self.waited = 0
        self.first_attempts = 0
        self.area = 0.0  # integral of messages-in-system over time
        self.sum_time_in_system_s = 0.0
        self.departed = 0
        self.makespan_s = 0.0
        self.unsent = 0
        self.force_general_loop = False  # tests compare the two loops

    def _quantile(self, q: float) -> float:
        """Time-to-send quantile from whichever record the loop kept."""
        if self.histogram.total or not self.marks:
            return self.histogram.quantile(q)
        index = max(0, min(len(self.marks) - 1, math.ceil(q * self.sent / self.mark_stride) - 1))
        return self.marks[index]

    def fits_burst_loop(self) -> bool:
        """Whether the specialised loop applies: a burst, one attempt, no rate limits."""
        config = self.config
        return (
            config.arrivals.kind is ArrivalKind.BURST
            and config.retry.max_attempts == 1
            and all(s.rate_limit_per_s is None for s in config.senders)
            and self.messages is None
            and not self.force_general_loop
        )

    def burst_loop(self, requests: Callable[[], int], wall: Clock, wall_start: float) -> StopReason:
        """The general loop specialised to its most common case, a burst with no retries.

        Every message arrives at t = 0 and is tried once, so the waiting queue is a counter
        and completions come in time order. Same draws in the same order as ``loop``: a
        test checks the two give identical reports.
        """
        config = self.config
        senders = config.senders
        samplers = [latency_sampler(rng, s) for rng, s in zip(self.rngs, senders, strict=True)]
        uniforms = [rng.random for rng in self.rngs]
        failure_rates = [s.failure_rate for s in senders]
        sent_by, failed_by, send_s = self.sent_by, self.failed_by, self.send_s
        heappop, heapreplace = heapq.heappop, heapq.heapreplace
        marks_append = self.marks.append
        stride = self.mark_stride
        countdown = stride
        floor = math.floor
        remaining = config.num_messages
        self.produced = remaining
        sent = started = waited = 0
        busy_s = sum_wait_s = sum_done_s = makespan = last_t = 0.0
        interval = config.monitor_interval_s
        next_tick = interval
        end_at = _INF if config.duration_s is None else config.duration_s
        next_check = min(next_tick, end_at)
        stopping = False
        reason = StopReason.COMPLETED
        next_wall_line = wall_start + WALL_PROGRESS_INTERVAL_S
        busy: list[tuple[float, int, bool, float]] = []  # (done at, sender, ok, send time)
        for i in range(min(remaining, len(senders))):
            latency = samplers[i]()
            busy.append((latency, i, uniforms[i]() >= failure_rates[i], latency))
            started += 1
        remaining -= started
        heapq.heapify(busy)
        while True:
            for _ in range(_CHUNK_EVENTS):
                if not busy:
                    failed = sum(failed_by)
                    self.sent, self.failed, self.failed_attempts = sent, failed, failed
                    self.busy_s, self.sum_wait_s, self.waited = busy_s, sum_wait_s, waited
                    # Everything arrived at t = 0, so the integral of messages present over
                    # time is the sum of completion times plus the unsent ones present to
                    # the end (the general loop integrates it event by event; a test checks
                    # the two agree).
                    self.area = sum_done_s + remaining * last_t
                    self.now, self.makespan_s = last_t, makespan
                    self.departed, self.sum_time_in_system_s = sent + failed, sum_done_s
                    self.first_attempts = started
                    self.unsent = remaining
                    return reason
                t, i, ok, latency = busy[0]
                if t >= next_check:
                    if t >= end_at and not stopping:
                        stopping, reason = True, StopReason.DURATION
                    if t >= next_tick:
                        stamp = next_tick + interval * floor((t - next_tick) / interval)
                        failed_now = sum(failed_by)
                        self._progress_line(stamp, sent, failed_now, busy_s, remaining)
                        next_tick = stamp + interval
                    next_check = next_tick if stopping else min(next_tick, end_at)
                last_t = makespan = t
                sum_done_s += t
                busy_s += latency
                send_s[i] += latency
                if ok:
                    sent += 1
                    sent_by[i] += 1
                    countdown -= 1
                    if not countdown:
                        marks_append(t)
                        countdown = stride
                else:
                    failed_by[i] += 1
                if remaining and not stopping:
                    remaining -= 1
                    started += 1
                    if t > 0:
                        sum_wait_s += t
                        waited += 1
                    latency = samplers[i]()
                    heapreplace(busy, (t + latency, i, uniforms[i]() >= failure_rates[i],
                                       latency))
                else:
                    heappop(busy)
            if not stopping and requests() > 0:
                stopping, reason = True, StopReason.SIGNAL
            if self.writer.closed and not stopping:
                stopping, reason = True, StopReason.OUTPUT_CLOSED
            next_wall_line = self._wall_line(wall, wall_start, next_wall_line, last_t, sent,
                                             remaining + len(busy))

    def _wall_line(
        self, wall: Clock, wall_start: float, due: float, simulated_s: float, sent: int,
        in_progress: int,
    ) -> float:
        """Print a wall-clock progress line if one is due; returns when the next one is."""
        now = wall.monotonic()
        if now < due:
            return due
        self.writer.write(
            f"[wall {now - wall_start:6.1f}s] simulated {simulated_s:.1f}s, {sent} sent, "
            f"{in_progress} in progress\n"
        )
        return now + WALL_PROGRESS_INTERVAL_S

    # The loop is one long function on purpose: attribute and global lookups cost more
    # than the work itself here, so everything hot is bound to locals first and the
    # totals are written back to ``self`` once, at the end.
    def loop(  # noqa: C901 - see above
        self, requests: Callable[[], int], wall: Clock, wall_start: float
    ) -> StopReason:
        config = self.config
        senders = config.senders
        policy = config.retry
        max_attempts = policy.max_attempts
        samplers = [latency_sampler(rng, s) for rng, s in zip(self.rngs, senders, strict=True)]
        uniforms = [rng.random for rng in self.rngs]
        failure_rates = [s.failure_rate for s in senders]
        min_intervals = [s.min_interval_s for s in senders]
        rate_limited = any(m > 0 for m in min_intervals)
        may_start_at = [0.0] * len(senders)
        sent_by, failed_by, send_s = self.sent_by, self.failed_by, self.send_s
        hist_counts = self.histogram.counts
        inv_log_growth = LogHistogram.INV_LOG_GROWTH
        log, floor = math.log, math.floor
        heappush, heappop, heapreplace = heapq.heappush, heapq.heappop, heapq.heapreplace
        materialise = self.messages

        arrivals = _arrival_times(config, random.Random(f"sms_sim:{self.seed}:arrivals"))
        next_arrival, arrival_count = next(arrivals, (_INF, 0))
        # (time, sender, ok, message id, attempts, arrived, send time): one entry per sender;
        # ok is None for a sender resting out its rate limit. Times are unique per sender,
        # so comparisons never reach past the sender index.
        busy: list[tuple[float, int, bool | None, int, int, float, float]] = []
        idle: deque[int] = deque(range(len(senders)))
        waiting: deque[list[float]] = deque()  # [ready_at, next_id, count, attempts, arrived]
        retries: list[tuple[float, int, int, int, float]] = []  # due, seq, id, attempts, arrived
        retry_seq = next_id = in_system = sent = produced = failed = dead = 0
        failed_attempts = first_attempts = waited = departed = 0
        busy_s = sum_wait_s = area = sum_in_system_s = makespan = last_t = 0.0
        interval = config.monitor_interval_s
        next_tick = interval
        end_at = _INF if config.duration_s is None else config.duration_s
        next_check = min(next_tick, end_at)
        stopping = False
        reason = StopReason.COMPLETED
        next_wall_line = wall_start + WALL_PROGRESS_INTERVAL_S

        def take(t: float) -> tuple[int, int, float]:
            """Remove the head of ``waiting`` at time ``t``: (message id, attempts, arrived)."""
            nonlocal first_attempts, sum_wait_s, waited
            batch = waiting[0]
            message_id = int(batch[1])
            attempts = int(batch[3])
            arrived = batch[4]
            if batch[2] == 1:
                waiting.popleft()
            else:
                batch[1] += 1
                batch[2] -= 1
            if attempts == 0:
                first_attempts += 1
                if t > arrived:
                    sum_wait_s += t - arrived
                    waited += 1
                if materialise is not None and next(materialise, None) is None:
                    raise ConfigError(f"messages ran out at message {message_id}")
            return message_id, attempts + 1, arrived

        def send(i: int, t: float) -> tuple[float, int, bool | None, int, int, float, float]:
            """Start sender ``i`` on the head of ``waiting``; returns its completion event."""
            message_id, attempts, arrived = take(t)
            latency = samplers[i]()
            ok = uniforms[i]() >= failure_rates[i]
            if rate_limited:
                may_start_at[i] = t + min_intervals[i]
            return (t + latency, i, ok, message_id, attempts, arrived, latency)

        while True:
            for _ in range(_CHUNK_EVENTS):
                t_ext = _INF if stopping else next_arrival
                if retries and not stopping and retries[0][0] < t_ext:
                    t_ext = retries[0][0]
                if busy and busy[0][0] < t_ext:
                    t, i, ok, message_id, attempts, arrived, latency = busy[0]
                    if t >= next_check:
                        if t >= end_at and not stopping:
                            stopping, reason = True, StopReason.DURATION
                        if t >= next_tick:
                            stamp = next_tick + interval * floor((t - next_tick) / interval)
                            queued = sum(int(b[2]) for b in waiting)
                            self._progress_line(stamp, sent, failed_attempts, busy_s, queued)
                            next_tick = stamp + interval
                        next_check = next_tick if stopping else min(next_tick, end_at)
                    area += in_system * (t - last_t)
                    last_t = t
                    if ok is not None:  # a send completes (None: a rate-limit rest ends)
                        makespan = t
                        busy_s += latency
                        send_s[i] += latency
                        if ok:
                            sent += 1
                            sent_by[i] += 1
                            in_system -= 1
                            departed += 1
                            spent = t - arrived
                            sum_in_system_s += spent
                            key = floor(log(spent) * inv_log_growth) if spent > 0 else _ZERO_KEY
                            hist_counts[key] = hist_counts.get(key, 0) + 1
                        else:
                            failed_by[i] += 1
                            failed_attempts += 1
                            if attempts < max_attempts:
                                due = t + retry_delay_s(policy, attempts, self.rngs[i])
                                retry_seq += 1
                                heappush(retries, (due, retry_seq, message_id, attempts, arrived))
                            else:
                                in_system -= 1
                                departed += 1
                                sum_in_system_s += t - arrived
                                if max_attempts > 1:
                                    dead += 1
                                else:
                                    failed += 1
                        if rate_limited and may_start_at[i] > t:
                            heapreplace(busy, (may_start_at[i], i, None, 0, 0, 0.0, 0.0))
                            continue
                    if waiting and not stopping:
                        # Inlined take() + send() for the common case (a first attempt from a
                        # batch of several): this line runs once per message, and the two
                        # calls would cost more than everything else it does.
                        batch = waiting[0]
                        if batch[2] > 1 and batch[3] == 0 and materialise is None:
                            message_id = int(batch[1])
                            batch[1] += 1
                            batch[2] -= 1
                            arrived = batch[4]
                            first_attempts += 1
                            if t > arrived:
                                sum_wait_s += t - arrived
                                waited += 1
                            latency = samplers[i]()
                            if rate_limited:
                                may_start_at[i] = t + min_intervals[i]
                            heapreplace(busy, (t + latency, i, uniforms[i]() >= failure_rates[i],
                                               message_id, 1, arrived, latency))
                        else:
                            heapreplace(busy, send(i, t))
                    else:
                        heappop(busy)
                        idle.append(i)
                elif t_ext < _INF:
                    t = t_ext
                    if t >= end_at:
                        stopping, reason = True, StopReason.DURATION
                        continue
                    area += in_system * (t - last_t)
                    last_t = t
                    if next_arrival <= t:
                        waiting.append([t, next_id, arrival_count, 0, t])
                        next_id += arrival_count
                        in_system += arrival_count
                        produced += arrival_count
                        self.produced = produced
                        next_arrival, arrival_count = next(arrivals, (_INF, 0))
                    else:
                        due, _, message_id, attempts, arrived = heappop(retries)
                        waiting.append([due, message_id, 1, attempts, arrived])
                    while idle and waiting:
                        heappush(busy, send(idle.popleft(), t))
                else:
                    self.sent, self.failed, self.dead = sent, failed, dead
                    self.failed_attempts, self.busy_s = failed_attempts, busy_s
                    self.first_attempts, self.waited, self.sum_wait_s = (
                        first_attempts, waited, sum_wait_s
                    )
                    self.area, self.now, self.makespan_s = area, last_t, makespan
                    self.departed, self.sum_time_in_system_s = departed, sum_in_system_s
                    self.unsent = sum(int(b[2]) for b in waiting) + len(retries)
                    return reason
            # Every chunk: honour stop requests and show that a long run is alive.
            if not stopping and requests() > 0:
                stopping, reason = True, StopReason.SIGNAL
            if self.writer.closed and not stopping:
                stopping, reason = True, StopReason.OUTPUT_CLOSED
            next_wall_line = self._wall_line(wall, wall_start, next_wall_line, last_t, sent,
                                             produced - sent - failed - dead)

    def _progress_line(
        self, stamp: float, sent: int, failed: int, busy_s: float, queued: int
    ) -> None:
        attempts = sent + failed
        progress = Progress(
            elapsed_s=stamp,
            sent=sent,
            failed=failed,
            avg_send_s=busy_s / attempts if attempts else 0.0,
            queued=queued,
            lag_s=0.0,
            simulated=True,
        )
        self.writer.write(format_progress(progress) + "\n")

    def report(self, reason: StopReason, wall_s: float) -> Report:
        attempts = self.sent + self.failed_attempts
        makespan = self.makespan_s
        hist = self.histogram
        hist.total = sum(hist.counts.values())
        p50, p95, p99 = (self._quantile(q) for q in (0.50, 0.95, 0.99))
        senders = len(self.sent_by)
        return Report(
            produced=self.produced,
            sent=self.sent,
            failed=self.failed,
            unsent=self.unsent,
            dead_lettered=self.dead,
            elapsed_s=makespan,
            avg_send_s=self.busy_s / attempts if attempts else 0.0,
            throughput_per_s=attempts / makespan if makespan > 0 else 0.0,
            senders=tuple(
                SenderReport(index=i, sent=sent, failed=failed,
                             avg_send_s=busy / (sent + failed) if sent + failed else 0.0)
                for i, (sent, failed, busy) in enumerate(
                    zip(self.sent_by, self.failed_by, self.send_s, strict=True)
                )
            ),
            seed=self.seed,
            stopped_by=reason,
            virtual=VirtualStats(
                wall_s=wall_s,
                makespan_s=makespan,
                p50_send_s=p50,
                p95_send_s=p95,
                p99_send_s=p99,
                utilisation=self.busy_s / (senders * makespan) if makespan > 0 else 0.0,
                attempts=attempts,
                failed_attempts=self.failed_attempts,
                mean_wait_s=self.sum_wait_s / self.first_attempts if self.first_attempts else 0.0,
                waited_fraction=self.waited / self.first_attempts if self.first_attempts else 0.0,
                mean_in_system=self.area / self.now if self.now > 0 else 0.0,
                mean_time_in_system_s=(
                    self.sum_time_in_system_s / self.departed if self.departed else 0.0
                ),
                arrival_rate_per_s=self.produced / self.now if self.now > 0 else 0.0,
            ),
        )


def _arrival_times(config: SimulationConfig, rng: random.Random) -> Iterator[tuple[float, int]]:
    """Yield ``(time, count)`` batches of arrivals in time order."""
    arrivals = config.arrivals
    total = config.num_messages
    if arrivals.kind is ArrivalKind.BURST:
        if total:
            yield 0.0, total
    elif arrivals.kind is ArrivalKind.POISSON:
        rate = cast(float, arrivals.rate_per_s)
        t = 0.0
        for _ in range(total):
            t += rng.expovariate(rate)
            yield t, 1
    else:
        for at_s, count in arrivals.schedule:
            if count:
                yield at_s, count
