"""The durable worker: the one dispatch loop feeding the simulator's own sender pool.

Threads, all in one ``ThreadGroup``: ``dispatcher`` runs ``Dispatcher.run`` (the loop the
benchmarks measure) and is the only one that claims and, while running, settles; the
``sender-<i>`` threads are the simulator's ``Sender``s, each send going to the transport
through ``Dispatcher.transmitter``; the ``monitor`` drains their outcomes, prints progress
and hands every completion back to the dispatcher; on a store that pushes wake-ups
(``dispatch.wake``: PostgreSQL), a ``listener`` turns them into the dispatcher's wake event,
so an idle dispatcher looks as soon as work is submitted; with simulated receipts, a
``receipts`` thread records them as they come due. The store is touched by the dispatcher
and receipts threads (and the listener's own connection; the senders ask it whether a
message was cancelled), then, after they have been joined, by the thread that called
``run``.

Stop order (STYLE.md section 6): stop claiming (join the dispatcher, and the receipts
thread), let the senders finish the send in hand (those not started are skipped), settle
every completion, give the never-started jobs back to ``pending``, record the simulated
receipts due by then (after the sends they follow), then report. The store is the caller's
to close.

Each completion carries the failure's class (``dispatch.failures``): the transport's for a
real send, ``simulated_failure``'s for one the simulator drew. A throttled answer on any
sender closes the dispatcher's throttle gate: nothing is claimed, and held jobs are given
back unsent, until the provider's retry-after has passed.

The SMS model (issue 14) on the simulated provider: senders with a rate limit or the SMS
fields count each job's segments (``sender_pool.needs_segments``), so rate limits are in
segments per second and ``per_segment_s`` is paid per segment; with a ``ReceiptModel`` a
``receipts`` thread records the simulated provider's delivery receipts as they come due
(``receipt_pump``), and at the stop, after the last sends are settled, what is due by then.
"""

from __future__ import annotations

import logging
import math
import queue
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from sms_sim.clock import Clock
from sms_sim.config import ReceiptModel, SenderConfig
from sms_sim.dispatch.contract import DispatchStore
from sms_sim.dispatch.dispatcher import NOT_SENT, DispatchConfig, Dispatcher, DispatchStats
from sms_sim.dispatch.receipt_pump import ReceiptPump, ReceiptTally
from sms_sim.dispatch.sender_pool import SenderPool, Slot, needs_segments
from sms_sim.dispatch.transport import Transport
from sms_sim.dispatch.wake import wake_channel_of
from sms_sim.errors import ConfigError, SmsSimError
from sms_sim.output import SafeWriter
from sms_sim.policy import capacity_per_s, mean_service_s, sender_rng
from sms_sim.report import (
    SenderReport,
    StopReason,
    format_sender_lines,
    format_warnings,
    sender_reports,
)
from sms_sim.sim.threaded.components import (
    DONE,
    Inbox,
    OutcomeQueue,
    Sender,
    drain_inbox,
)
from sms_sim.sim.threaded.monitor import Monitor
from sms_sim.sim.threaded.limits import ThreadStartError
from sms_sim.sim.threaded.sms import receipts_rng
from sms_sim.sim.threaded.supervise import DEFAULT_GRACE_S, ThreadGroup

__all__ = ["Worker", "WorkerReport", "format_worker_report", "work_in_hand", "CLAIM_ROUND_S",
           "check_lease"]

log = logging.getLogger(__name__)

# The time one claim round takes to come back with work (a claim transaction, the hand-over),
# budgeted generously: what a worker holds beyond its senders' sends in progress.
CLAIM_ROUND_S = 0.05
# Turns a fast sender takes at once: past a few dozen the wake-ups saved are noise (one per
# 64 sends), and a larger group only makes the last of a batch wait on one sender.
MAX_TURNS_PER_HAND_OFF = 64


