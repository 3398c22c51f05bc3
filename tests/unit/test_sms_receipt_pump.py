"""The simulated provider's delivery receipts (``dispatch.receipt_pump``) on a fake clock.

A receipt model with ``sigma`` 0 draws every delay exactly at its median, and rates of 0 or
1 fix each receipt's kind, so every due time and every recorded batch is exact. The
receipts thread's loop (``run``) runs on the test's thread with a ``VirtualClock``, whose
sleeps advance instantly; the store stops it after a given number of rounds.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence

import pytest

from sms_sim.clock import VirtualClock
from sms_sim.config import ReceiptModel
from sms_sim.dispatch.contract import Claim, DeliveryStatus, SettleKind, Settlement
from sms_sim.dispatch.dlrs import DlrOutcome, DlrReport, DlrResult
from sms_sim.dispatch.errors import StoreError
from sms_sim.dispatch.failures import SendFailure
from sms_sim.dispatch.jobs import SendJob
from sms_sim.dispatch.receipt_pump import ReceiptPump, ReceiptTally
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.stores import MemoryStore
from tests.conftest import T0, phones

EXACT = ReceiptModel(median_s=2.0, sigma=0.0, undelivered_rate=0.0, lost_rate=0.0)


class RecordingStore:
    """A ``DlrStore`` that keeps each call (``now`` and the reports); it raises for the
    calls numbered in ``fail_on`` and sets ``stop`` after ``stop_after`` calls."""

    def __init__(self, *, fail_on: Sequence[int] = (), stop_after: int | None = None) -> None:
        self.calls: list[tuple[float, list[DlrReport]]] = []
        self.attempts = 0
        self.fail_on = set(fail_on)
        self.stop_after = stop_after
        self.stop = threading.Event()

    def record_dlrs(self, reports: Sequence[DlrReport], now: float) -> DlrResult:
        self.attempts += 1
        if self.attempts in self.fail_on:
            raise StoreError("database is unavailable")
        self.calls.append((now, list(reports)))
        if self.stop_after is not None and len(self.calls) >= self.stop_after:
            self.stop.set()
        return DlrResult(outcomes=(DlrOutcome.APPLIED,) * len(reports))


def _pump(store: RecordingStore | MemoryStore, clock: VirtualClock,
          model: ReceiptModel = EXACT, *, batch_size: int = 500,
          gather_s: float = 0.05) -> ReceiptPump:
    return ReceiptPump(store, model, rng=random.Random(1), clock=clock,
                       batch_size=batch_size, gather_s=gather_s)


def test_due_receipts_are_recorded_in_due_order_with_their_own_times() -> None:
    clock, store = VirtualClock(T0), RecordingStore()
    pump = _pump(store, clock)
    for key, sent_after_s in (("c", 3.0), ("a", 1.0), ("b", 2.0)):
        pump.accepted(key, T0 + sent_after_s, None)
    assert pump.next_due_at() == T0 + 3.0
    assert pump.pump(T0 + 10) == 3
    assert store.calls == [(T0 + 10, [DlrReport("a", "delivered", T0 + 3.0),
                                      DlrReport("b", "delivered", T0 + 4.0),
                                      DlrReport("c", "delivered", T0 + 5.0)])]
    assert pump.tally() == ReceiptTally(delivered=3)


def test_receipts_go_in_batches_and_only_once_due() -> None:
    clock, store = VirtualClock(T0), RecordingStore()
    pump = _pump(store, clock, batch_size=2)
    for index in range(6):
        pump.accepted(f"k{index}", T0 + index, None)  # due at T0 + 2 .. T0 + 7
    assert pump.pump(T0 + 1.999) == 0 and store.calls == []
    assert pump.pump(T0 + 6) == 5
    assert [[r.key for r in reports] for _, reports in store.calls] == [
        ["k0", "k1"], ["k2", "k3"], ["k4"]]
    assert pump.tally() == ReceiptTally(delivered=5, outstanding=1)
    assert pump.next_due_at() == T0 + 7


def test_a_receipt_past_the_validity_says_expired_at_its_end() -> None:
    """A receipt drawn 2 s after the send, for a message valid 0.5 s more, is expired at
    the end of the validity; one valid long enough is delivered when drawn."""
    clock, store = VirtualClock(T0), RecordingStore()
    pump = _pump(store, clock)
    pump.accepted("short", T0, T0 + 0.5)
    pump.accepted("long", T0, T0 + 60)
    assert pump.next_due_at() == T0 + 0.5
    pump.pump(T0 + 0.5)
    pump.pump(T0 + 2)
    assert [reports for _, reports in store.calls] == [
        [DlrReport("short", "expired", T0 + 0.5)], [DlrReport("long", "delivered", T0 + 2)]]
    assert pump.tally() == ReceiptTally(delivered=1, expired=1)


def test_lost_receipts_are_counted_never_recorded_and_undelivered_ones_are() -> None:
    clock, store = VirtualClock(T0), RecordingStore()
    lost = _pump(store, clock, ReceiptModel(median_s=1.0, sigma=0.0, lost_rate=1.0,
                                            undelivered_rate=0.0))
    lost.accepted("gone", T0, None)
    assert lost.next_due_at() is None and lost.pump(T0 + 1e6) == 0
    assert lost.tally() == ReceiptTally(unknown=1)
    failed = _pump(store, clock, ReceiptModel(median_s=1.0, sigma=0.0, lost_rate=0.0,
                                              undelivered_rate=1.0))
    failed.accepted("k", T0, None)
    failed.pump(T0 + 1)
    assert store.calls == [(T0 + 1, [DlrReport("k", "undelivered", T0 + 1)])]
    assert failed.tally() == ReceiptTally(undelivered=1)


def test_a_batch_the_store_refuses_is_kept_and_recorded_later() -> None:
    clock, store = VirtualClock(T0), RecordingStore(fail_on=[1])
    pump = _pump(store, clock)
    pump.accepted("k", T0, None)
    with pytest.raises(StoreError):
        pump.pump(T0 + 5)
    assert pump.tally() == ReceiptTally(outstanding=1)
    assert pump.pump(T0 + 6) == 1
    assert store.calls == [(T0 + 6, [DlrReport("k", "delivered", T0 + 2)])]


def test_the_receipts_loop_records_each_when_due_and_gathers_close_ones() -> None:
    """Receipts due at +2, +2.01 and +6: the first round at +2 takes one, the next may not
    come before ``gather_s`` later (so +2.05 takes the second, 40 ms late, instead of a
    transaction of its own 10 ms after the first), the third is recorded at +6 exactly."""
    clock, store = VirtualClock(T0), RecordingStore(stop_after=3)
    pump = _pump(store, clock, gather_s=0.05)
    for key, sent_at in (("a", T0), ("b", T0 + 0.01), ("c", T0 + 4)):
        pump.accepted(key, sent_at, None)
    pump.run(store.stop)
    assert [(now - T0, [r.key for r in reports]) for now, reports in store.calls] == [
        (2.0, ["a"]), (pytest.approx(2.05), ["b"]), (6.0, ["c"])]


def test_the_receipts_loop_waits_out_a_failing_store() -> None:
    clock, store = VirtualClock(T0), RecordingStore(fail_on=[1, 2], stop_after=1)
    pump = _pump(store, clock)
    pump.accepted("k", T0, None)
    pump.run(store.stop)
    # Two refusals, paused 0.1 s then 0.2 s (``patience``), then recorded.
    assert [(round(now - T0, 6), [r.key for r in reports]) for now, reports in store.calls] \
        == [(2.3, ["k"])]


def test_a_stopped_pump_leaves_what_is_not_due_outstanding_at_shutdown() -> None:
    """The worker's stop: the receipts thread ends at ``stop``; the shutdown then records
    what came due meanwhile, and what is due later is outstanding in the tally."""
    clock, store = VirtualClock(T0), RecordingStore()
    pump = _pump(store, clock)
    stop = threading.Event()
    stop.set()
    pump.accepted("early", T0, None)
    pump.accepted("late", T0 + 60, None)
    pump.run(stop)  # returns at once: stop is set
    assert store.calls == []
    clock.advance(5)
    assert pump.pump(clock.now()) == 1
    assert pump.tally() == ReceiptTally(delivered=1, outstanding=1)


def _claim(key_recipient: str, valid_until: float | None = None) -> SendJob:
    claim = Claim(1, 1, key_recipient, "hi", 1, T0 + 30, message_uid="uid",
                  valid_until=valid_until)
    return SendJob(claim.recipient, claim.content, claim.idempotency_key, claim)


def test_only_accepted_sends_draw_a_receipt_under_the_claims_key() -> None:
    clock, store = VirtualClock(T0), RecordingStore()
    pump = _pump(store, clock)
    answers: list[SendFailure | None] = [SendFailure("no"), None]
    transmit = pump.transmitter(lambda job: answers.pop(0))
    assert transmit(_claim("555-000-0001")) == SendFailure("no")
    assert transmit(_claim("555-000-0002", valid_until=T0 + 1)) is None
    pump.pump(T0 + 10)
    assert store.calls == [(T0 + 10, [DlrReport("uid:555-000-0002", "expired", T0 + 1)])]


def test_a_receipt_due_before_the_send_is_settled_is_held_then_applied() -> None:
    """A short receipt delay can beat the worker's own report of the send: the store holds
    the receipt and applies it when the send is recorded; the tally counts it delivered."""
    clock, store = VirtualClock(T0), MemoryStore()
    store.submit(NewMessage.validated(content="hi", recipients=phones(2)), T0)
    pump = _pump(store, clock, ReceiptModel(median_s=0.01, sigma=0.0, lost_rate=0.0,
                                            undelivered_rate=0.0))
    claims = store.claim("w", 10, 30.0, T0)
    for claim in claims:
        pump.accepted(claim.idempotency_key, T0, None)
    assert pump.pump(T0 + 1) == 2  # neither send is recorded yet: both held
    store.settle("w", [Settlement(delivery_id=c.delivery_id, attempts=c.attempts,
                                  kind=SettleKind.SENT) for c in claims], T0 + 2)
    assert {d.status for d in store.deliveries()} == {DeliveryStatus.DELIVERED}
    assert [d.dlr_at for d in store.deliveries()] == [T0 + 0.01] * 2
    assert pump.tally() == ReceiptTally(delivered=2)
    pump.accepted(claims[0].idempotency_key, T0 + 3, None)  # a send made twice
    pump.pump(T0 + 4)
    assert pump.tally() == ReceiptTally(delivered=2, not_applied=1)


def test_a_batch_larger_than_a_store_call_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size must be in 1..10000"):
        _pump(RecordingStore(), VirtualClock(T0), batch_size=10_001)
