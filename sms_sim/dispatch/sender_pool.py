"""The simulator's sender threads as the dispatcher's ``SendPool``, most urgent work first.

A worker holds claimed jobs until a sender is free. Put in the senders' inbox as they came,
a 1-recipient alert claimed during a broadcast waited behind everything claimed before it,
whatever its priority. So the inbox carries ``Slot``s (turns to send), one per job held, and
the jobs wait by priority class (highest first). A
slot is filled with the most urgent job at the moment its sender needs one: when the send
reaches the provider, or, for a send the simulator fails on its own, when its outcome is
counted. An urgent job overtakes everything held locally, with no reordering of a queue.
Within a class the messages held take turns, one job each (``_Turns``): in claim order, a
1-recipient message of the same class claimed during a broadcast still waited behind the
broadcast's jobs held from the claim before (up to a claim round of work), though the claim
itself had served it first.
Fast senders take their slots in groups (``group``, the worker's ``turns_per_hand_off``):
waking a thread for every zero-latency send cost more than the send; a slot in a group
still takes its job only when its send starts.

The senders speak in error strings (``Outcome.error``); the dispatcher settles on a
``SendFailure`` (the reason with its class). The slot keeps the one the transmit step
returned, and a failure the simulator drew itself is classified here, on the way back
(``failures.simulated_failure``: transient, permanent or throttled), where the sender that
drew it is known.

Segments (issue 14): a sender whose send time depends on them (``needs_segments``: a rate
limit in segments per second, time per segment) asks ``segments_of`` as its send starts,
which fills the slot then rather than at the provider (the send's length depends on the
job). The count is the job's content's (``segments.segments``, the count the store keeps
per message), computed once per distinct text. ``segments_sent`` adds up the segments of
accepted sends for the report.
"""

from __future__ import annotations

import functools
import bisect
import collections
import queue
import threading
from collections.abc import Callable, Iterable, Sequence

from sms_sim.config import SenderConfig
from sms_sim.dispatch.failures import SendFailure, simulated_failure
from sms_sim.dispatch.jobs import Completion, SendJob
from sms_sim.model import Outcome
from sms_sim.segments import segments
from sms_sim.sim.threaded.components import Inbox

__all__ = ["SenderPool", "Slot", "needs_segments", "SEGMENT_CACHE_SIZE"]

# Distinct texts whose segment count a pool remembers: claims come in runs of one message
# (a broadcast's recipients share its text), so a few recent texts cover nearly every job.
SEGMENT_CACHE_SIZE = 256


def needs_segments(sender: SenderConfig) -> bool:
    """Whether a sender's send time depends on the segments of what it sends: a rate
    limit (segments per second) or the SMS fields (``per_segment_s``, and the error
    classes, whose path counts segments too)."""
    return sender.rate_limit_per_s is not None or sender.has_sms_fields


class Slot:
    """A sender's turn to send one held job; ``take`` fills it, once. ``failure`` is what
    the transmit step returned for it (None: accepted, or never transmitted); ``sent_at``
    when the provider accepted it."""

    __slots__ = ("job", "failure", "sent_at", "_pool")

    def __init__(self, pool: SenderPool) -> None:
        self.job: SendJob | None = None
        self.failure: SendFailure | None = None
        self.sent_at: float | None = None
        self._pool = pool

    def take(self) -> SendJob:
        if self.job is None:
            self.job = self._pool.next_job()
        return self.job


class _Turns:
    """One priority class's held jobs: each message's in claim order (a run), the runs
    taking turns one job each, a message joining behind those already held. The round
    robin is a rotation of the runs, so a lone broadcast pays one length check a job."""

    __slots__ = ("runs", "order")

    def __init__(self) -> None:
        self.runs: dict[int, collections.deque[SendJob]] = {}  # message id -> its run
        self.order: collections.deque[collections.deque[SendJob]] = collections.deque()

    def run_of(self, message_id: int) -> collections.deque[SendJob]:
        run = self.runs.get(message_id)
        if run is None:
            run = self.runs[message_id] = collections.deque()
            self.order.append(run)
        return run

    def pop(self) -> SendJob:
        order = self.order
        run = order[0]
        job = run.popleft()
        if not run:
            order.popleft()
            del self.runs[job.claim.message_id]
        elif len(order) > 1:
            order.rotate(-1)
        return job


