"""Issue 11's promises at the dispatch loop: a cancel stops every send not yet started, a
worker keeps going through a busy or briefly failing store, and holds work by time."""

from __future__ import annotations

import queue
import random
import sqlite3
import threading
from collections.abc import Collection, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sms_sim.clock import RealClock, VirtualClock
from sms_sim.config import SenderConfig
from sms_sim.dispatch.stores.sqlite.cancel_watch import RECHECK_S
from sms_sim.dispatch.contract import Claim, DeliveryStatus, DispatchStore
from sms_sim.dispatch.errors import StoreBusyError, StoreDamagedError, StoreError
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.dispatcher import DispatchConfig, Dispatcher, SendJob
from sms_sim.dispatch.failures import SendFailure
from sms_sim.dispatch.sender_pool import SenderPool, Slot
from sms_sim.dispatch.stores import SqliteStore
from sms_sim.dispatch.worker import (
    CLAIM_ROUND_S,
    MAX_TURNS_PER_HAND_OFF,
    Worker,
    check_lease,
    turns_per_hand_off,
    work_in_hand,
)
from sms_sim.dispatch.transport import MemoryProvider
from sms_sim.errors import ConfigError
from sms_sim.sim.threaded.components import Inbox, drain_inbox
from tests.conftest import T0, phones


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "d.db")


class CancellingProvider(MemoryProvider):
    """Cancels message 1 (through its own connection) during the ``at``-th send."""

    def __init__(self, path: Path, at: int) -> None:
        super().__init__()
        self.path, self.at, self.calls = path, at, 0

    def send(self, key: str, recipient: str, content: str) -> None:
        self.calls += 1
        if self.calls == self.at:
            other = SqliteStore(self.path)
            other.cancel(1, T0)
            other.close()
        super().send(key, recipient, content)


def test_a_cancel_stops_every_send_the_worker_holds_but_has_not_started(
        store: SqliteStore, tmp_path: Path) -> None:
    """Item 8: after "cancelled ... 200 in flight", 140 more SMS went out. Here the cancel
    commits during the 3rd send of a batch of 10: the other 7 are never sent."""
    store.submit(NewMessage.validated(content="x", recipients=phones(10)), T0)
    provider = CancellingProvider(tmp_path / "d.db", at=3)
    dispatcher = Dispatcher(store, clock=VirtualClock(T0), rng=random.Random(1),
                            config=DispatchConfig(batch_size=10))
    dispatcher.run(provider, threading.Event(), until_idle=True)
    assert provider.calls == 3
    counts = store.messages()[0].counts
    assert (counts[DeliveryStatus.SENT], counts[DeliveryStatus.CANCELLED]) == (3, 7)
    assert (dispatcher.stats.released, dispatcher.stats.withdrawn) == (7, 7)
    # Withdrawn sends cost no attempt: the cancelled deliveries were attempted 0 times.
    assert {d.attempts for d in store.deliveries(status=DeliveryStatus.CANCELLED)} == {0}


class CountingProvider(MemoryProvider):
    """Counts sends that reach it after ``cancelled`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelled = threading.Event()
        self.after_cancel = 0
        self.calls = 0
        self._lock = threading.Lock()

    def send(self, key: str, recipient: str, content: str) -> None:
        with self._lock:
            self.calls += 1
            self.after_cancel += self.cancelled.is_set()
        super().send(key, recipient, content)


@pytest.mark.slow  # real sender threads, a few seconds
def test_after_a_cancel_commits_at_most_one_send_per_sender_goes_out(tmp_path: Path) -> None:
    """Item 8 with the real worker and slow senders: sends reaching the provider after the
    cancel's commit are only those that had passed their check, at most one per sender."""
    path = tmp_path / "w.db"
    setup = SqliteStore(path)
    setup.submit(NewMessage.validated(content="x", recipients=phones(400)), T0)
    provider = CountingProvider()
    senders = [SenderConfig(0.02, 0.0, 0.0)] * 3
    worker = Worker(SqliteStore(path), provider, senders=senders, clock=RealClock(), seed=1,
                    config=DispatchConfig(batch_size=200), show_progress=False,
                    exit_when_idle=True)
    done = threading.Event()

    def work() -> None:
        worker.run()
        done.set()

    runner = threading.Thread(target=work)
    runner.start()
    try:
        while provider.calls < 20:
            RealClock().sleep(0.01, done)
        setup.cancel(1, T0)
        provider.cancelled.set()
    finally:
        runner.join(60)
    assert not runner.is_alive()
    assert provider.after_cancel <= len(senders)
    counts = setup.messages()[0].counts
    assert counts[DeliveryStatus.SENT] == provider.calls
    assert counts[DeliveryStatus.SENT] + counts[DeliveryStatus.CANCELLED] == 400
    setup.close()