def work_in_hand(senders: Sequence[SenderConfig], config: DispatchConfig) -> int:
    """How many claimed deliveries a worker holds at most: one per sender (the sends in
    progress) plus what the senders finish in one claim round, so a new claim arrives as
    the last held job starts. Bounded by time, not by batches: with four senders at 0.2 s
    and two batches held, an urgent message due during a broadcast waited 10 s behind the
    worker's own queue whatever its priority. Never more than two batches (senders that
    take no time) nor than the senders finish within half a lease (claims held longer
    expire in the worker's own queue and are re-claimed in a loop)."""
    capacity = capacity_per_s(senders)
    most = 2 * config.batch_size
    if math.isinf(capacity):
        return most
    one_round = math.ceil(len(senders) + capacity * CLAIM_ROUND_S)
    return max(1, min(most, int(capacity * config.lease_s / 2), one_round))


def check_lease(lease_s: float, senders: Sequence[SenderConfig],
                provider_timeout_s: float | None = None) -> None:
    """Refuse (``ConfigError``) a lease too short for the sends it covers: at least twice
    the longest send plus a claim round. A send starts only while its lease runs, but one
    that ends after it is reported too late: with ``--lease 0.02`` and 10 ms sends, the
    store refused the reports, other workers sent again (the provider's key absorbed
    those), and 22 deliveries that had gone out were recorded ``dead`` after running out
    of lease losses. The longest send is the slowest sender's mean plus its deviation (a
    bound for the uniform distribution, a sanity check for the others), or the provider's
    timeout when a real provider sends."""
    longest_s = max((mean_service_s(s) + s.deviation_s for s in senders), default=0.0)
    what = f"the slowest send ({longest_s:g} s)"
    if provider_timeout_s is not None and provider_timeout_s > longest_s:
        longest_s, what = provider_timeout_s, f"the provider timeout ({provider_timeout_s:g} s)"
    needed_s = 2 * (longest_s + CLAIM_ROUND_S)
    if lease_s < needed_s:
        raise ConfigError(f"--lease {lease_s:g} s is shorter than twice {what} plus a claim "
                          f"round ({CLAIM_ROUND_S:g} s): sends would end after their lease, "
                          f"be sent again and be recorded dead; give --lease {needed_s:.3g} "
                          "or more")


def turns_per_hand_off(senders: Sequence[SenderConfig]) -> int:
    """How many sends a sender takes from the pool at once: what the slowest of them
    finishes in a tenth of a claim round (one for senders slower than that, so a slow
    sender never sits on turns a free one could take; many for fast ones, whose sends
    cost less than waking a thread for each)."""
    slowest_s = max((mean_service_s(s) for s in senders), default=0.0)
    if slowest_s <= 0:
        return MAX_TURNS_PER_HAND_OFF
    return max(1, min(MAX_TURNS_PER_HAND_OFF, int(CLAIM_ROUND_S / 10 / slowest_s)))


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerReport:
    """What one worker did, in the dispatch engine's words.

    Every delivery it ``claimed`` ends as exactly one of: ``sent``, ``retried`` (the attempt
    failed and a retry is scheduled), ``dead`` (a permanent error, out of attempts, or out
    of lease losses unsent), ``released`` (given back unstarted: at a stop, on a cancel, or
    while the provider route was throttled) or ``expired`` (not sent because its lease ran
    out first: another worker takes it). ``is_accounted`` checks that from the
    dispatcher's counts. ``refused`` counts reports the store turned down because the
    lease had been lost meanwhile (they are among the outcomes above: the send happened,
    the store just keeps the newer claim's result).

    ``segments_sent`` adds up the segments of the accepted sends (``sent``, counted in the
    carrier's units); ``receipts`` is the simulated provider's receipts, None when it draws
    none.
    """

    owner: str
    seed: int
    stopped_by: StopReason
    elapsed_s: float
    claimed: int
    claims: int
    sent: int
    retried: int
    dead: int
    released: int
    expired: int
    refused: int
    withdrawn: int  # among ``released``: not sent because the message was cancelled
    store_errors: int  # store calls that failed and were tried again
    avg_send_s: float
    senders: tuple[SenderReport, ...]
    max_lag_s: float = 0.0
    threads_alive: tuple[str, ...] = ()
    throttles: int = 0  # throttled answers that closed (or extended) the throttle gate
    segments_sent: int = 0
    receipts: ReceiptTally | None = None

    @property
    def is_accounted(self) -> bool:
        return self.claimed == (self.sent + self.retried + self.dead + self.released
                                + self.expired)