class SenderPool:
    """Holds at most ``max_in_hand`` jobs. ``room``, ``submit``, ``completed`` and
    ``in_flight`` are called on the dispatcher thread only, ``transmit`` on the senders',
    ``on_outcome`` on the monitor's; the held jobs are shared under a lock. ``senders`` are the
    configs of the senders, by index (to classify their simulated failures); ``on_failure``
    sees every failure on its way back (the dispatcher's ``note_failure``, which closes the
    throttle gate for a throttled one); ``now`` stamps each accepted send (the
    dispatcher's clock)."""

    def __init__(self, inbox: Inbox[Slot], wake: threading.Event, max_in_hand: int,
                 transmit: Callable[[SendJob], SendFailure | None], *,
                 now: Callable[[], float],
                 senders: Sequence[SenderConfig] = (),
                 on_failure: Callable[[SendFailure], object] | None = None,
                 group: int = 1) -> None:
        self._inbox = inbox
        self._group = max(1, group)
        self._senders = senders
        self._on_failure = on_failure
        self._wake = wake
        self._max_in_hand = max_in_hand
        self._transmit = transmit
        self._now = now
        # The held jobs by priority class, and the classes held, highest first: a dict
        # lookup and a deque append or pop a job instead of a heap's tuple comparisons
        # (pop and push were a sixth of a zero-latency worker's CPU).
        self._held: dict[int, _Turns] = {}
        self._classes: list[int] = []  # negated, ascending: bisect keeps it sorted
        self._lock = threading.Lock()
        self._done: queue.SimpleQueue[Completion] = queue.SimpleQueue()
        self._submitted = 0
        self._returned = 0
        self._segments: Callable[[str], int] = functools.lru_cache(SEGMENT_CACHE_SIZE)(
            _segment_count)
        self.segments_sent = 0  # written on the monitor's thread (then the shutdown's)

    def room(self) -> int:
        # Room opens in steps of at least half what the pool holds, so claims stay
        # batch-sized instead of one small transaction per finished send.
        free = self._max_in_hand - self.in_flight()
        return free if 2 * free >= self._max_in_hand else 0

    def submit(self, jobs: Sequence[SendJob]) -> None:
        held, classes = self._held, self._classes
        with self._lock:
            # A claim comes in runs of one message: look its run up once per run.
            priority = message_id = -1
            run: collections.deque[SendJob] = collections.deque()
            for job in jobs:
                claim = job.claim
                if claim.message_id != message_id or claim.priority != priority:
                    priority, message_id = claim.priority, claim.message_id
                    turns = held.get(priority)
                    if turns is None:
                        turns = held[priority] = _Turns()
                        bisect.insort(classes, -priority)
                    run = turns.run_of(message_id)
                run.append(job)
        # One slot a job, handed over in groups of at most ``group`` (a sender takes a
        # group at once, one wake-up instead of one a job) and never more than a fair share
        # of this batch, so every sender gets some while a slow one holds few turns.
        count = len(jobs)
        size = max(1, min(self._group, -(-count // max(1, len(self._senders)))))
        put = self._inbox.put
        if size == 1:
            for _ in jobs:
                put(Slot(self))
        else:
            for start in range(0, count, size):
                put([Slot(self) for _ in range(min(size, count - start))])
        self._submitted += count

    def next_job(self) -> SendJob:
        """The most urgent held job (there is one for every slot not yet filled)."""
        with self._lock:
            return self._pop()

    def _pop(self) -> SendJob:
        priority = -self._classes[0]
        turns = self._held[priority]
        job = turns.pop()
        if not turns.order:
            del self._held[priority]
            del self._classes[0]
        return job

    @property
    def turns(self) -> int:
        """How many turns (slots) were put in the inbox: less what the senders took
        (``Sender.taken``), the progress line's "queued", as in the threaded run (the
        inbox's size counts groups of turns, not turns)."""
        return self._submitted

    def segments_of(self, slot: Slot) -> int:
        """The segments of the job this slot sends (filling the slot now); a sender's
        ``segments_of``, called on its thread as the send starts."""
        return self._segments(slot.take().content)

    def transmit(self, slot: Slot) -> str | None:
        failure = slot.failure = self._transmit(slot.take())
        if failure is None:
            slot.sent_at = self._now()
            return None
        return failure.reason

    def completed(self) -> list[Completion]:
        done: list[Completion] = []
        get = self._done.get_nowait
        while True:
            try:
                done.append(get())
            except queue.Empty:
                break
        self._returned += len(done)
        return done

    def in_flight(self) -> int:
        return self._submitted - self._returned

    def on_outcome(self, outcome: Outcome[Slot]) -> None:
        slot, error = outcome.message, outcome.error
        failure = slot.failure
        if failure is None and error is not None:  # drawn by the simulator: never transmitted
            senders, index = self._senders, outcome.sender
            failure = simulated_failure(error, senders[index] if index < len(senders) else None)
            if self._on_failure is not None:
                self._on_failure(failure)
        job = slot.take()
        if error is None:
            self.segments_sent += self._segments(job.content)
        self._done.put((job, failure, slot.sent_at))  # None unless transmitted and accepted
        # Set only if clear: Event.set takes a lock, once per send, while a set flag stays
        # set until the dispatcher clears it, which it does before it collects (``run``),
        # so a completion put before this test is collected whichever way it goes.
        if not self._wake.is_set():
            self._wake.set()

    def unstarted(self, slots: Iterable[Slot]) -> list[SendJob]:
        """Once the senders have stopped: every job no send was made for, given the slots
        taken but never sent (a sender's ``abandoned``, the inbox's remainder)."""
        jobs: list[SendJob] = []
        with self._lock:  # in the order turns would have taken them
            while self._classes:
                jobs.append(self._pop())
        return jobs + [slot.job for slot in slots if slot.job is not None]


def _segment_count(text: str) -> int:
    return segments(text).count