def test_a_cancel_is_seen_by_every_other_store_as_soon_as_it_returns(tmp_path: Path) -> None:
    """``cancelled`` re-reads only when the cancel side file changed (or its answer is
    ``RECHECK_S`` old): a cancel through another connection is seen at once after it."""
    clock = VirtualClock(T0)
    path = tmp_path / "w.db"
    worker = SqliteStore(path, lock_clock=clock)
    portal = SqliteStore(path)
    for i in range(2):
        portal.submit(NewMessage.validated(content="x", recipients=phones(1, i)), T0)
    reads: list[list[int]] = []
    real_read = worker._watch._read  # noqa: SLF001 - counting the SQL reads

    def counting(ids: list[int]) -> set[int]:
        reads.append(ids)
        return real_read(ids)

    worker._watch._read = counting  # type: ignore[method-assign,assignment]  # noqa: SLF001
    assert worker.cancelled([1, 2]) == set() and len(reads) == 1
    for _ in range(100):
        assert worker.cancelled([1]) == set()
    assert len(reads) == 1  # nothing changed: no SQL read, only a stat
    portal.cancel(2, T0)
    assert worker.cancelled([2]) == {2} and len(reads) == 2
    assert worker.cancelled([2]) == {2} and len(reads) == 2  # a cancel is final
    assert worker.cancelled([1]) == set() and len(reads) == 3  # read again since the mark
    # A canceller that died between its commit and its second mark: seen within RECHECK_S.
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE messages SET status = 'cancelled' WHERE id = 1")
    conn.close()
    assert worker.cancelled([1]) == set()
    clock.advance(RECHECK_S)
    assert worker.cancelled([1]) == {1}
    worker.close()
    portal.close()


class FlakyStore:
    """A store whose ``claim`` raises ``errors`` in turn before it works."""

    def __init__(self, inner: DispatchStore, errors: Sequence[StoreError]) -> None:
        self._inner = inner
        self._errors = list(errors)

    def claim(self, owner: str, limit: int, lease_s: float, now: float) -> list[Claim]:
        if self._errors:
            raise self._errors.pop(0)
        return self._inner.claim(owner, limit, lease_s, now)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def test_a_worker_waits_out_a_busy_or_failing_store_with_backoff(store: SqliteStore) -> None:
    """Item 11: a worker exited for good after 30 s waiting for the write lock."""
    store.submit(NewMessage.validated(content="x", recipients=phones(3)), T0)
    clock = VirtualClock(T0)
    errors = [StoreBusyError("locked")] * 20 + [StoreError("disk I/O error")] * 3
    flaky = FlakyStore(store, errors)
    dispatcher = Dispatcher(flaky, clock=clock, rng=random.Random(1),  # type: ignore[arg-type]
                            config=DispatchConfig(store_outage_s=60.0))
    provider = MemoryProvider()
    dispatcher.run(provider, threading.Event(), until_idle=True)
    assert provider.summary().delivered == 3
    assert dispatcher.stats.store_errors == 23
    assert clock.now() - T0 > 60.0  # busy for longer than the outage limit: still waited


