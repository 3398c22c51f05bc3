"""The tenant sentences of the ``DispatchStore`` contract, and the ``KeyStore`` half, on
every backend: isolation (another tenant's message does not exist for the call), keys and
receipts scoped per tenant, dead letters requeued by id, and API keys kept as hashes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sms_sim.dispatch.contract import DeliveryStatus, DispatchStore, SettleKind, Settlement
from sms_sim.dispatch.errors import (
    ConflictError,
    KeyReusedError,
    NotFoundError,
    StoreError,
)
from sms_sim.dispatch.keys import ApiKey
from sms_sim.dispatch.requests import MessageEdit, NewMessage
from sms_sim.dispatch.tenants import DEFAULT_TENANT
from tests.conftest import T0, phones
from tests.contract.conftest import LEASE_S, submit

ACME, GLOBEX = "acme", "globex"


def _named(store: DispatchStore, message_id: int, tenant: str) -> list[Callable[[], object]]:
    """Every store operation that names ``message_id``, as ``tenant`` calls it."""
    edit = MessageEdit.validated(content="changed")
    return [
        lambda: store.edit(message_id, 1, edit, T0, tenant=tenant),
        lambda: store.cancel(message_id, T0, tenant=tenant),
        lambda: store.keep_receipt(message_id, "r", tenant=tenant),
        lambda: store.requeue_dead(message_id, T0, tenant=tenant),
    ]


def test_another_tenants_message_does_not_exist_for_a_tenant(store: DispatchStore) -> None:
    theirs = submit(store, 3, tenant=ACME)
    mine = submit(store, 2, tenant=GLOBEX)
    for call in _named(store, theirs, GLOBEX):
        with pytest.raises(NotFoundError, match=f"^no message with id {theirs}$"):
            call()
    assert store.messages(message_id=theirs, tenant=GLOBEX) == []
    assert [m.id for m in store.messages(tenant=GLOBEX)] == [mine]
    assert store.count_messages(tenant=GLOBEX) == 1
    assert {d.message_id for d in store.deliveries(tenant=GLOBEX)} == {mine}
    assert store.deliveries(message_id=theirs, tenant=GLOBEX) == []
    assert store.delivery_counts(tenant=GLOBEX)[DeliveryStatus.PENDING] == 2
    (view,) = store.messages(message_id=theirs)  # nothing of it changed
    assert (view.version, view.content, view.receipt, view.tenant) == (1, "alert", None, ACME)


def test_the_operator_sees_and_acts_on_every_tenant(store: DispatchStore) -> None:
    theirs = submit(store, 3, tenant=ACME)
    submit(store, 2, tenant=GLOBEX)
    submit(store, 1)
    assert [m.tenant for m in store.messages()] == [ACME, GLOBEX, DEFAULT_TENANT]
    assert store.count_messages() == 3
    assert store.delivery_counts()[DeliveryStatus.PENDING] == 6
    assert store.cancel(theirs, T0).cancelled == 3
    assert store.delivery_counts(tenant=ACME)[DeliveryStatus.CANCELLED] == 3


def test_idempotency_keys_are_scoped_to_a_tenant(store: DispatchStore) -> None:
    def again(tenant: str, content: str = "alert") -> NewMessage:
        return NewMessage.validated(content=content, recipients=phones(1),
                                    idempotency_key="k", tenant=tenant)

    first = store.submit(again(ACME), T0)
    other = store.submit(again(GLOBEX), T0)
    assert first.created and other.created and first.message_id != other.message_id
    repeat = store.submit(again(ACME), T0 + 1)
    assert (repeat.message_id, repeat.created, repeat.receipt) == (first.message_id, False, None)
    with pytest.raises(KeyReusedError, match=f"'k' was used for message {first.message_id}"):
        store.submit(again(ACME, "different"), T0 + 1)
    assert store.count_messages() == 2
    assert store.keyed("k", tenant=ACME, now=T0) == first.message_id
    assert store.keyed("k", tenant=GLOBEX, now=T0) == other.message_id
    assert store.keyed("k", tenant="initech", now=T0) is None
    assert store.keyed("K", tenant=ACME, now=T0) is None


def test_the_first_receipt_kept_is_replayed_to_repeats(store: DispatchStore) -> None:
    message = NewMessage.validated(content="x", recipients=phones(1), idempotency_key="k",
                                   tenant=ACME)
    first = store.submit(message, T0)
    assert store.keep_receipt(first.message_id, '{"id": 1}', tenant=ACME) is True
    assert store.keep_receipt(first.message_id, '{"id": 2}') is False  # the first stays
    repeat = store.submit(message, T0 + 1)
    assert (repeat.created, repeat.receipt) == (False, '{"id": 1}')
    assert store.messages(message_id=first.message_id)[0].receipt == '{"id": 1}'


def test_dead_deliveries_are_requeued_by_id_within_a_tenant(store: DispatchStore) -> None:
    theirs = submit(store, 2, tenant=ACME)
    submit(store, 2, start=10, tenant=GLOBEX)
    claims = store.claim("w", 10, LEASE_S, T0)
    store.settle("w", [Settlement(c.delivery_id, c.attempts, SettleKind.DEAD, "gone")
                       for c in claims], T0)
    dead: dict[int, list[int]] = {}
    for claim in claims:
        dead.setdefault(claim.message_id, []).append(claim.delivery_id)
    mine = next(m for m in dead if m != theirs)
    # One of mine, one of theirs (passed over: not mine to see), one that is not dead.
    asked = [dead[mine][0], dead[theirs][0], 999_999]
    assert store.requeue_dead(None, T0 + 1, delivery_ids=asked, tenant=GLOBEX) == 1
    assert store.delivery_counts(tenant=GLOBEX)[DeliveryStatus.DEAD] == 1
    assert store.delivery_counts(tenant=ACME)[DeliveryStatus.DEAD] == 2
    assert store.requeue_dead(None, T0 + 1, delivery_ids=[], tenant=None) == 0
    assert store.requeue_dead(theirs, T0 + 1, tenant=ACME) == 2


def test_a_lone_tenant_message_is_not_slowed_by_another_tenants_broadcast(
        store: DispatchStore) -> None:
    """Fairness across tenants first: a higher-priority broadcast of one tenant still
    leaves another tenant's one-recipient message its share of the very next claim."""
    broadcast = submit(store, 200, tenant=ACME, priority=9)
    small = submit(store, 1, start=500, tenant=GLOBEX)
    claims = store.claim("w", 10, LEASE_S, T0)
    assert [c.message_id for c in claims].count(small) == 1
    assert [c.message_id for c in claims].count(broadcast) == 9


