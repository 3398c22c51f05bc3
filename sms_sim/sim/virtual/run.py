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
message texts never influence an outcome and are only generated when asked for.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterable
from typing import Final, TextIO, cast

from sms_sim.clock import Clock, RealClock
from sms_sim.config import SimulationConfig
from sms_sim.generate import new_seed
from sms_sim.model import Message
from sms_sim.output import SafeWriter
from sms_sim.report import Report, StopReason, format_report
from sms_sim.sim.virtual.burst import fits_burst_loop, run_burst
from sms_sim.sim.virtual.general import run_general
from sms_sim.sim.virtual.state import WALL_PROGRESS_INTERVAL_S, VirtualRun

__all__ = ["simulate", "WALL_PROGRESS_INTERVAL_S"]

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
    run = VirtualRun(config, seed, writer if show_progress else SafeWriter(None), messages)
    wall_start = wall.monotonic()
    loop = run_burst if fits_burst_loop(run) else run_general
    reason = loop(run, requests, wall, wall_start)
    wall_s = wall.monotonic() - wall_start
    if writer.closed and reason is StopReason.COMPLETED:
        reason = StopReason.OUTPUT_CLOSED
    report = run.report(reason, wall_s)
    if not writer.write(format_report(report)) and reason is StopReason.COMPLETED:
        # The report itself could not be written (a full disk, a closed pipe): say so.
        report = dataclasses.replace(report, stopped_by=StopReason.OUTPUT_CLOSED)
    return report