def test_a_store_failing_past_the_outage_limit_or_damaged_ends_the_run(
        store: SqliteStore) -> None:
    store.submit(NewMessage.validated(content="x", recipients=phones(1)), T0)
    for errors, limit_s in (([StoreError("gone")] * 1000, 30.0),
                            ([StoreDamagedError("damaged")], 1000.0)):
        clock = VirtualClock(T0)
        flaky = FlakyStore(store, errors)
        dispatcher = Dispatcher(flaky, clock=clock,  # type: ignore[arg-type]
                                rng=random.Random(1),
                                config=DispatchConfig(store_outage_s=limit_s))
        with pytest.raises(StoreError, match=str(errors[0])):
            dispatcher.run(MemoryProvider(), threading.Event(), until_idle=True)
        assert clock.now() - T0 <= limit_s + 5.0


@pytest.mark.parametrize("batch", [100, 1000])
def test_a_worker_holds_about_one_claim_round_of_work_whatever_the_batch(batch: int) -> None:
    """Item 9: four senders at 0.2 s held two batches (200), so an urgent message due during
    a broadcast waited 10 s in the worker's own queue."""
    config = DispatchConfig(batch_size=batch)
    assert work_in_hand([SenderConfig(0.2, 0.0, 0.0)] * 4, config) == 5
    assert work_in_hand([SenderConfig(0.05, 0.0, 0.0)] * 4, config) == 8
    assert work_in_hand([SenderConfig(0.0, 0.0, 0.0)] * 4, config) == 2 * batch


def test_a_lease_must_outlast_twice_the_longest_send_and_a_claim_round() -> None:
    # --lease 0.02 with 10 ms sends: reports came after their leases, other workers sent
    # again, and 22 deliveries that had gone out were recorded dead.
    senders = [SenderConfig(0.01, 0.001, 0.0), SenderConfig(0.2, 0.05, 0.0)]
    check_lease(2 * (0.25 + CLAIM_ROUND_S), senders)
    with pytest.raises(ConfigError, match=r"twice the slowest send \(0\.25 s\)"):
        check_lease(0.59, senders)
    check_lease(20.1, senders, provider_timeout_s=10.0)
    with pytest.raises(ConfigError, match=r"twice the provider timeout \(10 s\).*20\.1 or"):
        check_lease(15.0, senders, provider_timeout_s=10.0)


def test_an_in_memory_database_answers_cancelled_without_a_side_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = SqliteStore(":memory:")
    store.submit(NewMessage.validated(content="x", recipients=phones(1)), T0)
    assert store.cancelled([1]) == set()
    store.cancel(1, T0)
    assert store.cancelled([1]) == {1}
    store.close()
    assert list(tmp_path.iterdir()) == []


def _recording_pool(max_in_hand: int, group: int = 1,
                    senders: Sequence[SenderConfig] = ()) -> tuple[
                        SenderPool, Inbox[Slot], list[str]]:
    """A sender pool whose transmit step records each job's recipient, in send order."""
    inbox: Inbox[Slot] = queue.SimpleQueue()
    sent: list[str] = []

    def transmit(job: SendJob) -> SendFailure | None:
        sent.append(job.recipient)
        return None

    return SenderPool(inbox, threading.Event(), max_in_hand=max_in_hand,
                      transmit=transmit, now=lambda: T0, group=group, senders=senders), inbox, sent


def _held_job(recipient: str, priority: int, delivery_id: int = 0,
              message_id: int = 1) -> SendJob:
    claim = Claim(delivery_id, message_id, recipient, "x", 1, T0 + 30, 0, "u", priority)
    return SendJob(recipient, "x", f"u:{recipient}", claim)


def test_each_senders_turn_takes_the_most_urgent_job_held() -> None:
    """Item 9: an urgent job claimed after a broadcast's overtakes what the worker holds."""
    pool, inbox, order = _recording_pool(10)
    pool.submit([_held_job("b1", 0), _held_job("b2", 0)])
    pool.submit([_held_job("urgent", 10), _held_job("b3", 0)])
    slots = drain_inbox(inbox)
    for slot in slots[:2]:
        pool.transmit(slot)
    assert order == ["urgent", "b1"]
    assert [j.recipient for j in pool.unstarted(slots[2:])] == ["b2", "b3"]


