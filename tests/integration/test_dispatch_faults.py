"""Faults: a full disk, a read-only database, a clock jumping two hours either way.

Each ends with the same audit: clear ``StoreError``, nothing lost, SQLite's integrity check
passes, and nothing was sent before its scheduled time.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from pathlib import Path

import pytest

from sms_sim.dispatch.contract import DeliveryStatus
from sms_sim.dispatch.errors import StoreError
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.dispatcher import DispatchConfig, Dispatcher
from sms_sim.dispatch.stores import SqliteStore
from tests.conftest import T0, RecordingProvider, phones

TWO_HOURS_S = 7200.0


class JumpingClock:
    """A fake clock that can be set anywhere, backwards included (a wall clock can)."""

    def __init__(self, start_s: float) -> None:
        self.now_s = start_s

    def now(self) -> float:
        return self.now_s

    def monotonic(self) -> float:
        return self.now_s

    def sleep(self, seconds: float, stop: threading.Event) -> bool:
        self.now_s += max(0.0, seconds)
        return stop.is_set()


def test_disk_full_is_a_clear_error_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "full.db"
    setup = SqliteStore(path)
    setup.submit(NewMessage.validated(content="first", recipients=phones(3)), T0)
    setup.close()
    with sqlite3.connect(path) as conn:
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
    store = SqliteStore(path, max_page_count=pages + 1)
    with pytest.raises(StoreError, match="database or disk is full"):
        store.submit(NewMessage.validated(content="big", recipients=phones(5000)), T0)
    assert [m.content for m in store.messages()] == ["first"]
    assert len(store.deliveries()) == 3  # no half-inserted recipients
    claims = store.claim("w", 10, 30.0, T0)  # the queue still works at the size it has
    assert len(claims) == 3
    assert store.integrity_check() == "ok"
    store.close()


def test_a_read_only_database_refuses_writes_and_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    writer = SqliteStore(path)
    writer.submit(NewMessage.validated(content="x", recipients=phones(2)), T0)
    writer.close()
    reader = SqliteStore(path, read_only=True)
    assert len(reader.messages()) == 1
    for write in (
        lambda: reader.submit(NewMessage.validated(content="y", recipients=phones(1)), T0),
        lambda: reader.claim("w", 10, 30.0, T0),
        lambda: reader.cancel(1, T0),
    ):
        with pytest.raises(StoreError, match="readonly database"):
            write()
    assert reader.messages()[0].counts[DeliveryStatus.PENDING] == 2
    assert reader.integrity_check() == "ok"
    reader.close()


@pytest.mark.parametrize("jump_s", [-TWO_HOURS_S, TWO_HOURS_S])
def test_a_clock_jump_neither_sends_early_nor_parks_nor_duplicates(
        tmp_path: Path, jump_s: float) -> None:
    clock = JumpingClock(T0)
    store = SqliteStore(tmp_path / "jump.db")
    store.submit(NewMessage.validated(content="now", recipients=phones(4)), T0 - 3 * TWO_HOURS_S)
    scheduled = store.submit(NewMessage.validated(content="later", recipients=phones(2),
                                                  scheduled_at=T0 + 600), T0)
    provider = RecordingProvider(clock)
    config = DispatchConfig(lease_s=30.0, batch_size=2, idle_recheck_s=TWO_HOURS_S)
    first = Dispatcher(store, clock=clock, rng=random.Random(1), config=config)
    second = Dispatcher(store, clock=clock, rng=random.Random(2), config=config)
    held = first.claim()  # then the clock jumps while these are in hand
    clock.now_s += jump_s
    second.run(provider, threading.Event(), until_idle=True)
    assert first.settle([first.outcome(c, None) for c in held]) == 0  # stale: refused
    # Nothing parked: every delivery went out, none twice, none before its time.
    assert {d.status for d in store.deliveries()} == {DeliveryStatus.SENT}
    assert provider.summary().effective_duplicates == 0
    later = [d for d in store.deliveries() if d.message_id == scheduled.message_id]
    assert all(d.sent_at is not None and d.sent_at >= T0 + 600 for d in later)
    assert store.integrity_check() == "ok"
    store.close()
