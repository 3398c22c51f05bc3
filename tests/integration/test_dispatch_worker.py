"""The worker on real threads: the one dispatch loop, the simulator's senders and monitor,
a real SQLite file.

Tiny latencies; every thread the worker starts is joined inside ``run`` and reported alive
if it did not stop, which the asserts check.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

from sms_sim.clock import RealClock
from sms_sim.config import RetryPolicy, SenderConfig
from sms_sim.dispatch.contract import DeliveryStatus
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.dispatcher import DispatchConfig
from sms_sim.dispatch.stores import SqliteStore
from sms_sim.dispatch.transport import MemoryProvider
from sms_sim.dispatch.worker import Worker
from sms_sim.report import StopReason
from tests.conftest import phones

# Real threads, processes or wall-clock waits (STYLE.md section 10).
pytestmark = pytest.mark.slow


def test_worker_sends_everything_through_the_sender_pool_and_accounts_for_it(
        tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "w.db")
    clock = RealClock()
    store.submit(NewMessage.validated(content="hi", recipients=phones(600)), clock.now())
    provider = MemoryProvider()
    output = io.StringIO()
    config = DispatchConfig(batch_size=50, retry=RetryPolicy(max_attempts=3, base_s=0.001,
                                                             cap_s=0.002))
    worker = Worker(store, provider, senders=[SenderConfig(0.0, 0.0, 0.2)] * 3, clock=clock,
                    seed=5, config=config, output=output, interval_s=60.0,
                    exit_when_idle=True)
    report = worker.run()
    assert report.stopped_by is StopReason.COMPLETED and report.threads_alive == ()
    assert report.is_accounted and report.released == 0
    assert report.retried > 0  # a failure rate of 0.2 over 600 sends
    statuses = {d.status for d in store.deliveries(limit=10_000)}
    assert statuses <= {DeliveryStatus.SENT, DeliveryStatus.DEAD}
    sent = len(store.deliveries(status=DeliveryStatus.SENT, limit=10_000))
    dead = len(store.deliveries(status=DeliveryStatus.DEAD, limit=10_000))
    assert sent == report.sent == provider.summary().delivered
    assert dead == report.dead and sent + dead == 600
    assert sum(s.sent for s in report.senders) == report.sent
    assert provider.summary().effective_duplicates == 0
    assert report.refused == 0
    text = output.getvalue()
    assert f"completed: {worker.owner} claimed {report.claimed}" in text
    assert "accounting: claimed" in text and ": ok" in text
    store.close()


class GatedProvider(MemoryProvider):
    """Holds its ``at``-th send until ``gate`` opens: a send in progress at the stop."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.calls, self.gate = at, 0, threading.Event()

    def send(self, key: str, recipient: str, content: str) -> None:
        self.calls += 1
        if self.calls == self.at:
            self.gate.wait(30)
        super().send(key, recipient, content)


def test_a_stop_request_gives_unstarted_claims_back_and_loses_nothing(tmp_path: Path) -> None:
    """The stop comes while the 20th send is in progress (the provider holds it until the
    senders were told to stop), so the worker still holds unstarted claims: they go back."""
    store = SqliteStore(tmp_path / "w.db")
    clock = RealClock()
    store.submit(NewMessage.validated(content="hi", recipients=phones(300)), clock.now())
    provider = GatedProvider(at=20)
    worker = Worker(store, provider, senders=[SenderConfig(0.002, 0.0, 0.0)], clock=clock,
                    seed=1, config=DispatchConfig(batch_size=40), output=None)
    stopping = worker._sender_stop  # noqa: SLF001 - open the gate once senders must stop

    def open_gate() -> None:
        stopping.wait(30)
        provider.gate.set()

    opener = threading.Thread(target=open_gate)
    opener.start()
    report = worker.run(stop_requests=lambda: 1 if provider.calls >= 20 else 0)
    opener.join(30)
    assert report.stopped_by is StopReason.SIGNAL and report.threads_alive == ()
    assert report.is_accounted and report.released > 0  # claimed = sent + given back
    counts = store.messages()[0].counts
    assert counts[DeliveryStatus.LEASED] == 0
    assert counts[DeliveryStatus.SENT] == report.sent == provider.summary().delivered == 20
    assert counts[DeliveryStatus.SENT] + counts[DeliveryStatus.PENDING] == 300
    store.close()


def test_senders_nearly_as_slow_as_the_lease_neither_livelock_nor_duplicate(
        tmp_path: Path) -> None:
    """Sends nearly as slow as the lease: the worker neither livelocks nor loses a claim.

    Each claim travels as its own send job, so two claims of one delivery never collide
    (when claims were looked up by ticket, a stale copy in the queue once ended the
    dispatcher thread with a KeyError); and
    the worker holds no more than its senders can send within half a lease, so claims do
    not expire in its own queue (holding two batches here once livelocked it).
    """
    store = SqliteStore(tmp_path / "w.db")
    clock = RealClock()
    store.submit(NewMessage.validated(content="hi", recipients=phones(4)), clock.now())
    provider = MemoryProvider()
    config = DispatchConfig(batch_size=2, lease_s=0.05, idle_recheck_s=0.01,
                            retry=RetryPolicy(max_attempts=50, base_s=0.0))
    worker = Worker(store, provider, senders=[SenderConfig(0.03, 0.0, 0.0)], clock=clock,
                    seed=2, config=config, output=None, exit_when_idle=True)
    report = worker.run()
    assert report.stopped_by is StopReason.COMPLETED and report.threads_alive == ()
    assert {d.status for d in store.deliveries()} == {DeliveryStatus.SENT}
    assert provider.summary().effective_duplicates == 0
    store.close()