def test_a_message_claimed_behind_a_held_broadcast_goes_at_the_next_turn() -> None:
    """A 1-recipient message of the broadcast's class, claimed (first) while the worker
    still held the broadcast's previous claim, waited behind all of it (up to a claim
    round of work). The messages held take turns."""
    pool, inbox, order = _recording_pool(3000)
    pool.submit([_held_job(f"b{i}", 0, i, message_id=1) for i in range(1000)])
    pool.submit([_held_job("small", 0, 5000, message_id=2)]
                + [_held_job(f"b{i}", 0, i, message_id=1) for i in range(1000, 2000)])
    slots = drain_inbox(inbox)
    for slot in slots[:3]:
        pool.transmit(slot)
    assert order == ["b0", "small", "b1"]
    rest = [j.recipient for j in pool.unstarted(slots[3:])]
    assert rest == [f"b{i}" for i in range(2, 2000)]


class _TurnsReference:
    """The order sends take held jobs, written plainly: the highest class first; in a
    class, the messages in the order they were first held, one job each in turn, a
    message leaving the rotation when it has none (and joining at the back again)."""

    def __init__(self) -> None:
        self.classes: dict[int, list[tuple[int, list[str]]]] = {}

    def put(self, priority: int, message_id: int, name: str) -> None:
        rotation = self.classes.setdefault(priority, [])
        for held, names in rotation:
            if held == message_id:
                names.append(name)
                return
        rotation.append((message_id, [name]))

    def take(self) -> str:
        priority = max(self.classes)
        rotation = self.classes[priority]
        message_id, names = rotation.pop(0)
        name = names.pop(0)
        if names:
            rotation.append((message_id, names))
        if not rotation:
            del self.classes[priority]
        return name

    def __len__(self) -> int:
        return sum(len(names) for rotation in self.classes.values() for _, names in rotation)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.lists(st.tuples(st.integers(-2, 3), st.integers(1, 3)),
                                   min_size=1, max_size=6),
                          st.integers(1, 4)), max_size=12), st.integers(1, 4))
def test_sends_take_held_jobs_by_class_then_messages_in_turn(
        steps: list[list[tuple[int, int]] | int], group: int) -> None:
    """The held jobs are kept per class and per message (deques in a rotation); the order
    a send takes them must be exactly the plain model's: submits of mixed classes and
    messages interleaved with sends, then the rest given back at a stop in the same order.
    Turns handed over in groups change nothing: a turn takes its job when the send starts."""
    pool, inbox, sent = _recording_pool(100, group)
    reference = _TurnsReference()
    expected: list[str] = []
    slots: list[Slot] = []
    number = 0
    for step in steps:
        if isinstance(step, list):  # a claim of these (priority, message) jobs
            jobs = []
            for priority, message_id in step:
                name = f"j{number}"
                jobs.append(_held_job(name, priority, number, message_id))
                reference.put(priority, message_id, name)
                number += 1
            pool.submit(jobs)
            slots.extend(drain_inbox(inbox))
        else:  # this many senders' turns
            for _ in range(min(step, len(slots))):
                pool.transmit(slots.pop(0))
                expected.append(reference.take())
    assert sent == expected
    rest = [reference.take() for _ in range(len(reference))]
    assert [job.recipient for job in pool.unstarted(slots)] == rest


def test_fast_senders_take_turns_in_groups_and_slow_ones_one_at_a_time() -> None:
    """A zero-latency sender's turn costs less than the wake-up that hands it over, so
    fast senders take turns in groups; a group never outlasts a tenth of a claim round on
    the slowest sender, nor holds more than one sender's share of a batch."""
    fast, slow = SenderConfig(0.0, 0.0, 0.0), SenderConfig(0.08, 0.0, 0.0)
    assert turns_per_hand_off([fast, fast]) == MAX_TURNS_PER_HAND_OFF
    assert turns_per_hand_off([fast, SenderConfig(0.001, 0.0, 0.0)]) == 5
    assert turns_per_hand_off([fast, slow]) == 1
    assert turns_per_hand_off([]) == MAX_TURNS_PER_HAND_OFF
    pool, inbox, _ = _recording_pool(100, group=4, senders=[fast, fast])
    pool.submit([_held_job(f"r{i}", 0, i) for i in range(10)])
    items = [inbox.get_nowait() for _ in range(inbox.qsize())]
    assert [len(item) if isinstance(item, list) else 1 for item in items] == [4, 4, 2]
    assert pool.turns == 10  # turns, not the groups in the inbox
    pool.submit([_held_job("a", 0, 10), _held_job("b", 0, 11), _held_job("c", 0, 12)])
    # Three jobs between two senders: two each at most, so neither waits on the other.
    assert [len(item) if isinstance(item, list) else 1
            for item in (inbox.get_nowait() for _ in range(inbox.qsize()))] == [2, 1]


