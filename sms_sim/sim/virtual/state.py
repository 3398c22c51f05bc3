"""The state of one virtual-time run and the report built from it.

Shared by the two event loops (``general`` and its specialisation ``burst``): they
bind what they need to locals, run, and write their totals back here once at the end.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Iterator

from sms_sim.clock import Clock
from sms_sim.config import SimulationConfig
from sms_sim.model import Message
from sms_sim.output import SafeWriter
from sms_sim.policy import sender_rng
from sms_sim.report import (
    Progress,
    Report,
    StopReason,
    VirtualStats,
    build_report,
    format_progress,
    sms_stats,
)
from sms_sim.sim.virtual.percentiles import TIMES_KEPT_MAX
from sms_sim.stats import SendTally, SmsTally

__all__ = ["VirtualRun", "WALL_PROGRESS_INTERVAL_S", "CHUNK_EVENTS"]

WALL_PROGRESS_INTERVAL_S = 2.0  # a long run prints a wall-clock line this often
CHUNK_EVENTS = 1 << 15  # events between checks of stop requests and the wall clock


class VirtualRun:
    """Totals and per-sender tallies of one run, and how to report them."""

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
        # Every successful send's time to send (arrival to completion), in completion
        # order, until there are more than TIMES_KEPT_MAX of them (see ``end_chunk``);
        # ``record`` is what the loops call per send (a replay swaps it, see percentiles).
        self.times = array("d")
        self.record: Callable[[float], None] = self.times.append
        self.times_overflowed = False
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
        # The SMS model's counts (issue 14; the SMS loop alone writes them). Delivered
        # receipts' times are kept and, past the cap, replayed like the times to send.
        self.sms = SmsTally()
        self.record_delivered: Callable[[float], None] = self.sms.delivered_s.append
        self.delivered_overflowed = False

    def end_chunk(self, stopping: bool, reason: StopReason,
                  requests: Callable[[], int]) -> tuple[bool, StopReason]:
        """What both loops do between chunks of events: honour a stop request or a closed
        output (returning the new ``stopping, reason``), and, past the cap, forget the times
        (memory stays flat in N; the percentiles then come from a replay)."""
        if not stopping and requests() > 0:
            stopping, reason = True, StopReason.SIGNAL
        if self.writer.closed and not stopping:
            stopping, reason = True, StopReason.OUTPUT_CLOSED
        if len(self.times) > TIMES_KEPT_MAX:
            self.times_overflowed = True
            del self.times[:]
        if len(self.sms.delivered_s) > TIMES_KEPT_MAX:
            self.delivered_overflowed = True
            del self.sms.delivered_s[:]
        return stopping, reason

    def limits(self, wall_start: float) -> tuple[float, float, float, float, float]:
        """(interval, first tick, simulated end, first check, first wall line): the times
        at which a loop must look up from its events."""
        interval = self.config.monitor_interval_s
        end_at = math.inf if self.config.duration_s is None else self.config.duration_s
        return (interval, interval, end_at, min(interval, end_at),
                wall_start + WALL_PROGRESS_INTERVAL_S)

    def wall_line(
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

    def progress_line(
        self, stamp: float, sent: int, failed: int, busy_s: float, queued: int,
        segments: int | None = None,
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
            segments=segments,
        )
        self.writer.write(format_progress(progress) + "\n")

    def report(
        self, reason: StopReason, wall_s: float,
        percentiles: tuple[float | None, float | None, float | None] = (None, None, None),
        delivered: tuple[float | None, float | None, float | None] = (None, None, None),
    ) -> Report:
        """The run's report; ``percentiles`` are its exact p50, p95 and p99 time to send
        (None without sends), which ``run.simulate`` works out from ``times`` or a replay;
        ``delivered`` the same of the time to a delivered receipt."""
        attempts = self.sent + self.failed_attempts
        makespan = self.makespan_s
        p50, p95, p99 = percentiles
        senders = len(self.sent_by)
        return build_report(
            produced=self.produced,
            per_sender=[
                SendTally(sent=sent, failed=failed, total_send_s=busy)
                for sent, failed, busy in zip(self.sent_by, self.failed_by, self.send_s,
                                              strict=True)
            ],
            failed=self.failed,
            unsent=self.unsent,
            dead_lettered=self.dead,
            elapsed_s=makespan,
            seed=self.seed,
            stopped_by=reason,
            expired=self.sms.expired,
            sms=(sms_stats(self.sms, self.config.receipts is not None, delivered)
                 if self.config.is_sms else None),
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
