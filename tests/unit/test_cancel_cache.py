"""``CancelCache`` on a fake clock: a PostgreSQL worker reads a message's cancel at most once
per recheck time, sees its own cancels at once and other hosts' within the recheck time,
and never reads a cancel again once seen."""

from __future__ import annotations

from sms_sim.clock import VirtualClock
from sms_sim.dispatch.stores.postgres.cancel_cache import CANCEL_RECHECK_S, CancelCache


class Database:
    def __init__(self) -> None:
        self.cancelled: set[int] = set()
        self.reads: list[list[int]] = []

    def read(self, ids: list[int]) -> set[int]:
        self.reads.append(ids)
        return self.cancelled & set(ids)


def test_a_send_per_delivery_costs_one_read_per_recheck_time() -> None:
    clock, db = VirtualClock(), Database()
    cache = CancelCache(clock, db.read)
    for _ in range(1000):  # a burst of sends of one message
        assert cache.cancelled([1]) == set()
    assert db.reads == [[1]]
    db.cancelled.add(1)  # cancelled on another host
    clock.advance(CANCEL_RECHECK_S / 2)
    assert cache.cancelled([1]) == set()  # within the recheck time: not yet seen
    clock.advance(CANCEL_RECHECK_S)  # 1.5 recheck times since the read
    assert cache.cancelled([1, 2]) == {1} and db.reads[-1] == [1, 2]
    clock.advance(10 * CANCEL_RECHECK_S)
    assert cache.cancelled([1]) == {1} and len(db.reads) == 2  # a cancel is final


def test_a_cancel_through_this_store_is_seen_at_once() -> None:
    clock, db = VirtualClock(), Database()
    cache = CancelCache(clock, db.read)
    assert cache.cancelled([7]) == set()
    cache.mark(7)
    assert cache.cancelled([7]) == {7} and len(db.reads) == 1