def test_a_store_that_cannot_keep_cancel_marks_refuses_to_open_for_writing(
        tmp_path: Path) -> None:
    """A cancel check that always failed made a worker claim and give back in a loop,
    forever and silently (found in review): now the worker cannot start."""
    path = tmp_path / "w.db"
    SqliteStore(path).close()
    (tmp_path / "w.db-cancels").unlink()
    (tmp_path / "w.db-cancels").mkdir()  # the side file cannot be made
    with pytest.raises(StoreError, match="cannot open the cancel marks"):
        SqliteStore(path)
    SqliteStore(path, read_only=True).close()  # a reader never needs them


class UncheckableStore(FlakyStore):
    """A store whose cancel check fails ``failures`` times."""

    def __init__(self, inner: DispatchStore, failures: int) -> None:
        super().__init__(inner, [])
        self._failures = failures

    def cancelled(self, message_ids: Collection[int]) -> set[int]:
        if self._failures:
            self._failures -= 1
            raise StoreError("disk I/O error")
        return self._inner.cancelled(message_ids)


def test_a_failing_cancel_check_reaches_the_loop_and_its_patience(store: SqliteStore) -> None:
    for failures, limit_s, done in ((4, 300.0, True), (10**6, 30.0, False)):
        store.submit(NewMessage.validated(content="x", recipients=phones(3)), T0)
        clock = VirtualClock(T0)
        dispatcher = Dispatcher(UncheckableStore(store, failures),  # type: ignore[arg-type]
                                clock=clock, rng=random.Random(1),
                                config=DispatchConfig(store_outage_s=limit_s))
        provider = MemoryProvider()
        if done:
            dispatcher.run(provider, threading.Event(), until_idle=True)
            assert provider.summary().delivered == 3 and dispatcher.stats.store_errors >= 1
        else:
            with pytest.raises(StoreError, match="disk I/O"):
                dispatcher.run(provider, threading.Event(), until_idle=True)
            assert dispatcher.stats.claims < 100  # backed off, not spinning


def test_a_cancel_through_another_path_to_the_file_is_seen_at_once(tmp_path: Path) -> None:
    clock = VirtualClock(T0)  # time stands still: only the token can tell
    real = tmp_path / "alerts.db"
    worker = SqliteStore(real, lock_clock=clock)
    worker.submit(NewMessage.validated(content="x", recipients=phones(1)), T0)
    (tmp_path / "current.db").symlink_to(real)
    portal = SqliteStore(tmp_path / "current.db")
    assert worker.cancelled([1]) == set()
    portal.cancel(1, T0)
    assert worker.cancelled([1]) == {1}
    portal.close()
    worker.close()


def test_an_in_memory_store_shared_by_threads_cancels_and_checks_without_deadlock() -> None:
    store = SqliteStore(":memory:")
    for i in range(200):
        store.submit(NewMessage.validated(content="x", recipients=phones(1, i)), T0)
    errors: list[Exception] = []

    def cancel_all() -> None:
        try:
            for message_id in range(1, 201):
                store.cancel(message_id, T0)
        except Exception as exc:  # reported below
            errors.append(exc)

    def check_all() -> None:
        try:
            for message_id in range(1, 201):
                store.cancelled([message_id])
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=cancel_all), threading.Thread(target=check_all)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not any(t.is_alive() for t in threads) and errors == []
    assert store.cancelled(list(range(1, 201))) == set(range(1, 201))
    store.close()