class Worker:
    """One worker process's engine. ``run`` blocks until a stop request (or, with
    ``exit_when_idle``, until the store has nothing open, and with ``wait_for_receipts``
    also until every simulated receipt drawn is recorded) and returns the report."""

    def __init__(
        self,
        store: DispatchStore,
        transport: Transport,
        *,
        senders: Sequence[SenderConfig],
        clock: Clock,
        seed: int,
        config: DispatchConfig | None = None,
        output: TextIO | None = None,
        interval_s: float = 1.0,
        show_progress: bool = True,
        grace_s: float = DEFAULT_GRACE_S,
        exit_when_idle: bool = False,
        receipts: ReceiptModel | None = None,
        wait_for_receipts: bool = False,
    ) -> None:
        self._transport = transport
        self._clock = clock
        self._seed = seed
        self._output = output
        self._grace_s = grace_s
        self._exit_when_idle = exit_when_idle
        self._wait_for_receipts = wait_for_receipts
        self._channel = wake_channel_of(store)
        self.dispatcher = Dispatcher(store, clock=clock, config=config,
                                     rng=random.Random(f"sms_sim:{seed}:dispatcher"),
                                     channel=self._channel)
        max_in_hand = work_in_hand(senders, self.dispatcher.config)
        self._stop = threading.Event()  # stop claiming; ends the monitor loop
        self._sender_stop = threading.Event()  # senders skip what they have not started
        self._wake = threading.Event()  # completions arrived, or stop: the dispatcher looks
        self._inbox: Inbox[Slot] = queue.SimpleQueue()
        transmit = self.dispatcher.transmitter(transport)
        self.receipts: ReceiptPump | None = None
        if receipts is not None:
            self.receipts = ReceiptPump(store, receipts, rng=receipts_rng(seed), clock=clock,
                                        outage_s=self.dispatcher.config.store_outage_s,
                                        owner=self.owner)
            transmit = self.receipts.transmitter(transmit)
        self._pool = SenderPool(self._inbox, self._wake, max_in_hand, transmit,
                                now=clock.now, senders=senders,
                                on_failure=self.dispatcher.note_failure,
                                group=turns_per_hand_off(senders))
        self._abort = threading.Event()  # interrupt sends in flight (second signal)
        successes: OutcomeQueue[Slot] = queue.SimpleQueue()
        failures: OutcomeQueue[Slot] = queue.SimpleQueue()
        self._senders = [
            Sender(index, sender, rng=sender_rng(seed, index), inbox=self._inbox,
                   successes=successes, failures=failures, stop=self._sender_stop,
                   clock=clock, abort=self._abort, transmit=self._pool.transmit,
                   segments_of=self._pool.segments_of if needs_segments(sender) else None)
            for index, sender in enumerate(senders)
        ]
        self._started_at = clock.monotonic()
        self.monitor = Monitor(successes=successes, failures=failures, inbox=self._inbox,
                               senders=self._senders, clock=clock, output=output,
                               interval_s=interval_s, started_at=self._started_at,
                               stop=self._stop, show_progress=show_progress,
                               on_outcome=self._pool.on_outcome, not_sent=NOT_SENT,
                               queued=self._queued)

    def _queued(self) -> int:
        return max(0, self._pool.turns - sum(sender.taken for sender in self._senders))

    @property
    def owner(self) -> str:
        return self.dispatcher.owner

    def _dispatch(self) -> None:
        self.dispatcher.run(self._transport, self._stop, pool=self._pool, wake=self._wake,
                            until_idle=self._exit_when_idle)

    def run(self, stop_requests: Callable[[], int] = lambda: 0) -> WorkerReport:
        """Dispatch until stopped; one stop request is graceful, a second aborts sends.

        Raises nothing for failed sends; a store error on the dispatcher thread ends the
        run with ``StopReason.ERROR`` (and is logged). Raises ``ThreadStartError`` if the OS
        refuses a thread, after stopping those it started.
        """
        clock = self._clock
        group = ThreadGroup(stop=self._stop, abort=self._abort, clock=clock,
                            stop_requests=stop_requests, on_failure=self._wake_all)
        channel, receipts = self._channel, self.receipts
        try:
            group.start("monitor", self.monitor.run)
            for sender in self._senders:
                group.start(sender.name, sender.run)
            if channel is not None:
                group.start("listener", lambda: channel.run(self._wake))
            if receipts is not None:
                group.start("receipts", lambda: receipts.run(self._stop))
        except ThreadStartError:
            self._release(group)
            raise
        group.start("dispatcher", self._dispatch)
        reason = group.wait(finished=lambda: not group.is_alive("dispatcher")
                            and not self._receipts_to_wait_for(),
                            watch=lambda: group.thread("dispatcher"),
                            output_closed=lambda: self.monitor.output_closed)
        elapsed_s = clock.monotonic() - self._started_at
        group.begin_shutdown(self._grace_s)
        self._wake_all()
        if channel is not None:
            channel.close()  # the listener waits on its connection, not on ``stop``
        alive = group.join(["dispatcher"])
        if channel is not None:
            alive += group.join(["listener"])
        if receipts is not None:
            alive += group.join(["receipts"])
        self._sender_stop.set()
        for _ in self._senders:
            self._inbox.put(DONE)
        alive += group.join([s.name for s in self._senders])
        alive += group.join(["monitor"])
        if "monitor" not in alive:  # one drainer at a time: the monitor owns its tallies
            self.monitor.drain()
        if "dispatcher" not in alive and not self._finish():
            reason = StopReason.ERROR
        if "receipts" not in alive and not self._last_receipts():
            reason = StopReason.ERROR
        if self.monitor.output_closed and reason is StopReason.COMPLETED:
            reason = StopReason.OUTPUT_CLOSED
        report = self._report(reason, elapsed_s, alive)
        self._write(report)
        return report

    def _receipts_to_wait_for(self) -> bool:
        """True while ``wait_for_receipts`` holds the exit for receipts still to come (the
        dispatcher has finished, so every receipt that will be drawn has been)."""
        return (self._wait_for_receipts and self.receipts is not None
                and self.receipts.next_due_at() is not None)

    def _wake_all(self) -> None:
        """Cut the dispatcher's and the receipts thread's waits short (a stop, a failure)."""
        self._wake.set()
        if self.receipts is not None:
            self.receipts.wake()

    def _release(self, group: ThreadGroup) -> None:
        """Stop the threads started before the OS refused one (nothing was claimed yet:
        the dispatcher starts last)."""
        group.begin_shutdown(self._grace_s)
        self._stop.set()
        self._sender_stop.set()
        self._wake_all()
        if self._channel is not None:
            self._channel.close()
        started = group.names
        for name in started:
            if name.startswith("sender-"):
                self._inbox.put(DONE)
        group.join(started)

    def _finish(self) -> bool:
        """Settle the last completions, then give the never-started jobs back; each is tried
        even if the other fails. True if both reached the store. (What did not keeps its
        lease until it runs out; other workers then take it.)"""
        slots = drain_inbox(self._inbox)
        for sender in self._senders:
            slots.extend(sender.abandoned)
        unstarted = self._pool.unstarted(slots)
        steps: tuple[tuple[str, Callable[[], object]], ...] = (
            ("the last outcomes", lambda: self.dispatcher.settle_completed(
                self._pool.completed())),
            ("the unstarted claims", lambda: self.dispatcher.release_all(
                [job.claim for job in unstarted])),
        )
        ok = True
        for what, step in steps:
            try:
                step()
            except SmsSimError as exc:
                log.error("could not record %s (%s); their leases will expire and other "
                          "workers will take them", what, exc)
                ok = False
        return ok

    def _last_receipts(self) -> bool:
        """Record the receipts due by now, after the last sends were settled (so they apply
        at once rather than wait held); those due later stay outstanding. False if the
        store refused them (they are then outstanding too)."""
        if self.receipts is None:
            return True
        try:
            self.receipts.pump(self._clock.now())
        except SmsSimError as exc:
            log.error("could not record the receipts due (%s); they are counted outstanding",
                      exc)
            return False
        return True

    def _report(self, reason: StopReason, elapsed_s: float, alive: list[str]) -> WorkerReport:
        stats: DispatchStats = self.dispatcher.stats
        total = self.monitor.total
        return WorkerReport(
            owner=self.owner,
            seed=self._seed,
            stopped_by=reason,
            elapsed_s=elapsed_s,
            claimed=stats.claimed,
            claims=stats.claims,
            sent=stats.sent,
            retried=stats.retried,
            dead=stats.dead,
            released=stats.released,
            expired=stats.skipped_expired,
            refused=stats.refused,
            withdrawn=stats.withdrawn,
            store_errors=stats.store_errors,
            avg_send_s=total.avg_send_s,
            senders=sender_reports(self.monitor.per_sender),
            max_lag_s=max((s.max_lag_s for s in self._senders), default=0.0),
            threads_alive=tuple(alive),
            throttles=self.dispatcher.gate.closures,
            segments_sent=self._pool.segments_sent,
            receipts=None if self.receipts is None else self.receipts.tally(),
        )

    def _write(self, report: WorkerReport) -> None:
        writer = SafeWriter(self._output)
        if writer.is_terminal:
            writer.write("\n")
        writer.write(format_worker_report(report))