def test_a_store_that_takes_writes_says_so(store: DispatchStore) -> None:
    store.check_writable()
    store.close()
    with pytest.raises(StoreError):
        store.check_writable()


# --- API keys (the KeyStore half) ----------------------------------------------------------


def test_api_keys_are_kept_found_revoked_once_and_listed(store: DispatchStore) -> None:
    first = ApiKey(key_id="0123456789ab", tenant=ACME, created_at=T0)
    second = ApiKey(key_id="ba9876543210", tenant=GLOBEX, created_at=T0 + 1)
    store.add_api_key(first, "hash-1")
    store.add_api_key(second, "hash-2")
    with pytest.raises(ConflictError, match="'0123456789ab' exists already"):
        store.add_api_key(first, "hash-3")
    assert store.api_key("0123456789ab") == (first, "hash-1")
    assert store.api_key("ffffffffffff") is None
    revoked = store.revoke_api_key("0123456789ab", T0 + 5)
    assert revoked.revoked_at == T0 + 5
    assert store.revoke_api_key("0123456789ab", T0 + 9).revoked_at == T0 + 5
    with pytest.raises(NotFoundError, match="no API key with id 'ffffffffffff'"):
        store.revoke_api_key("ffffffffffff", T0)
    assert store.api_keys() == [revoked, second]
    assert store.api_keys(tenant=GLOBEX) == [second]
