"""The general virtual-time event loop: any arrivals, retries, rate limits, materialised
messages. See ``run`` for the event structures and why none grows with N."""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable

from sms_sim.clock import Clock
from sms_sim.errors import ConfigError
from sms_sim.policy import arrival_times, arrivals_rng, latency_sampler, retry_delay_s
from sms_sim.report import StopReason
from sms_sim.sim.virtual.state import CHUNK_EVENTS, VirtualRun

__all__ = ["run_general"]

_INF = math.inf


# The loop is one long function on purpose: attribute and global lookups cost more
# than the work itself here, so everything hot is bound to locals first and the
# totals are written back to ``run`` once, at the end.
def run_general(  # noqa: C901 - see above
    run: VirtualRun, requests: Callable[[], int], wall: Clock, wall_start: float
) -> StopReason:
    config = run.config
    senders = config.senders
    policy = config.retry
    max_attempts = policy.max_attempts
    samplers = [latency_sampler(rng, s) for rng, s in zip(run.rngs, senders, strict=True)]
    uniforms = [rng.random for rng in run.rngs]
    failure_rates = [s.failure_rate for s in senders]
    min_intervals = [s.min_interval_s for s in senders]
    rate_limited = any(m > 0 for m in min_intervals)
    may_start_at = [0.0] * len(senders)
    sent_by, failed_by, send_s = run.sent_by, run.failed_by, run.send_s
    record = run.record
    floor = math.floor
    heappush, heappop, heapreplace = heapq.heappush, heapq.heappop, heapq.heapreplace
    materialise = run.messages

    arrivals = arrival_times(config.arrivals, config.num_messages, arrivals_rng(run.seed))
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
    interval, next_tick, end_at, next_check, next_wall_line = run.limits(wall_start)
    stopping = False
    reason = StopReason.COMPLETED

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
        for _ in range(CHUNK_EVENTS):
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
                        run.progress_line(stamp, sent, failed_attempts, busy_s, queued)
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
                        record(spent)
                    else:
                        failed_by[i] += 1
                        failed_attempts += 1
                        if attempts < max_attempts:
                            due = t + retry_delay_s(policy, attempts, run.rngs[i])
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
                    run.produced = produced
                    next_arrival, arrival_count = next(arrivals, (_INF, 0))
                else:
                    due, _, message_id, attempts, arrived = heappop(retries)
                    waiting.append([due, message_id, 1, attempts, arrived])
                while idle and waiting:
                    heappush(busy, send(idle.popleft(), t))
            else:
                run.sent, run.failed, run.dead = sent, failed, dead
                run.failed_attempts, run.busy_s = failed_attempts, busy_s
                run.first_attempts, run.waited, run.sum_wait_s = (
                    first_attempts, waited, sum_wait_s
                )
                run.area, run.now, run.makespan_s = area, last_t, makespan
                run.departed, run.sum_time_in_system_s = departed, sum_in_system_s
                run.unsent = sum(int(b[2]) for b in waiting) + len(retries)
                return reason
        # Every chunk: honour stop requests and show that a long run is alive.
        stopping, reason = run.end_chunk(stopping, reason, requests)
        next_wall_line = run.wall_line(wall, wall_start, next_wall_line, last_t, sent,
                                       produced - sent - failed - dead)
