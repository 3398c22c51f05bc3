"""``PruneStore.prune`` (``dispatch/pruning.py``), run against every backend: each test
encodes a sentence of its docstring. The backends are in ``conftest``."""

from __future__ import annotations

import re

import pytest

from sms_sim.dispatch.contract import (
    Claim,
    DeliveryStatus,
    DispatchStore,
    InvalidRequestError,
    MessageStatus,
    PruneResult,
    SettleKind,
    Settlement,
)
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.stores import SqliteStore
from sms_sim.dispatch.tenants import DEFAULT_TENANT
from tests.conftest import T0, phones
from tests.contract.conftest import LEASE_S, submit


def _sent(claims: list[Claim]) -> list[Settlement]:
    return [Settlement(delivery_id=c.delivery_id, attempts=c.attempts, kind=SettleKind.SENT)
            for c in claims]


def _finished(store: DispatchStore, count: int, at: float, *, start: int = 0,
              key: str | None = None) -> int:
    """A message of ``count`` recipients, all sent: completed at ``at``."""
    message_id = submit(store, count, start=start, key=key)
    claims = store.claim("w", 1000, LEASE_S, at - 1)
    assert {c.message_id for c in claims} == {message_id}
    store.settle("w", _sent(claims), at)
    assert store.messages(message_id=message_id)[0].status is MessageStatus.COMPLETED
    return message_id


def test_prune_deletes_what_finished_before_the_cutoff_with_its_deliveries_and_nothing_else(
        store: DispatchStore) -> None:
    done_old = _finished(store, 3, T0 + 10)
    cancelled_old = submit(store, 2, start=10)
    store.cancel(cancelled_old, T0 + 20)
    done_new = _finished(store, 2, T0 + 100, start=20)
    in_flight = submit(store, 2, start=30)
    leased = store.claim("w", 2, LEASE_S, T0)  # sends in flight, then a cancel
    assert len(leased) == 2
    store.cancel(in_flight, T0 + 20)
    scheduled = submit(store, 4, start=40, at=T0 + 3600)
    before = (store.messages(limit=100), store.deliveries(limit=1000))

    assert store.prune(T0 + 50, dry_run=True) == PruneResult(messages=2, deliveries=5)
    assert (store.messages(limit=100), store.deliveries(limit=1000)) == before

    assert store.prune(T0 + 50) == PruneResult(messages=2, deliveries=5)
    kept = {view.id for view in store.messages(limit=100)}
    assert kept == {done_new, in_flight, scheduled}
    assert {d.message_id for d in store.deliveries(limit=1000)} == kept
    assert not store.messages(message_id=done_old) and not store.deliveries(
        message_id=cancelled_old)
    assert store.prune(T0 + 50) == PruneResult(messages=0, deliveries=0)
    # Once its sends in flight have been reported, the cancelled message is finished too,
    # as of its cancel.
    store.settle("w", _sent(leased), T0 + 29)
    assert store.prune(T0 + 50) == PruneResult(messages=1, deliveries=2)
    assert store.count_messages() == 2
    assert store.delivery_counts()[DeliveryStatus.SENT] == 2
    if isinstance(store, SqliteStore):  # its kept counts went with the messages
        assert store.integrity_check() == "ok"


def test_the_cutoff_is_strict(store: DispatchStore) -> None:
    _finished(store, 1, T0 + 10)
    assert store.prune(T0 + 10) == PruneResult(messages=0, deliveries=0)
    assert store.prune(T0 + 10.5) == PruneResult(messages=1, deliveries=1)


def test_batches_delete_whole_messages_however_small_they_are(store: DispatchStore) -> None:
    for number in range(4):
        _finished(store, 3, T0 + 10, start=10 * number)
    assert store.prune(T0 + 50, batch_rows=2) == PruneResult(messages=4, deliveries=12)
    assert store.messages() == [] and store.deliveries() == []


def test_ids_are_never_handed_out_again(store: DispatchStore) -> None:
    ids = [_finished(store, 2, T0 + 10, start=10 * number) for number in range(3)]
    last_delivery = max(d.id for d in store.deliveries())
    store.prune(T0 + 50)
    assert store.messages() == []
    fresh = submit(store, 2, start=100)
    assert fresh > max(ids)
    assert min(d.id for d in store.deliveries(message_id=fresh)) > last_delivery


def test_a_pruned_message_takes_its_idempotency_key_with_it(store: DispatchStore) -> None:
    first = _finished(store, 2, T0 + 10, key="once")
    assert store.keep_receipt(first, "receipt-1")
    store.prune(T0 + 50)
    assert store.keyed("once", tenant=DEFAULT_TENANT, now=T0) is None
    again = store.submit(NewMessage.validated(content="alert", recipients=phones(2),
                                              idempotency_key="once"), T0 + 60)
    assert again.created and again.message_id != first and again.receipt is None


@pytest.mark.parametrize(("cutoff", "batch_rows", "fragment"), [
    (float("nan"), 10, "finished_before must be a finite time"),
    (float("inf"), 10, "finished_before must be a finite time"),
    (T0, 0, "batch_rows must be an integer >= 1 (got 0)"),
    (T0, True, "batch_rows must be an integer >= 1"),
])
def test_bad_arguments_are_refused_and_change_nothing(
        store: DispatchStore, cutoff: float, batch_rows: int, fragment: str) -> None:
    _finished(store, 1, T0 + 10)
    with pytest.raises(InvalidRequestError, match=re.escape(fragment)):
        store.prune(cutoff, batch_rows=batch_rows)
    assert store.count_messages() == 1