def format_worker_report(report: WorkerReport) -> str:
    """The worker's final report, ending in a newline."""
    verdict = "ok" if report.is_accounted else "MISMATCH"
    lines = [
        f"{report.stopped_by}: {report.owner} claimed {report.claimed} in {report.claims} "
        f"claims: {report.sent} sent, {report.retried} retried, {report.dead} dead, "
        f"{report.released} released, {report.expired} expired in {report.elapsed_s:.3f}s "
        f"(seed {report.seed})",
        f"accounting: claimed {report.claimed} = sent {report.sent} + retried "
        f"{report.retried} + dead {report.dead} + released {report.released} + expired "
        f"{report.expired}: {verdict}",
        f"fencing: {report.refused} stale reports refused, {report.expired} sends skipped "
        f"on an expired lease, {report.withdrawn} withdrawn (message cancelled)",
        f"segments: {report.segments_sent} sent ({_per(report.segments_sent, report.sent)} "
        f"per delivery sent)",
        f"avg send {report.avg_send_s * 1000:.3f} ms",
    ]
    receipts = report.receipts
    if receipts is not None:
        lines.append(
            f"receipts: delivered {receipts.delivered}, undelivered {receipts.undelivered}, "
            f"expired {receipts.expired}, unknown {receipts.unknown} (never to come); "
            f"{receipts.outstanding} outstanding (not due yet at the stop)"
            + (f", {receipts.not_applied} changed nothing" if receipts.not_applied else ""))
    if report.store_errors:
        lines.append(f"store: {report.store_errors} calls failed and were tried again")
    if report.throttles:
        lines.append(f"provider: throttled {report.throttles} times; no new sends until each "
                     "retry-after had passed")
    lines.extend(format_warnings(report.max_lag_s, report.threads_alive))
    lines.extend(format_sender_lines(report.senders))
    return "\n".join(lines) + "\n"


def _per(part: int, whole: int) -> str:
    return f"{part / whole:.2f}" if whole else "0.00"
