"""The threaded mode: a producer thread, N sender threads and a monitor thread on real time.

It runs the whole model the configuration describes, as the virtual-time mode does: the
producer releases each arrival at its time after the start (a burst all at once), and with
``max_attempts`` above 1 the monitor judges each failed attempt (retry after backoff and
jitter, or dead-letter after the last attempt) and hands retries back to the producer, which
puts each in the inbox once due. The counts mean what they mean in virtual time: with
retries, ``dead_lettered`` counts messages whose every attempt failed and ``failed`` is 0;
per-sender and progress ``failed`` count failed attempts.

Shutdown protocol (the part that makes "nothing lost, nothing counted twice" hold):

* One ``stop`` Event is the only shutdown signal. Setting it stops the producer from putting
  more messages, stops senders from starting new sends and ends the monitor loop. A send
  already in flight finishes (the grace period) unless ``abort`` is set: ``run`` sets it on a
  second stop request or when the grace period runs out, and the interrupted message is
  counted unsent.
* The producer always ends by putting one ``DONE`` sentinel per sender, after its last
  message (with retries, once every message it put is sent or dead), so a sender's blocking
  ``get`` always returns. Once ``stop`` is set a sender still takes items but counts each
  message as unsent instead of sending it, until its sentinel. A producer waiting out a
  backoff waits on the retry handoff's ``wake``, which ``run`` sets right after ``stop``.
* Each count has one owner: the producer counts what it put and the retries it still held,
  the monitor counts outcomes (and, with retries, dead letters), each sender counts what it
  abandoned, and ``run`` counts what is left in the queue and the retries in transit from
  the monitor to the producer. The report checks the identity across those independent
  counts rather than deriving one from the others.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Final, TextIO, cast

from sms_sim.clock import Clock, RealClock
from sms_sim.config import ArrivalKind, SimulationConfig
from sms_sim.generate import generate_messages, new_seed
from sms_sim.model import Message
from sms_sim.policy import arrival_times, arrivals_rng, retry_rng, sender_rng
from sms_sim.report import Report, StopReason, build_report, sms_stats
from sms_sim.errors import ConfigError
from sms_sim.sim.threaded.components import (
    DONE,
    Inbox,
    OutcomeQueue,
    Producer,
    Sender,
    drain_inbox,
    handoff_batch_size,
    refill_pause_s,
)
from sms_sim.sim.threaded.monitor import Monitor
from sms_sim.sim.threaded.limits import ThreadStartError, threaded_senders_max
from sms_sim.sim.threaded.schedule import RetryHandoff
from sms_sim.sim.threaded.sms import EXPIRED_ERROR, SmsBook
from sms_sim.sim.virtual.percentiles import QUANTILES, quantiles_of_sorted
from sms_sim.sim.threaded.supervise import DEFAULT_GRACE_S, ThreadGroup

__all__ = ["run", "DEFAULT_GRACE_S"]

log = logging.getLogger(__name__)

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
    the generated stream (with burst arrivals its length is then what ``produced`` counts;
    Poisson or scheduled arrivals take ``num_messages`` of it, fewer if it runs out first).
    Arrival times and retries follow ``config`` on real time (see the module docstring), so
    ``elapsed_s`` is comparable to the virtual-time makespan. Blocks until the run
    ends; never raises for a simulated failure, and worker-thread exceptions end the run
    with ``StopReason.ERROR``. Raises ``ConfigError`` before starting anything when the
    configuration has more senders than this host's threaded limit
    (``threaded_senders_max``), and ``ThreadStartError`` (a ``ConfigError``) after stopping
    the threads already started when the OS refuses one anyway.
    """
    _check_thread_limit(config)
    clock = clock or RealClock()
    requests = stop_requests or (lambda: 0)
    stream = sys.stdout if output is _STDOUT else cast("TextIO | None", output)
    seed = new_seed() if config.seed is None else config.seed

    stop = threading.Event()
    retries: RetryHandoff[Message] | None = None
    if config.retry.max_attempts > 1:
        retries = RetryHandoff(config.retry, retry_rng(seed))
    burst = config.arrivals.kind is ArrivalKind.BURST
    group = ThreadGroup(stop=stop, abort=threading.Event(), clock=clock, stop_requests=requests,
                        # A failing thread sets stop; a producer in a backoff waits on wake.
                        on_failure=None if retries is None else retries.wake.set)
    inbox: Inbox[Message] = queue.SimpleQueue()
    successes: OutcomeQueue[Message] = queue.SimpleQueue()
    failures: OutcomeQueue[Message] = queue.SimpleQueue()
    source = generate_messages(config.num_messages, seed) if messages is None else messages
    batch_size = handoff_batch_size(config.senders)
    # The SMS model's book (issue 14), None when it is off: t = 0 is set below, once known.
    sms = _sms_book(config, seed, burst)
    senders = [
        Sender(index, sender_config, rng=sender_rng(seed, index), inbox=inbox,
               successes=successes, failures=failures, stop=stop, clock=clock,
               abort=group.abort,
               segments_of=None if sms is None else sms.segments_of,
               valid_until=(None if sms is None or config.valid_for_s is None
                            else sms.valid_until),
               expired_error=EXPIRED_ERROR)
        for index, sender_config in enumerate(config.senders)
    ]
    # t = 0 of the arrival process: taken after the senders' streams are seeded (a few ms
    # with a thousand senders) so that the first arrivals are not released late.
    started_at = clock.monotonic()
    if sms is not None:
        sms.started_at = started_at
    producer = Producer(source, inbox, stop, num_consumers=len(config.senders),
                        # The bound is in messages: a batch counts as its size.
                        max_queued=max(2 * len(config.senders), config.queue_size // batch_size),
                        batch_size=batch_size,
                        refill_pause_s=refill_pause_s(config.senders, config.queue_size),
                        arrivals=None if burst else arrival_times(
                            config.arrivals, config.num_messages, arrivals_rng(seed)),
                        retries=retries, clock=clock, started_at=started_at,
                        on_arrival=None if sms is None or not sms.is_timed else sms.arrived)
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
        # Only in a burst without retries do idle senders mean the host is too slow to
        # feed them; arrivals spread in time and backoffs idle them by design. The SMS
        # model's segment slots and throttle pauses hold senders longer than the pace
        # check's one-segment mean, so it is off there too.
        check_pace=burst and retries is None and sms is None,
        # In messages (an inbox item may be a batch of them), retries put back included.
        queued=lambda: max(0, producer.produced + producer.retried
                           - sum(s.taken for s in senders)),
        retries=retries,
        sms=sms,
    )
    sender_names = [s.name for s in senders]
    _start(group, [("monitor", monitor.run), *((s.name, s.run) for s in senders),
                   ("producer", producer.run)], inbox, grace_s)

    def first_running() -> threading.Thread | None:
        for name in (*sender_names, "producer"):
            if group.is_alive(name):
                return group.thread(name)
        return None

    reason = group.wait(
        finished=lambda: first_running() is None,
        watch=first_running,
        output_closed=lambda: monitor.output_closed,
        end_at=None if config.duration_s is None else started_at + config.duration_s,
    )
    stopped_at = clock.monotonic()

    # Join order matters: senders first (they may still put outcomes), then the producer,
    # then count what is left in the inbox, then the monitor, then one last drain of the
    # outcome queues so nothing put after the monitor's final pass is missed.
    group.begin_shutdown(grace_s)
    if retries is not None:
        retries.wake.set()  # the producer may be waiting out a backoff on it, not on stop
    alive = group.join(sender_names)
    # Up to the stop, or to the end of the last send counted if later (sends in flight at
    # a stop finish and count, as in the virtual clock's makespan; a throughput over less
    # time than they took was overstated), never to a send interrupted and not counted.
    elapsed_s = max(stopped_at, max((s.ended_at for s in senders), default=stopped_at)) \
        - started_at
    alive += group.join(["producer"])
    left_in_queue = len(drain_inbox(inbox))
    alive += group.join(["monitor"])
    if "monitor" not in alive:  # one drainer at a time: the monitor owns its tallies
        monitor.drain()
    monitor.behind_s(started_at + elapsed_s)  # the final pace check counts towards max lag
    if alive:
        log.warning("threads still running after the grace period: %s", ", ".join(alive))

    total = monitor.total
    unsent = left_in_queue + sum(len(s.abandoned) for s in senders)
    # With retries: failed messages still waiting out their backoff (in the producer's
    # heap, or on their way to it after the monitor's last drain) were never completed.
    failed = None if retries is None else 0  # with retries a final failure is dead
    dead = 0
    if retries is not None:
        unsent += len(producer.retries_pending) + len(retries.take_due())
        dead = retries.dead
    expired = _expired(sms, retries)
    if alive:
        # A live sender may hold one message it neither sent nor counted; say so rather
        # than let it vanish from the totals.
        final_failures = total.failed if failed is None else dead
        unsent = max(unsent, producer.produced - total.sent - final_failures - expired)
    # A burst arrives whole at t = 0, as the virtual clock has it: what the producer had
    # not put in the queue yet (it streams into a bounded one) is there, unsent.
    produced = producer.produced
    if burst and messages is None and produced < config.num_messages:
        unsent += config.num_messages - produced
        produced = config.num_messages
    if monitor.output_closed and reason is StopReason.COMPLETED:
        reason = StopReason.OUTPUT_CLOSED
    report = build_report(
        produced=produced,
        per_sender=monitor.per_sender,
        unsent=unsent,
        failed=failed,
        dead_lettered=dead,
        elapsed_s=elapsed_s,
        seed=seed,
        stopped_by=reason,
        max_lag_s=max(monitor.max_behind_s, max((s.max_lag_s for s in senders), default=0.0)),
        threads_alive=alive,
        expired=expired,
        sms=None if sms is None else sms_stats(
            sms.tally, config.receipts is not None,
            _delivered_percentiles(sorted(sms.tally.delivered_s))),
    )
    monitor.write_report(report)
    if monitor.output_closed and report.stopped_by is StopReason.COMPLETED:
        # The report itself could not be written (a full disk, a closed pipe): say so.
        report = dataclasses.replace(report, stopped_by=StopReason.OUTPUT_CLOSED)
    return report


