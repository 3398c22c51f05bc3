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
order as the threaded mode (latency, then failure; here the backoff too, from the failing
sender's stream), so a seed fixes every outcome;
message texts never influence an outcome and are only generated when asked for (or, with
the SMS model counting each message's own segments, to count them).

Three loops: ``burst`` (a burst tried once, the common case), ``general`` (everything of the
default model) and ``sms`` (the SMS model of issue 14: segments, error classes, validity and
receipts), chosen by ``simulate``.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from collections.abc import Callable, Iterable
from typing import Final, TextIO, cast

from sms_sim.clock import Clock, RealClock
from sms_sim.config import SimulationConfig
from sms_sim.generate import new_seed
from sms_sim.model import Message, ReceiptStatus
from sms_sim.output import SafeWriter
from sms_sim.report import Report, StopReason, format_report
from sms_sim.sim.virtual.burst import fits_burst_loop, run_burst
from sms_sim.sim.virtual.general import run_general
from sms_sim.sim.virtual.sms import run_sms
from sms_sim.sim.virtual.percentiles import (
    QUANTILES,
    nearest_rank,
    pick_ranks,
    quantiles_of_sorted,
    select_ranks,
)
from sms_sim.sim.virtual.state import WALL_PROGRESS_INTERVAL_S, VirtualRun

__all__ = ["simulate", "time_to_send_percentiles", "time_to_delivered_percentiles",
           "WALL_PROGRESS_INTERVAL_S"]

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
    (apart from ``virtual.wall_s``). The time-to-send percentiles are exact order
    statistics of the sends made (see ``percentiles``; a run of over a million sends is
    replayed to find them, which takes as long again; the replay ends where the run did and
    does not poll ``stop_requests``).
    """
    stream = sys.stdout if output is _STDOUT else cast("TextIO | None", output)
    writer = SafeWriter(stream)
    wall = wall_clock or RealClock()
    polls = _Polls(stop_requests or (lambda: 0))
    seed = new_seed() if config.seed is None else config.seed
    run = VirtualRun(config, seed, writer if show_progress else SafeWriter(None), messages)
    wall_start = wall.monotonic()
    loop = (run_sms if config.is_sms else
            run_burst if fits_burst_loop(run) else run_general)
    reason = loop(run, polls, wall, wall_start)
    wall_s = wall.monotonic() - wall_start
    stopped_at_poll = polls.count if reason in (StopReason.SIGNAL,
                                                StopReason.OUTPUT_CLOSED) else None
    percentiles = time_to_send_percentiles(run, loop, stopped_at_poll, wall)
    delivered = (time_to_delivered_percentiles(run, loop, stopped_at_poll, wall)
                 if config.receipts is not None else (None, None, None))
    if writer.closed and reason is StopReason.COMPLETED:
        reason = StopReason.OUTPUT_CLOSED
    report = run.report(reason, wall_s, percentiles, delivered)
    if not writer.write(format_report(report)) and reason is StopReason.COMPLETED:
        # The report itself could not be written (a full disk, a closed pipe): say so.
        report = dataclasses.replace(report, stopped_by=StopReason.OUTPUT_CLOSED)
    return report


Loop = Callable[[VirtualRun, Callable[[], int], Clock, float], StopReason]


class _Polls:
    """The caller's stop requests, counted: the loops poll once per chunk and stop polling
    once they stop, so the count says at which poll a signal (or a closed output) was
    honoured, which is all a replay needs to stop at the same event."""

    def __init__(self, requests: Callable[[], int]) -> None:
        self._requests = requests
        self.count = 0

    def __call__(self) -> int:
        self.count += 1
        return self._requests()


def time_to_send_percentiles(
    run: VirtualRun, loop: Loop, stopped_at_poll: int | None, wall: Clock
) -> tuple[float | None, float | None, float | None]:
    """Exact p50, p95, p99 of the times to send of ``run``, which ``loop`` has run: from
    the times it kept, or from a replay of the same loop (same config, seed and stop at
    poll number ``stopped_at_poll``, None if it was not stopped by a request or a closed
    output) when it had too many."""
    if run.sent == 0:
        return None, None, None
    if not run.times_overflowed:
        # The burst loop records in ascending order; the general loop's need sorting.
        ordered = run.times if loop is run_burst else sorted(run.times)
        p50, p95, p99 = quantiles_of_sorted(ordered, QUANTILES)
        return p50, p95, p99

    def feed(record: Callable[[float], None]) -> None:
        replay = _replay(run)
        replay.record = record
        replay.record_delivered = _ignore
        _finish_replay(run, replay, loop, stopped_at_poll, wall)

    ranks = [nearest_rank(q, run.sent) for q in QUANTILES]
    found = pick_ranks(feed, ranks) if loop is run_burst else select_ranks(feed, ranks)
    return found[ranks[0]], found[ranks[1]], found[ranks[2]]


def time_to_delivered_percentiles(
    run: VirtualRun, loop: Loop, stopped_at_poll: int | None, wall: Clock
) -> tuple[float | None, float | None, float | None]:
    """Exact p50, p95, p99 of the times from arrival to a delivered receipt, as
    ``time_to_send_percentiles`` does it for the times to send (kept, or replayed)."""
    count = run.sms.receipts[ReceiptStatus.DELIVERED]
    if count == 0:
        return None, None, None
    if not run.delivered_overflowed:
        p50, p95, p99 = quantiles_of_sorted(sorted(run.sms.delivered_s), QUANTILES)
        return p50, p95, p99

    def feed(record: Callable[[float], None]) -> None:
        replay = _replay(run)
        replay.record = _ignore
        replay.record_delivered = record
        _finish_replay(run, replay, loop, stopped_at_poll, wall)

    ranks = [nearest_rank(q, count) for q in QUANTILES]
    found = select_ranks(feed, ranks)
    return found[ranks[0]], found[ranks[1]], found[ranks[2]]


def _ignore(value: float) -> None:
    """A recorder that keeps nothing: a replay wants one kind of time at a time."""


def _replay(run: VirtualRun) -> VirtualRun:
    """A silent run of the same config and seed, to be given its recorders."""
    return VirtualRun(run.config, run.seed, SafeWriter(None), None)


def _finish_replay(run: VirtualRun, replay: VirtualRun, loop: Loop,
                   stopped_at_poll: int | None, wall: Clock) -> None:
    """Run ``replay`` (same config and seed) to the poll the original stopped at."""
    polled = itertools.count(1)

    def requests() -> int:  # the original's stop, at the same poll
        return int(stopped_at_poll is not None and next(polled) >= stopped_at_poll)

    loop(replay, requests, wall, wall.monotonic())
    if replay.sent != run.sent:
        raise AssertionError(f"a replay sent {replay.sent}, the run {run.sent}")
