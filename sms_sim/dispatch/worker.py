"""The durable worker: a dispatcher thread feeding the simulator's own sender pool and monitor.

Threads: ``dispatcher`` (the only one that claims and, while running, settles), the
``sender-<i>`` threads of ``pipeline.Sender`` (each send goes to the transport through the
sender's ``transmit`` step) and the ``monitor`` of ``pipeline.Monitor`` (its ``on_outcome``
hook hands every result back to the dispatcher). The store is touched by the dispatcher
thread, then, after it has been joined, by the thread that called ``run``.

Stop order (STYLE.md section 6): stop claiming (join the dispatcher), let the senders
finish the send in hand (those not started are skipped), settle every outcome, give the
never-started claims back to ``pending``, then report. The store is the caller's to close.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from sms_sim.clock import Clock
from sms_sim.config import SenderConfig
from sms_sim.dispatch.contract import Claim, DispatchStore, StoreError
from sms_sim.dispatch.dispatcher import DispatchConfig, Dispatcher, DispatchStats
from sms_sim.dispatch.transport import Transport, TransportError
from sms_sim.errors import SmsSimError
from sms_sim.model import Message, Outcome
from sms_sim.policy import capacity_per_s, sender_rng
from sms_sim.report import Report, SenderReport, StopReason
from sms_sim.sim.threaded.run import DONE, Inbox, Monitor, OutcomeQueue, Sender

__all__ = ["Worker", "WorkerReport", "format_worker_lines", "SIMULATED_FAILURE", "LEASE_EXPIRED"]

log = logging.getLogger(__name__)

SIMULATED_FAILURE = "simulated send failure"
LEASE_EXPIRED = "lease expired before the send started"
_JOIN_SLICE_S = 0.05
_ABORT_BUDGET_S = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerReport:
    """The simulator's report (``produced`` = deliveries claimed, ``unsent`` = claims given
    back unstarted) plus the store-side counts of this worker."""

    run: Report
    owner: str
    stats: DispatchStats


class Worker:
    """One worker process's engine. ``run`` blocks until a stop request (or, with
    ``exit_when_idle``, until the store has nothing open) and returns the report."""

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
        grace_s: float = 5.0,
        exit_when_idle: bool = False,
    ) -> None:
        self._transport = transport
        self._clock = clock
        self._seed = seed
        self._output = output
        self._grace_s = grace_s
        self._exit_when_idle = exit_when_idle
        self.dispatcher = Dispatcher(store, clock=clock, config=config,
                                     rng=random.Random(f"sms_sim:{seed}:dispatcher"))
        # Work in hand: up to two batches, but never more than the senders can send within
        # half a lease. Holding more lets claims expire in our own queue; with slow senders
        # the worker then spent its time skipping expired claims and re-claiming them (a
        # livelock, found when the monitor's faster drain made the worker re-claim sooner).
        batch = self.dispatcher.config.batch_size
        within_half_lease = int(capacity_per_s(senders) * self.dispatcher.config.lease_s / 2)
        self._max_in_hand = max(1, min(2 * batch, within_half_lease))
        self._stop = threading.Event()  # stop claiming; ends the monitor loop
        self._sender_stop = threading.Event()  # senders skip what they have not started
        self._abort = threading.Event()  # interrupt sends in flight (second signal)
        self._wake = threading.Event()  # outcomes arrived, or stop: the dispatcher looks again
        self._idle = threading.Event()
        self._failed: list[str] = []
        self._lock = threading.Lock()
        # Keyed by a per-claim ticket, not the delivery id: after a pause past the lease this
        # worker may re-claim a delivery whose first claim is still queued (found by the
        # crash test). The ticket is the Message id the senders see.
        self._in_flight: dict[int, Claim] = {}  # lock held to write; GIL-atomic reads
        self._next_ticket = 0
        self._errors: dict[int, str] = {}
        self._done: queue.SimpleQueue[tuple[int, bool]] = queue.SimpleQueue()
        self._inbox: Inbox = queue.SimpleQueue()
        successes: OutcomeQueue = queue.SimpleQueue()
        failures: OutcomeQueue = queue.SimpleQueue()
        self._senders = [
            Sender(index, sender, rng=sender_rng(seed, index), inbox=self._inbox,
                   successes=successes, failures=failures, stop=self._sender_stop,
                   clock=clock, abort=self._abort, transmit=self._transmit)
            for index, sender in enumerate(senders)
        ]
        self._started_at = clock.monotonic()
        self.monitor = Monitor(successes=successes, failures=failures, inbox=self._inbox,
                               senders=self._senders, clock=clock, output=output,
                               interval_s=interval_s, started_at=self._started_at,
                               stop=self._stop, show_progress=show_progress,
                               on_outcome=self._on_outcome)

    @property
    def owner(self) -> str:
        return self.dispatcher.owner

    # --- hooks called on sender and monitor threads --------------------------------------

    def _transmit(self, message: Message) -> bool:
        claim = self._in_flight.get(message.id)
        if claim is None:
            self._errors[message.id] = LEASE_EXPIRED
            return False
        dispatcher = self.dispatcher
        if dispatcher.config.fencing and self._clock.now() >= claim.lease_until:
            self._errors[message.id] = LEASE_EXPIRED
            return False
        try:
            self._transport.send(dispatcher.provider_key(claim), claim.recipient, claim.content)
        except TransportError as exc:
            self._errors[message.id] = str(exc)
            return False
        return True

    def _on_outcome(self, outcome: Outcome) -> None:
        self._done.put((outcome.message.id, outcome.ok))
        self._wake.set()

    # --- the dispatcher thread ------------------------------------------------------------

    def _settle_done(self) -> None:
        settlements = []
        while True:
            try:
                ticket, ok = self._done.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                claim = self._in_flight.pop(ticket)
            error = None if ok else self._errors.pop(ticket, SIMULATED_FAILURE)
            if error == LEASE_EXPIRED:
                self.dispatcher.stats.skipped_expired += 1
            settlements.append(self.dispatcher.outcome(claim, error))
        self.dispatcher.settle(settlements)

    def _dispatch_loop(self) -> None:
        dispatcher, stop, wake = self.dispatcher, self._stop, self._wake
        batch = dispatcher.config.batch_size
        while not stop.is_set():
            wake.clear()
            self._settle_done()
            room = min(batch, self._max_in_hand - len(self._in_flight))
            if room > 0:
                claims = dispatcher.claim(room)
                tickets = []
                with self._lock:
                    for claim in claims:
                        self._next_ticket += 1
                        self._in_flight[self._next_ticket] = claim
                        tickets.append(self._next_ticket)
                for ticket, claim in zip(tickets, claims, strict=True):
                    self._inbox.put(Message(ticket, claim.recipient,
                                            f"delivery {claim.delivery_id}"))
                if len(claims) == room:
                    continue
            if self._exit_when_idle and not self._in_flight and self._done.empty() \
                    and dispatcher.store.next_due_at(self._clock.now()) is None:
                self._idle.set()
                return
            self._clock.sleep(dispatcher.wait_s(), wake)

    # --- the calling thread ---------------------------------------------------------------

    def _guard(self, target: Callable[[], None], name: str) -> Callable[[], None]:
        def guarded() -> None:
            try:
                target()
            except Exception as exc:
                if isinstance(exc, StoreError):  # the database refused: one line
                    log.error("thread %s stopped: %s; stopping the worker", name, exc)
                else:  # a bug: keep the traceback
                    log.exception("thread %s failed; stopping the worker", name)
                self._failed.append(name)
                self._stop.set()
                self._wake.set()

        return guarded

    def run(self, stop_requests: Callable[[], int] = lambda: 0) -> WorkerReport:
        """Dispatch until stopped; one stop request is graceful, a second aborts sends.

        Raises nothing for failed sends; a store error on the dispatcher thread ends the
        run with ``StopReason.ERROR`` (and is logged).
        """
        clock = self._clock
        threads = {
            "monitor": threading.Thread(target=self._guard(self.monitor.run, "monitor"),
                                        name="monitor", daemon=True),
            **{s.name: threading.Thread(target=self._guard(s.run, s.name), name=s.name,
                                        daemon=True) for s in self._senders},
            "dispatcher": threading.Thread(target=self._guard(self._dispatch_loop, "dispatcher"),
                                           name="dispatcher", daemon=True),
        }
        for thread in threads.values():
            thread.start()
        reason = self._wait_for_end(stop_requests, threads["dispatcher"])
        elapsed_s = clock.monotonic() - self._started_at
        self._stop.set()
        self._wake.set()
        grace_until = clock.monotonic() + self._grace_s
        join_until = grace_until + _ABORT_BUDGET_S

        def escalate() -> None:
            if stop_requests() >= 2 or clock.monotonic() >= grace_until:
                self._abort.set()

        alive = _join([threads["dispatcher"]], clock, join_until, escalate)
        self._sender_stop.set()
        for _ in self._senders:
            self._inbox.put(DONE)
        alive += _join([threads[s.name] for s in self._senders], clock, join_until, escalate)
        alive += _join([threads["monitor"]], clock, join_until, escalate)
        self.monitor.drain()
        if "dispatcher" not in alive:
            try:
                self._settle_done()
                with self._lock:
                    unstarted = list(self._in_flight.values())
                    self._in_flight.clear()
                self.dispatcher.release_all(unstarted)
            except SmsSimError as exc:
                # The leases stay; they expire and other workers reclaim them.
                log.error("could not record the last outcomes (%s); their leases will expire "
                          "and other workers will take them", exc)
                reason = StopReason.ERROR
        if self.monitor.output_closed and reason is StopReason.COMPLETED:
            reason = StopReason.OUTPUT_CLOSED
        return self._report(reason, elapsed_s, alive)

    def _wait_for_end(self, stop_requests: Callable[[], int],
                      dispatcher_thread: threading.Thread) -> StopReason:
        while True:
            if self._failed:
                return StopReason.ERROR
            if self.monitor.output_closed:
                return StopReason.OUTPUT_CLOSED
            if stop_requests() > 0:
                return StopReason.SIGNAL
            if self._idle.is_set():
                return StopReason.COMPLETED
            dispatcher_thread.join(_JOIN_SLICE_S)

    def _report(self, reason: StopReason, elapsed_s: float, alive: list[str]) -> WorkerReport:
        stats = self.dispatcher.stats
        total = self.monitor.total
        run = Report(
            produced=stats.claimed,
            sent=total.sent,
            failed=total.failed,
            unsent=stats.released,
            elapsed_s=elapsed_s,
            avg_send_s=total.avg_send_s,
            throughput_per_s=total.attempts / elapsed_s if elapsed_s > 0 else 0.0,
            senders=tuple(
                SenderReport(index=i, sent=t.sent, failed=t.failed, avg_send_s=t.avg_send_s)
                for i, t in enumerate(self.monitor.per_sender)
            ),
            seed=self._seed,
            stopped_by=reason,
            max_lag_s=max((s.max_lag_s for s in self._senders), default=0.0),
            threads_alive=tuple(alive),
        )
        report = WorkerReport(run=run, owner=self.owner, stats=stats)
        self.monitor.write_report(run)
        if self._output is not None and not self.monitor.output_closed:
            try:
                self._output.write("\n".join(format_worker_lines(report)) + "\n")
                self._output.flush()
            except (BrokenPipeError, ValueError):
                pass
        return report


def format_worker_lines(report: WorkerReport) -> list[str]:
    """The store-side lines printed under the simulator's report."""
    stats = report.stats
    return [
        f"store: {report.owner}: {stats.claimed} claimed in {stats.claims} claims, "
        f"{stats.sent} sent, {stats.retried} retries scheduled, {stats.dead} dead, "
        f"{stats.released} released unstarted",
        f"fencing: {stats.refused} stale completions refused, "
        f"{stats.skipped_expired} sends skipped on an expired lease",
    ]


def _join(threads: Sequence[threading.Thread], clock: Clock, until: float,
          between: Callable[[], None]) -> list[str]:
    for thread in threads:
        while thread.is_alive():
            if clock.monotonic() >= until:
                break
            between()
            thread.join(_JOIN_SLICE_S)
    return [t.name for t in threads if t.is_alive()]