def _sms_book(config: SimulationConfig, seed: int, burst: bool) -> SmsBook[Message] | None:
    """The SMS model's book when it is on (t = 0 is set once the run knows it)."""
    if not config.is_sms:
        return None
    return SmsBook(config, seed=seed, started_at=0.0, timed=not burst, text_of=_text_of)


def _expired(sms: SmsBook[Message] | None, retries: RetryHandoff[Message] | None) -> int:
    """Messages expired: before a send (the monitor's count) or before a retry came due."""
    if sms is None:
        return 0
    return sms.tally.expired + (0 if retries is None else retries.expired)


def _text_of(message: Message) -> str:
    return message.text


def _delivered_percentiles(
    ordered: list[float],
) -> tuple[float | None, float | None, float | None]:
    p50, p95, p99 = quantiles_of_sorted(ordered, QUANTILES)
    return p50, p95, p99


def _check_thread_limit(config: SimulationConfig) -> None:
    limit = threaded_senders_max()
    if len(config.senders) > limit:
        raise ConfigError(f"senders must be <= {limit} in all for real threads on this host "
                          f"(got {len(config.senders)}); the virtual mode takes more")


def _start(
    group: ThreadGroup,
    targets: Iterable[tuple[str, Callable[[], None]]],
    inbox: Inbox[Message],
    grace_s: float,
) -> None:
    """Start the threads in order; if the OS refuses one, stop those already running and
    re-raise: without a producer nobody would give the senders their sentinels, so they are
    given here (one each, as the producer would)."""
    try:
        for name, target in targets:
            group.start(name, target)
    except ThreadStartError:
        _release(group, inbox, grace_s)
        raise


def _release(group: ThreadGroup, inbox: Inbox[Message], grace_s: float) -> None:
    group.begin_shutdown(grace_s)
    started = group.names
    for name in started:
        if name.startswith("sender-"):
            inbox.put(DONE)
    alive = group.join(started)
    if alive:
        log.warning("threads still running after a failed start: %s", ", ".join(alive))
