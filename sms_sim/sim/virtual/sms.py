"""The virtual-time loop with the SMS model on (issue 14): segments, error classes, validity
and delivery receipts, on the general loop's event structures (see ``run``).

A separate loop rather than branches in ``general``: the general loop is tuned line by line
for the default model, and every SMS feature would cost it a test per event. This one takes
the same draws in the same order from the same streams (latency, then one uniform for the
outcome, then the backoff from the failing sender's stream), so with the SMS features
inert (one-segment content, no extra classes) it makes the very sends ``general`` makes:
a test checks the reports agree. What it adds goes through the ``policy`` functions the
threaded mode calls too: ``send_classifier`` partitions the draw into error classes,
``send_slot_s`` turns segments, rate limits and a throttle's retry-after into when the sender
may start again, ``retry_delay_after`` picks the delay per class, ``receipt_sampler`` and
``receipt_at`` the receipt. Receipts come from each sender's own ``receipt_rng`` stream, so
turning them on changes no send.

Validity: a message whose validity (``valid_for_s`` from its arrival) has ended when a sender
would start it is expired, never sent; a failed attempt whose retry would come due at or
after the end of its validity is expired at once.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable

from sms_sim.clock import Clock
from sms_sim.errors import ConfigError
from sms_sim.generate import segment_counts
from sms_sim.model import ErrorClass, ReceiptStatus
from sms_sim.policy import (
    arrival_times,
    arrivals_rng,
    latency_sampler,
    receipt_at,
    receipt_rng,
    receipt_sampler,
    retry_delay_after,
    send_classifier,
    send_slot_s,
)
from sms_sim.report import StopReason
from sms_sim.segments import segments
from sms_sim.sim.virtual.state import CHUNK_EVENTS, VirtualRun

__all__ = ["run_sms"]

_INF = math.inf
# A send in flight: (error class or None, message id, attempt number, arrived, send time,
# segments). None in its place marks a sender resting out its rate limit or a throttle.
_Send = tuple[ErrorClass | None, int, int, float, float, int]


def run_sms(  # noqa: C901 - one event loop, as ``general``
    run: VirtualRun, requests: Callable[[], int], wall: Clock, wall_start: float
) -> StopReason:
    config = run.config
    senders = config.senders
    policy = config.retry
    max_attempts = policy.max_attempts
    samplers = [latency_sampler(rng, s) for rng, s in zip(run.rngs, senders, strict=True)]
    uniforms = [rng.random for rng in run.rngs]
    classifiers = [send_classifier(s) for s in senders]
    per_segment = [s.per_segment_s for s in senders]
    model = config.receipts
    draw_receipt = (None if model is None else
                    [receipt_sampler(receipt_rng(run.seed, i), model) for i in range(len(senders))])
    valid_for = _INF if config.valid_for_s is None else config.valid_for_s
    has_validity = config.valid_for_s is not None
    may_start_at = [0.0] * len(senders)
    sent_by, failed_by, send_s = run.sent_by, run.failed_by, run.send_s
    tally = run.sms
    class_failures, receipts = tally.failures, tally.receipts
    record, record_delivered = run.record, run.record_delivered
    delivered = ReceiptStatus.DELIVERED
    heappush, heappop, heapreplace = heapq.heappush, heapq.heappop, heapq.heapreplace
    materialise = run.messages
    fixed = None if config.content is None else config.content.fixed
    counts = (None if materialise is not None
              else segment_counts(config.content, config.num_messages, run.seed))

    arrivals = arrival_times(config.arrivals, config.num_messages, arrivals_rng(run.seed))
    next_arrival, arrival_count = next(arrivals, (_INF, 0))
    busy: list[tuple[float, int, _Send | None]] = []  # one entry per sender
    idle: deque[int] = deque(range(len(senders)))
    # [ready_at, next_id, count, attempts, arrived, segments (retries; -1: first attempts)]
    waiting: deque[list[float]] = deque()
    retries: list[tuple[float, int, int, int, float, int]] = []  # due, seq, id, att, arr, seg
    retry_seq = next_id = in_system = sent = produced = failed = dead = expired = 0
    failed_attempts = first_attempts = waited = departed = 0
    segments_sent = segments_attempted = 0
    busy_s = sum_wait_s = area = sum_in_system_s = makespan = last_t = 0.0
    interval, next_tick, end_at, next_check, next_wall_line = run.limits(wall_start)
    stopping = False
    reason = StopReason.COMPLETED

    def segments_of_next(message_id: int) -> int:
        if materialise is None:
            assert counts is not None
            return next(counts)
        message = next(materialise, None)
        if message is None:
            raise ConfigError(f"messages ran out at message {message_id}")
        return segments(message.text).count if fixed is None else fixed.count

    def start(i: int, t: float) -> tuple[float, int, _Send | None] | None:
        """Start sender ``i`` at ``t`` on the first message of ``waiting`` still valid
        (expiring those that are not); None when none is left."""
        nonlocal first_attempts, sum_wait_s, waited, expired, in_system, departed
        nonlocal sum_in_system_s
        while waiting:
            batch = waiting[0]
            message_id = int(batch[1])
            attempts = int(batch[3])
            arrived = batch[4]
            k = int(batch[5])
            if batch[2] == 1:
                waiting.popleft()
            else:
                batch[1] += 1
                batch[2] -= 1
            if attempts == 0:
                k = segments_of_next(message_id)
            if has_validity and t >= arrived + valid_for:
                expired += 1
                in_system -= 1
                departed += 1
                sum_in_system_s += t - arrived
                continue
            if attempts == 0:
                first_attempts += 1
                if t > arrived:
                    sum_wait_s += t - arrived
                    waited += 1
            latency = samplers[i]() + k * per_segment[i]
            outcome = classifiers[i](uniforms[i]())
            may_start_at[i] = t + send_slot_s(senders[i], latency, k, outcome)
            return (t + latency, i, (outcome, message_id, attempts + 1, arrived, latency, k))
        return None

    while True:
        for _ in range(CHUNK_EVENTS):
            t_ext = _INF if stopping else next_arrival
            if retries and not stopping and retries[0][0] < t_ext:
                t_ext = retries[0][0]
            if busy and busy[0][0] < t_ext:
                t, i, send = busy[0]
                if t >= next_check:
                    if t >= end_at and not stopping:
                        stopping, reason = True, StopReason.DURATION
                    if t >= next_tick:
                        stamp = next_tick + interval * math.floor((t - next_tick) / interval)
                        queued = sum(int(b[2]) for b in waiting)
                        run.progress_line(stamp, sent, failed_attempts, busy_s, queued,
                                          segments_attempted)
                        next_tick = stamp + interval
                    next_check = next_tick if stopping else min(next_tick, end_at)
                area += in_system * (t - last_t)
                last_t = t
                if send is not None:
                    outcome, message_id, attempts, arrived, latency, k = send
                    makespan = t
                    busy_s += latency
                    send_s[i] += latency
                    segments_attempted += k
                    if outcome is None:
                        sent += 1
                        sent_by[i] += 1
                        segments_sent += k
                        in_system -= 1
                        departed += 1
                        spent = t - arrived
                        sum_in_system_s += spent
                        record(spent)
                        if draw_receipt is not None:
                            status, at = receipt_at(
                                t, draw_receipt[i](),
                                arrived + valid_for if has_validity else None)
                            receipts[status] += 1
                            if status is delivered:
                                record_delivered(at - arrived)
                    else:
                        failed_by[i] += 1
                        failed_attempts += 1
                        class_failures[outcome] += 1
                        delay = retry_delay_after(policy, attempts, outcome, run.rngs[i],
                                                  retry_after_s=senders[i].retry_after_s)
                        if delay is not None and t + delay < arrived + valid_for:
                            retry_seq += 1
                            heappush(retries, (t + delay, retry_seq, message_id, attempts,
                                               arrived, k))
                        else:
                            in_system -= 1
                            departed += 1
                            sum_in_system_s += t - arrived
                            if delay is not None:
                                expired += 1  # its retry would come due too late
                            elif max_attempts > 1:
                                dead += 1
                            else:
                                failed += 1
                    if may_start_at[i] > t:
                        heapreplace(busy, (may_start_at[i], i, None))
                        continue
                event = None if stopping else start(i, t)
                if event is not None:
                    heapreplace(busy, event)
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
                    waiting.append([t, next_id, arrival_count, 0, t, -1])
                    next_id += arrival_count
                    in_system += arrival_count
                    produced += arrival_count
                    run.produced = produced
                    next_arrival, arrival_count = next(arrivals, (_INF, 0))
                else:
                    due, _, message_id, attempts, arrived, k = heappop(retries)
                    waiting.append([due, message_id, 1, attempts, arrived, k])
                while idle and waiting:
                    event = start(idle[0], t)
                    if event is None:
                        break
                    idle.popleft()
                    heappush(busy, event)
            else:
                run.sent, run.failed, run.dead = sent, failed, dead
                run.failed_attempts, run.busy_s = failed_attempts, busy_s
                run.first_attempts, run.waited, run.sum_wait_s = (
                    first_attempts, waited, sum_wait_s
                )
                run.area, run.now, run.makespan_s = area, last_t, makespan
                run.departed, run.sum_time_in_system_s = departed, sum_in_system_s
                run.unsent = sum(int(b[2]) for b in waiting) + len(retries)
                tally.segments_sent, tally.segments_attempted = segments_sent, segments_attempted
                tally.expired = expired
                return reason
        # Every chunk: honour stop requests and show that a long run is alive.
        stopping, reason = run.end_chunk(stopping, reason, requests)
        next_wall_line = run.wall_line(wall, wall_start, next_wall_line, last_t, sent,
                                       produced - sent - failed - dead - expired)
