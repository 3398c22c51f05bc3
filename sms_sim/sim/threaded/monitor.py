"""The monitor thread: drains outcomes into tallies, decides retries, prints progress.

With retries on it is also where each failed attempt is judged (retry after a backoff, or
dead-letter): it is the one thread that sees every outcome, so the decision and the counts
behind it have a single owner (see ``RetryHandoff``).
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TextIO, TypeVar

from sms_sim.clock import Clock
from sms_sim.model import Outcome
from sms_sim.output import SafeWriter
from sms_sim.policy import error_class_of, mean_service_s
from sms_sim.report import (
    Progress,
    Report,
    format_progress,
    format_report,
)
from sms_sim.sim.threaded.components import Inbox, OutcomeQueue, Sender
from sms_sim.sim.threaded.schedule import RetryHandoff
from sms_sim.sim.threaded.sms import EXPIRED_ERROR, SmsBook
from sms_sim.stats import SendTally

__all__ = ["Monitor", "MONITOR_DRAIN_S", "RETRY_DRAIN_S"]

Item = TypeVar("Item")
MONITOR_DRAIN_S = 0.01  # outcome backlog (and so memory) is bounded by this much sending
# With retries on, a retry's backoff starts when the monitor sees the failure: draining this
# often keeps that within about a millisecond (plus the OS's oversleep) of the failure.
RETRY_DRAIN_S = 0.001


class Monitor(Generic[Item]):
    """Drains outcomes into tallies and writes a progress line every ``interval_s``.

    The monitor is the only writer of its tallies. ``step(now)`` is one unit of work and is
    what tests drive with a ``VirtualClock``; ``run`` loops it until ``stop``. A write to
    ``output`` that fails (a closed pipe) sets ``stop``: nobody is reading any more.
    ``on_outcome`` (optional) sees every outcome as it is drained, on the draining thread;
    the durable worker uses it to hand results back to the store.

    ``retries`` (optional, a ``RetryHandoff``) turns retries on: every failed outcome is
    handed to it as it is drained, which queues a retry for the producer or dead-letters the
    message, and the monitor wakes the producer after each drain that moved anything and
    when its loop ends. The tallies still count attempts (``failed`` = failed attempts);
    final outcomes are the handoff's ``settled`` and ``dead``. Without it, nothing of this
    runs and the drain loop is the plain one.

    ``not_sent`` (optional) names errors that mean the send never happened (the durable
    worker's: a lease run out or a message cancelled before the send started): those
    outcomes still reach ``on_outcome`` but are tallied neither sent nor failed.

    ``sms`` (optional, an ``SmsBook``) turns the SMS model's accounting on (issue 14):
    segments per attempt, failed attempts per error class (passed to the retry handoff,
    with the sender's retry-after and the message's validity), messages expired before a
    send (``EXPIRED_ERROR`` outcomes: final, no attempt), and each accepted send's receipt,
    drawn as the outcome is drained (its send time is the drain's, at most ``drain_s``
    late). Progress lines then show segments.
    """

    def __init__(
        self,
        *,
        successes: OutcomeQueue[Item],
        failures: OutcomeQueue[Item],
        inbox: Inbox[Item],
        senders: Sequence[Sender[Item]],
        clock: Clock,
        output: TextIO | None,
        interval_s: float,
        started_at: float,
        stop: threading.Event,
        show_progress: bool = True,
        check_pace: bool = False,
        on_outcome: Callable[[Outcome[Item]], None] | None = None,
        queued: Callable[[], int] | None = None,
        retries: RetryHandoff[Item] | None = None,
        not_sent: frozenset[str] = frozenset(),
        sms: SmsBook[Item] | None = None,
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
        self._not_sent = not_sent
        self._queued = inbox.qsize if queued is None else queued
        self._retries = retries
        self._sms = sms
        self._drain_s = (MONITOR_DRAIN_S if retries is None and sms is None
                         else RETRY_DRAIN_S)
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
        """Move every outcome waiting on both queues into the tallies; returns how many.

        With retries on, each outcome is also handed to the ``RetryHandoff`` as it is moved
        (a failure judged retry or dead at the moment it is seen), and the producer gets one
        wake-up per drain that moved anything.
        """
        if self._sms is not None:
            return self._drain_sms(self._sms)
        moved = 0
        per_sender, hook, monotonic = self.per_sender, self._on_outcome, self._clock.monotonic
        retries, not_sent = self._retries, self._not_sent
        for source in (self._successes, self._failures):
            get = source.get_nowait
            while True:
                try:
                    outcome = get()
                except queue.Empty:
                    break
                message, sender, duration_s, ok, error = outcome
                moved += 1
                if not ok and error in not_sent:
                    if hook is not None:
                        hook(outcome)
                    continue
                tally = per_sender[sender]
                if ok:
                    tally.sent += 1
                    if retries is not None:
                        retries.succeeded(message)
                else:
                    tally.failed += 1
                    if retries is not None:
                        retries.failed(message, monotonic())
                tally.total_send_s += duration_s
                if hook is not None:
                    hook(outcome)
        if moved and retries is not None:
            retries.wake.set()
        return moved

    def _drain_sms(self, sms: SmsBook[Item]) -> int:
        """``drain`` with the SMS model's accounting (see the class docstring)."""
        moved = 0
        per_sender, hook, monotonic = self.per_sender, self._on_outcome, self._clock.monotonic
        retries, tally = self._retries, sms.tally
        for source in (self._successes, self._failures):
            get = source.get_nowait
            while True:
                try:
                    outcome = get()
                except queue.Empty:
                    break
                message, sender, duration_s, ok, error = outcome
                moved += 1
                if hook is not None:
                    hook(outcome)
                if error == EXPIRED_ERROR:
                    tally.expired += 1
                    if retries is not None:
                        retries.expire(message)
                    sms.forget(message)
                    continue
                tally_s = per_sender[sender]
                tally_s.total_send_s += duration_s
                k = sms.segments_of(message)
                tally.segments_attempted += k
                if ok:
                    tally_s.sent += 1
                    tally.segments_sent += k
                    sms.receipt(message, monotonic())
                    if retries is not None:
                        retries.succeeded(message)
                    sms.forget(message)
                    continue
                tally_s.failed += 1
                error_class = error_class_of(error)
                tally.failures[error_class] += 1
                if retries is None or retries.failed(
                        message, monotonic(), error_class,
                        retry_after_s=self._senders[sender].config.retry_after_s,
                        valid_until=sms.valid_until(message)) is None:
                    sms.forget(message)
        if moved and retries is not None:
            retries.wake.set()
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
            segments=None if self._sms is None else self._sms.tally.segments_attempted,
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
        clock, stop, drain_s = self._clock, self._stop, self._drain_s
        try:
            while not stop.is_set():
                now = clock.monotonic()
                self.step(now)
                if clock.sleep(min(self._next_tick - now, drain_s), stop):
                    break
        finally:
            if self._retries is not None:
                self._retries.wake.set()  # a producer waiting out a backoff sees the stop

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
