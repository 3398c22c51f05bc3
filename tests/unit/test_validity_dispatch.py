"""Validity in the dispatch loop (issue 14), on a fake clock: a message whose validity ended
is never sent late, whether it ended before the claim or while a worker held the claim.
"""

from __future__ import annotations

import random
import threading

from sms_sim.clock import VirtualClock
from sms_sim.dispatch.contract import DeliveryStatus, MessageOutcome, MessageStatus
from sms_sim.dispatch.dispatcher import DispatchConfig, Dispatcher, SendJob
from sms_sim.dispatch.failures import VALIDITY_ENDED
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.stores import MemoryStore
from tests.conftest import T0, RecordingProvider, phones


def test_a_message_whose_validity_ended_before_any_worker_came_is_never_sent() -> None:
    clock = VirtualClock(T0)
    store = MemoryStore()
    store.submit(NewMessage.validated(content="stale", recipients=phones(3),
                                      valid_for_s=60), T0)
    clock.advance(60.0)
    provider = RecordingProvider(clock)
    Dispatcher(store, clock=clock, rng=random.Random(1)).run(provider, threading.Event(),
                                                             until_idle=True)
    assert provider.sent_at == []
    (view,) = store.messages()
    assert view.status is MessageStatus.COMPLETED and view.outcome is MessageOutcome.EXPIRED
    assert view.counts[DeliveryStatus.EXPIRED] == 3


def test_a_claim_held_past_the_validity_end_is_given_back_unsent_and_expires() -> None:
    clock = VirtualClock(T0)
    store = MemoryStore()
    store.submit(NewMessage.validated(content="soon", recipients=phones(2),
                                      valid_for_s=60), T0)
    provider = RecordingProvider(clock)
    dispatcher = Dispatcher(store, clock=clock, rng=random.Random(1),
                            config=DispatchConfig(lease_s=300.0))
    claims = dispatcher.claim()
    assert {c.valid_until for c in claims} == {T0 + 60}
    transmit = dispatcher.transmitter(provider)
    jobs = [SendJob(c.recipient, c.content, dispatcher.provider_key(c), c) for c in claims]
    assert transmit(jobs[0]) is None  # before the end: sent
    clock.advance(60.0)  # a lease may outlive the validity: the send is refused all the same
    refused = transmit(jobs[1])
    assert refused is not None and refused.reason == VALIDITY_ENDED
    assert dispatcher.settle_completed([(jobs[0], None, T0), (jobs[1], refused, None)]) == 2
    assert dispatcher.claim() == []  # the claim's sweep marks it expired
    assert provider.sent_at == [T0]
    found = sorted(d.status for d in store.deliveries())
    assert found == [DeliveryStatus.EXPIRED, DeliveryStatus.SENT]
    (view,) = store.messages()
    assert view.status is MessageStatus.COMPLETED
    assert view.outcome is MessageOutcome.PARTLY_FAILED
