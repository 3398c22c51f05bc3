"""Concurrency storm: client threads submit, edit and cancel while dispatcher threads send.

Each thread has its own ``SqliteStore`` on one file, as separate processes would. The audit
afterwards: every recipient of a live message got exactly the message's final content once
(so no edit landed after dispatch began, and none was half-applied), cancelled messages
sent nothing after their cancel, nothing is left open and the file is sound.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from pathlib import Path

import pytest

from sms_sim.clock import RealClock
from sms_sim.dispatch.contract import (
    DeliveryStatus,
    DeliveryView,
    MessageStatus,
    MessageView,
    provider_key,
)
from sms_sim.dispatch.errors import ConflictError, LockedError, NotFoundError
from sms_sim.dispatch.requests import MessageEdit, NewMessage
from sms_sim.dispatch.dispatcher import DispatchConfig, Dispatcher
from sms_sim.dispatch.stores import SqliteStore
from sms_sim.dispatch.transport import MemoryProvider

# Real threads, processes or wall-clock waits (STYLE.md section 10).
pytestmark = pytest.mark.slow

JOIN_TIMEOUT_S = 60.0
CLIENTS = 3
DISPATCHERS = 2
OPS_PER_CLIENT = 40


class ContentLedger(MemoryProvider):
    """Remembers what content each (message, recipient) received."""

    def __init__(self) -> None:
        super().__init__()
        self.contents: dict[str, list[str]] = {}

    def send(self, key: str, recipient: str, content: str) -> None:
        super().send(key, recipient, content)
        with self._lock:
            self.contents.setdefault(key, []).append(content)


def test_storm_of_clients_and_dispatchers_keeps_every_invariant(tmp_path: Path) -> None:
    path = tmp_path / "storm.db"
    clock = RealClock()
    SqliteStore(path).close()
    provider = ContentLedger()
    stop = threading.Event()
    refusals: Counter[str] = Counter()
    lock = threading.Lock()

    def client(index: int) -> None:
        store, rng = SqliteStore(path), random.Random(index)
        try:
            for op in range(OPS_PER_CLIENT):
                try:
                    _client_op(store, clock, rng, index, op)
                except (ConflictError, LockedError, NotFoundError) as exc:
                    with lock:
                        refusals[type(exc).__name__] += 1
        finally:
            store.close()

    def dispatcher(index: int) -> None:
        store = SqliteStore(path)
        try:
            Dispatcher(store, clock=clock, rng=random.Random(100 + index),
                       config=DispatchConfig(batch_size=10, idle_recheck_s=0.005)
                       ).run(provider, stop)
        finally:
            store.close()

    senders = [threading.Thread(target=dispatcher, args=(i,), name=f"dispatcher-{i}")
               for i in range(DISPATCHERS)]
    clients = [threading.Thread(target=client, args=(i,), name=f"client-{i}")
               for i in range(CLIENTS)]
    for thread in senders + clients:
        thread.start()
    _join_all(clients)
    audit = SqliteStore(path)
    _wait_until_nothing_due(audit, clock)
    stop.set()
    _join_all(senders)

    messages = audit.messages(limit=10_000)
    deliveries = audit.deliveries(limit=100_000)
    assert messages and sum(refusals.values()) > 0
    assert not [d for d in deliveries if d.status in (DeliveryStatus.PENDING,
                                                      DeliveryStatus.LEASED,
                                                      DeliveryStatus.RETRYING)]
    _assert_each_got_the_final_content_once(messages, deliveries, provider)
    assert {m.status for m in messages} <= {MessageStatus.COMPLETED, MessageStatus.CANCELLED}
    assert provider.summary().effective_duplicates == 0
    assert audit.integrity_check() == "ok"
    audit.close()


def _client_op(store: SqliteStore, clock: RealClock, rng: random.Random, index: int,
               op: int) -> None:
    """One random client action: submit (half the time), edit (35%) or cancel (15%)."""
    people = [f"55{index}-{op:03d}-{i:04d}" for i in range(rng.randint(1, 30))]
    choice = rng.random()
    if choice < 0.5:
        store.submit(NewMessage.validated(
            content=f"c{index}-{op}", recipients=people,
            scheduled_at=clock.now() + rng.choice([0.0, 0.02])), clock.now())
    elif choice < 0.85:
        target = rng.randint(1, 1 + op * CLIENTS // 2)
        found = store.messages(message_id=target)
        if found:
            store.edit(target, found[0].version, MessageEdit.validated(
                content=f"edited {index}-{op}", recipients=people), clock.now())
    else:
        store.cancel(rng.randint(1, 1 + op * CLIENTS // 2), clock.now())


def _join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
        assert not thread.is_alive()


def _wait_until_nothing_due(audit: SqliteStore, clock: RealClock) -> None:
    """Let the dispatchers drain the queue (bounded by ``JOIN_TIMEOUT_S``)."""
    wait = threading.Event()
    deadline = clock.monotonic() + JOIN_TIMEOUT_S
    while audit.next_due_at(clock.now()) is not None and clock.monotonic() < deadline:
        clock.sleep(0.01, wait)


def _assert_each_got_the_final_content_once(messages: list[MessageView],
                                            deliveries: list[DeliveryView],
                                            provider: ContentLedger) -> None:
    """A sent delivery got its message's final content exactly once; any other was
    cancelled with its message and sent nothing."""
    by_id = {m.id: m for m in messages}
    for delivery in deliveries:
        message = by_id[delivery.message_id]
        key = provider_key(message.uid, delivery.recipient)
        if delivery.status is DeliveryStatus.SENT:
            assert provider.contents[key] == [message.content], key
        else:
            assert delivery.status is DeliveryStatus.CANCELLED
            assert message.status is MessageStatus.CANCELLED
            assert key not in provider.contents
