"""The simulated provider's delivery receipts in the dispatch worker (issue 14).

A real provider accepts a send, then posts its receipt (DLR) seconds to hours later to
``POST /v1/provider/receipts``. The simulated one does the same in process: each send it
accepts draws its receipt at once, with the simulator's model (``policy.receipt_sampler``
on a seeded stream, ``policy.receipt_at`` with the claim's ``valid_until``, so a receipt
that would come after the validity ends says expired, at that end), and the
``ReceiptPump`` records each through ``DlrStore.record_dlrs`` once it is due, in batches,
under the provider key the delivery was sent with. Receipts that never come (the model's
lost share) are counted, never recorded: their deliveries stay ``sent``, as with a real
provider.

Receipts may be due before the worker has recorded the send (a short delay, a send settled
in the next round): the store holds those and applies them when the send is recorded
(``dispatch.dlrs``), so the pump needs no ordering with the dispatcher.

Threads: ``accepted`` is called by the senders (through ``transmitter``), ``pump`` by the
worker's ``receipts`` thread (``run``) and, once that has stopped, by the thread that shuts
the worker down, for what is due by then; what is due later is ``outstanding`` in the
tally (a real provider would still send it). Time is the injected clock's ``now`` (epoch
seconds, as receipts carry), so a fake clock drives every step.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from sms_sim.clock import Clock
from sms_sim.config import ReceiptModel
from sms_sim.dispatch.dlrs import DLR_BATCH_MAX, DlrOutcome, DlrReport, DlrStore
from sms_sim.dispatch.errors import StoreDamagedError, StoreError
from sms_sim.dispatch.failures import SendFailure
from sms_sim.dispatch.jobs import SendJob
from sms_sim.dispatch.patience import StorePatience
from sms_sim.model import ReceiptStatus
from sms_sim.policy import receipt_at, receipt_sampler

__all__ = ["ReceiptPump", "ReceiptTally", "RECEIPT_BATCH", "RECEIPT_GATHER_S"]

log = logging.getLogger(__name__)

RECEIPT_BATCH = 500  # receipts per record_dlrs call (one transaction each)
# The least time between two recording rounds while receipts keep coming due: receipts a
# few milliseconds apart go in one transaction instead of one commit (an fsync on SQLite)
# each; a receipt is recorded at most this much after it is due. A backlog of a full
# batch is recorded at once.
RECEIPT_GATHER_S = 0.05
# The longest the receipts thread sleeps with nothing due (it is woken for an earlier one).
_IDLE_S = 3600.0
_NOT_APPLIED = (DlrOutcome.REPEAT, DlrOutcome.IGNORED, DlrOutcome.UNKNOWN)
# A receipt waiting to be due: (at, tiebreak, provider key, status); a heap of them.
_Due = tuple[float, int, str, ReceiptStatus]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptTally:
    """What the simulated provider's receipts came to.

    ``delivered``, ``undelivered`` and ``expired`` count receipts the store took (applied,
    or held until the send is recorded); ``unknown`` the sends whose receipt never comes
    (the model's lost share); ``outstanding`` receipts drawn but not due yet when the
    worker stopped (a real provider would post them later); ``not_applied`` receipts the
    store recorded as changing nothing (a repeat for a send made twice, or a delivery
    already past it).
    """

    delivered: int = 0
    undelivered: int = 0
    expired: int = 0
    unknown: int = 0
    outstanding: int = 0
    not_applied: int = 0

    @property
    def recorded(self) -> int:
        return self.delivered + self.undelivered + self.expired


class ReceiptPump:
    """Draws a receipt for each accepted send and records the due ones in the store.

    ``store`` is the worker's (thread-safe, as every ``DispatchStore``); ``rng`` the seeded
    stream receipts are drawn from, under a lock (senders draw concurrently, so which send
    gets which draw depends on thread timing, as in the threaded simulator). ``batch_size``
    is at most ``DLR_BATCH_MAX``; ``outage_s`` how long the store may fail every call before
    the receipts thread gives up (``DispatchConfig.store_outage_s``); ``owner`` names the
    worker in log lines.
    """

    def __init__(self, store: DlrStore, model: ReceiptModel, *, rng: random.Random,
                 clock: Clock, batch_size: int = RECEIPT_BATCH,
                 gather_s: float = RECEIPT_GATHER_S, outage_s: float = 300.0,
                 owner: str = "worker") -> None:
        if not 1 <= batch_size <= DLR_BATCH_MAX:
            raise ValueError(f"batch_size must be in 1..{DLR_BATCH_MAX} (got {batch_size!r})")
        self._store = store
        self._clock = clock
        self._batch_size = batch_size
        self._gather_s = gather_s
        self._outage_s = outage_s
        self._owner = owner
        self._draw = receipt_sampler(rng, model)
        self._lock = threading.Lock()  # guards the draw, the heap and the counts
        self._due: list[_Due] = []
        self._order = itertools.count()
        self._counts: Counter[ReceiptStatus] = Counter()
        self._lost = 0
        self._not_applied = 0
        self._wake = threading.Event()
        # When the receipts thread looks next (epoch seconds), and the earliest it may:
        # a new receipt wakes it only if it would be recorded sooner (``accepted``).
        self._look_at = math.inf
        self._earliest_look = -math.inf

    def accepted(self, key: str, sent_at: float, valid_until: float | None) -> None:
        """The provider accepted the send under ``key`` at ``sent_at``: draw its receipt.
        Thread-safe; never touches the store."""
        with self._lock:
            status, at = receipt_at(sent_at, self._draw(), valid_until)
            if status is ReceiptStatus.UNKNOWN:
                self._lost += 1
                return
            heapq.heappush(self._due, (at, next(self._order), key, status))
            wake = max(at, self._earliest_look) < self._look_at
        if wake:
            self._wake.set()

    def transmitter(self, transmit: Callable[[SendJob], SendFailure | None]
                    ) -> Callable[[SendJob], SendFailure | None]:
        """``transmit`` (a dispatcher's send step), drawing a receipt for each send it
        reports accepted, keyed by the claim's provider key (``Claim.idempotency_key``) and
        expiring at its ``valid_until``."""
        accepted, now = self.accepted, self._clock.now

        def transmit_with_receipt(job: SendJob) -> SendFailure | None:
            failure = transmit(job)
            if failure is None:
                claim = job.claim
                accepted(claim.idempotency_key, now(), claim.valid_until)
            return failure

        return transmit_with_receipt

    def next_due_at(self) -> float | None:
        """When the earliest receipt not yet recorded is due (None: none is)."""
        with self._lock:
            return self._due[0][0] if self._due else None

    def pump(self, now: float) -> int:
        """Record every receipt due at ``now``, earliest first, ``batch_size`` per call;
        returns how many were recorded. A batch the store refused (``StoreError``) goes back
        to be tried again, and the error is raised: a store error delays receipts, never
        loses them. One caller at a time (the receipts thread, then the shutdown)."""
        recorded = 0
        while True:
            with self._lock:
                batch: list[_Due] = []
                while self._due and self._due[0][0] <= now and len(batch) < self._batch_size:
                    batch.append(heapq.heappop(self._due))
            if not batch:
                return recorded
            reports = [DlrReport(key, str(status), at) for at, _, key, status in batch]
            try:
                result = self._store.record_dlrs(reports, now)
            except BaseException:
                with self._lock:
                    for entry in batch:
                        heapq.heappush(self._due, entry)
                raise
            with self._lock:
                for (_, _, _, status), outcome in zip(batch, result.outcomes, strict=True):
                    if outcome in _NOT_APPLIED:
                        self._not_applied += 1
                    else:
                        self._counts[status] += 1
            recorded += len(batch)

    def wake(self) -> None:
        """Cut the receipts thread's sleep short (at a stop, after setting ``stop``)."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """The receipts thread: record what is due, sleep until the next receipt is (but
        gather those due within ``gather_s`` of a round into the next one), until ``stop``
        (set it, then ``wake``). A failing store is waited out as the dispatcher does
        (``StorePatience``); a damaged one, or one failing too long, ends the thread with
        the error, which stops the worker."""
        clock, wake = self._clock, self._wake
        patience = StorePatience(clock, self._outage_s, self._owner)
        while True:
            wake.clear()  # before looking at stop: a stop set meanwhile is never missed
            if stop.is_set():
                return
            now = clock.now()
            try:
                self.pump(now)
                patience.answered()
                delay_s = self._plan_next(now)
            except StoreDamagedError:
                raise
            except StoreError as exc:
                delay_s = patience.failed(exc)
            clock.sleep(delay_s, wake)

    def _plan_next(self, now: float) -> float:
        """Seconds until the next round (everything due at ``now`` is recorded): the next
        receipt's due time, but not sooner than ``gather_s`` after this round."""
        with self._lock:
            self._earliest_look = now + self._gather_s
            next_at = self._due[0][0] if self._due else now + _IDLE_S
            self._look_at = max(next_at, self._earliest_look)
            return self._look_at - now

    def tally(self) -> ReceiptTally:
        """The counts so far (``outstanding``: drawn, not recorded yet)."""
        with self._lock:
            counts = self._counts
            return ReceiptTally(delivered=counts[ReceiptStatus.DELIVERED],
                                undelivered=counts[ReceiptStatus.UNDELIVERED],
                                expired=counts[ReceiptStatus.EXPIRED], unknown=self._lost,
                                outstanding=len(self._due), not_applied=self._not_applied)
