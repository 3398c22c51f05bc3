"""Fairness on a fake clock: 1-recipient messages due during a broadcast go out in the next
claim round, not after the broadcast. Each send costs 1 ms of virtual time."""

from __future__ import annotations

import random
from pathlib import Path

from sms_sim.clock import VirtualClock
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.dispatcher import DispatchConfig, Dispatcher
from sms_sim.dispatch.stores import SqliteStore
from sms_sim.dispatch.transport import MemoryProvider
from tests.conftest import T0, phones

SEND_S = 0.001
BATCH = 100


class SlowProvider(MemoryProvider):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock

    def send(self, key: str, recipient: str, content: str) -> None:
        self.clock.advance(SEND_S)
        super().send(key, recipient, content)


def test_small_messages_are_not_starved_by_a_broadcast(tmp_path: Path) -> None:
    clock = VirtualClock(T0)
    store = SqliteStore(tmp_path / "fair.db")
    store.submit(NewMessage.validated(content="broadcast", recipients=phones(5000)), T0)
    dispatcher = Dispatcher(store, clock=clock, rng=random.Random(1),
                            config=DispatchConfig(batch_size=BATCH))
    provider = SlowProvider(clock)
    small: list[int] = []
    for round_number in range(60):
        if round_number % 3 == 1:
            message = NewMessage.validated(content="urgent", recipients=["999-000-0000"])
            small.append(store.submit(message, clock.now()).message_id)
        dispatcher.send_batch(provider)
    delays_s = []
    for message_id in small:
        (view,) = store.messages(message_id=message_id)
        (delivery,) = store.deliveries(message_id=message_id)
        assert delivery.sent_at is not None
        delays_s.append(delivery.sent_at - view.scheduled_at)
    # Each is claimed in the very next round: at most one batch of sends later.
    assert len(delays_s) == 20
    # sent_at is the settle, after the batch; 1e-4 covers float rounding at epoch magnitude.
    assert max(delays_s) <= BATCH * SEND_S + 1e-4
    assert store.messages(message_id=1)[0].counts  # the broadcast is still going meanwhile
    store.close()
