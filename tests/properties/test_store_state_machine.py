"""Properties of the stores: dedup by key, and SQLite and PostgreSQL behaving exactly like the
reference.

The state machine drives a durable store (``SqliteStore`` or ``PostgresStore``, one test
each) and ``MemoryStore`` with the same operations and
compares every result and, in an ``@invariant``, the whole state. Messages belong to two
tenants, and the operations that name or list messages run as either tenant or as the
operator (every tenant), so tenant scoping, per-tenant idempotency keys and fairness across
tenants are compared too; so is pruning finished messages; and issue 14's validity
(expiry at claim time), opt-outs (suppression at submit, at the opt-out and on the way
back) and delivery receipts (applied, repeated, held before the send is recorded).
Delivery ids may differ between backends after an edit (SQLite reuses freed rowids,
PostgreSQL's sequence does not), so deliveries are compared by (message, recipient) and
claims are settled by their position in that order.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from sms_sim.dispatch.contract import (
    Claim,
    DlrReport,
    DeliveryStatus,
    DeliveryView,
    DispatchStore,
    MessageStatus,
    MessageView,
    SettleKind,
    Settlement,
    provider_key,
)
from sms_sim.dispatch.errors import KeyReusedError
from sms_sim.dispatch.requests import MessageEdit, NewMessage
from sms_sim.dispatch.stores import MemoryStore, SqliteStore
from tests.conftest import T0, phones
from tests.pg_cluster import PgCluster

LEASE_S = 10.0
PHONES = phones(6)

recipients = st.lists(st.sampled_from(PHONES), min_size=1, max_size=6)
keys = st.none() | st.sampled_from(["k1", "k2"])
TENANTS = ["default", "acme"]
tenants = st.sampled_from(TENANTS)
viewers = st.none() | tenants  # None: the operator, who sees every tenant


@settings(max_examples=30, deadline=None)
@given(first=recipients, second=recipients, key=st.sampled_from(["a", "b"]))
def test_enqueueing_one_key_twice_stores_it_once(first: list[str], second: list[str],
                                                 key: str) -> None:
    """The same request again returns the first message; another request under the key is a
    conflict. Either way one message is stored, with the first request's recipients."""
    for store in (MemoryStore(), SqliteStore(":memory:")):
        one = store.submit(NewMessage.validated(content="x", recipients=first,
                                                idempotency_key=key), T0)
        again = NewMessage.validated(content="x", recipients=second, idempotency_key=key)
        if set(first) == set(second):
            two = store.submit(again, T0 + 1)
            assert (one.created, two.created, two.message_id) == (True, False, one.message_id)
        else:
            with pytest.raises(KeyReusedError, match=f"{key!r} was used for message 1"):
                store.submit(again, T0 + 1)
        assert len(store.messages()) == 1
        assert sorted(d.recipient for d in store.deliveries()) == sorted(set(first))
        store.close()


def outcome(call: object) -> tuple[str, object]:
    """('ok', value) or ('error', exception type name) for a zero-argument callable."""
    try:
        value = call()  # type: ignore[operator]
        if isinstance(value, MessageView):  # uids are random per store
            value = dataclasses.replace(value, uid="")
        return ("ok", value)
    except Exception as exc:  # any error: compared across backends, then asserted
        return ("error", type(exc).__name__)


class StoresAgree(RuleBasedStateMachine):
    """``self.sqlite`` is the store under test (named for the first one it ran on)."""

    make_store: Callable[[], DispatchStore] = staticmethod(lambda: SqliteStore(":memory:"))

    def __init__(self) -> None:
        super().__init__()
        self.model = MemoryStore()
        self.sqlite = type(self).make_store()
        self.now = T0
        self.claims: dict[str, tuple[list[Claim], list[Claim]]] = {"a": ([], []), "b": ([], [])}

    def both(self, op: str, *args: object, **kwargs: object) -> tuple[str, object]:
        left = outcome(lambda: getattr(self.model, op)(*args, **kwargs))
        right = outcome(lambda: getattr(self.sqlite, op)(*args, **kwargs))
        assert left == right, (op, args, kwargs, left, right)
        return left

    @rule(people=recipients, delay_s=st.sampled_from([0.0, 5.0, 30.0]), key=keys,
          priority=st.sampled_from([0, 1]), tenant=tenants,
          valid_for_s=st.none() | st.sampled_from([4.0, 12.0]),
          content=st.sampled_from(["m", "ж" * 71]))
    def submit(self, people: list[str], delay_s: float, key: str | None, priority: int,
               tenant: str, valid_for_s: float | None, content: str) -> None:
        message = NewMessage.validated(content=content, recipients=people,
                                       idempotency_key=key, scheduled_at=self.now + delay_s,
                                       priority=priority, tenant=tenant,
                                       valid_for_s=valid_for_s)
        result = self.both("submit", message, self.now)
        assert result[0] == "ok" or result == ("error", "KeyReusedError")

    @rule(step_s=st.sampled_from([0.5, 5.0, 11.0]))
    def advance(self, step_s: float) -> None:
        self.now += step_s  # the invariants then compare what each store holds due

    @rule(owner=st.sampled_from(["a", "b"]), limit=st.integers(1, 5),
          lease_s=st.sampled_from([1.0, LEASE_S]))
    def claim(self, owner: str, limit: int, lease_s: float) -> None:
        """Workers with different lease lengths share the stores."""
        left = self.model.claim(owner, limit, lease_s, self.now)
        right = self.sqlite.claim(owner, limit, lease_s, self.now)
        assert _claim_keys(left) == _claim_keys(right)
        assert all(c.lease_until == self.now + lease_s for c in left + right)
        mine = self.claims[owner]
        mine[0].extend(sorted(left, key=_order))
        mine[1].extend(sorted(right, key=_order))

    @precondition(lambda self: any(c[0] for c in self.claims.values()))
    @rule(owner=st.sampled_from(["a", "b"]), data=st.data(),
          kind=st.sampled_from(list(SettleKind)))
    def settle(self, owner: str, data: st.DataObject, kind: SettleKind) -> None:
        left_claims, right_claims = self.claims[owner]
        if not left_claims:
            return
        index = data.draw(st.integers(0, len(left_claims) - 1))
        left, right = left_claims.pop(index), right_claims.pop(index)
        assert _order(left) == _order(right)
        retry_at = self.now + 3.0 if kind is SettleKind.RETRY else None
        results = [
            store.settle(owner, [Settlement(delivery_id=c.delivery_id, attempts=c.attempts,
                                            kind=kind, error="e", next_attempt_at=retry_at)],
                         self.now)
            for store, c in ((self.model, left), (self.sqlite, right))
        ]
        assert results[0] == results[1]

    @rule(message_id=st.integers(1, 4), version=st.integers(1, 3),
          content=st.none() | st.just("edited"), people=st.none() | recipients, as_=viewers,
          valid_for_s=st.none() | st.just(8.0))
    def edit(self, message_id: int, version: int, content: str | None,
             people: list[str] | None, as_: str | None, valid_for_s: float | None) -> None:
        if content is None and people is None and valid_for_s is None:
            content = "edited"
        edit = MessageEdit.validated(content=content, recipients=people,
                                     valid_for_s=valid_for_s)
        self.scoped("edit", as_, message_id, version, edit, self.now)

    @rule(message_id=st.integers(1, 4), as_=viewers)
    def cancel(self, message_id: int, as_: str | None) -> None:
        self.scoped("cancel", as_, message_id, self.now)

    @rule(message_id=st.none() | st.integers(1, 4), as_=viewers,
          ids=st.none() | st.lists(st.integers(1, 30), max_size=4))
    def requeue(self, message_id: int | None, as_: str | None, ids: list[int] | None) -> None:
        if ids is not None:  # delivery ids differ between stores: name them by position
            id_lists = self.delivery_ids(ids)
            left = outcome(lambda: self.model.requeue_dead(
                message_id, self.now, delivery_ids=id_lists[0], tenant=as_))
            right = outcome(lambda: self.sqlite.requeue_dead(
                message_id, self.now, delivery_ids=id_lists[1], tenant=as_))
            assert left == right
            return
        self.scoped("requeue_dead", as_, message_id, self.now)

    @rule(tenant=tenants, people=st.lists(st.sampled_from(PHONES), min_size=1, max_size=3))
    def opt_out(self, tenant: str, people: list[str]) -> None:
        self.both("add_opt_outs", tenant, people, self.now)

    @rule(tenant=tenants, phone=st.sampled_from(PHONES))
    def opt_in(self, tenant: str, phone: str) -> None:
        self.both("remove_opt_out", tenant, phone)
        assert self.model.opt_outs(tenant) == self.sqlite.opt_outs(tenant)

    @rule(data=st.data(), status=st.sampled_from(["delivered", "undelivered", "expired"]),
          count=st.integers(1, 3))
    def receipts(self, data: st.DataObject, status: str, count: int) -> None:
        """Receipts for any delivery, sent or not yet (held), or for none (unknown), named
        by each store's own provider key; some repeated in one batch."""
        keys: list[tuple[str, str]] = []
        for _ in range(count):
            position = data.draw(st.integers(1, 40))
            keys.append(self.provider_keys(position))
        results = [store.record_dlrs([DlrReport(key[side], status, self.now) for key in keys],
                                     self.now)
                   for side, store in enumerate((self.model, self.sqlite))]
        assert results[0] == results[1]

    def provider_keys(self, position: int) -> tuple[str, str]:
        """Each store's provider key of the delivery at ``position`` (in (message,
        recipient) order), or a key no delivery has."""
        found: list[str] = []
        for store in (self.model, self.sqlite):
            ordered = sorted(store.deliveries(limit=10_000),
                             key=lambda d: (d.message_id, d.recipient))
            if position > len(ordered):
                found.append(provider_key("0" * 32, PHONES[0]))
                continue
            delivery = ordered[position - 1]
            (message,) = store.messages(message_id=delivery.message_id)
            found.append(provider_key(message.uid, delivery.recipient))
        return found[0], found[1]

    @rule(message_id=st.integers(1, 4), as_=viewers)
    def keep_receipt(self, message_id: int, as_: str | None) -> None:
        self.scoped("keep_receipt", as_, message_id, f"receipt {self.now}")

    @rule(back_s=st.sampled_from([0.0, 6.0, 20.0]), dry_run=st.booleans(),
          batch_rows=st.sampled_from([1, 3, 1000]))
    def prune(self, back_s: float, dry_run: bool, batch_rows: int) -> None:
        self.both("prune", self.now - back_s, dry_run=dry_run, batch_rows=batch_rows)

    @rule(as_=viewers, status=st.none() | st.sampled_from(list(MessageStatus)))
    def list_as(self, as_: str | None, status: MessageStatus | None) -> None:
        """What a tenant (or the operator) lists and counts is the same in both stores, and a
        tenant sees only its own messages."""
        left = self.model.messages(tenant=as_, status=status, newest_first=True)
        right = self.sqlite.messages(tenant=as_, status=status, newest_first=True)
        assert [dataclasses.replace(m, uid="") for m in left] == \
            [dataclasses.replace(m, uid="") for m in right]
        assert as_ is None or all(m.tenant == as_ for m in left)
        for store in (self.model, self.sqlite):
            assert store.count_messages(tenant=as_, status=status) == len(left)
        assert self.model.delivery_counts(tenant=as_) == self.sqlite.delivery_counts(tenant=as_)
        assert _delivery_keys(self.model.deliveries(tenant=as_)) == \
            _delivery_keys(self.sqlite.deliveries(tenant=as_))

    def scoped(self, op: str, tenant: str | None, *args: object) -> tuple[str, object]:
        """``op`` as ``tenant`` would call it (None: the operator)."""
        left = outcome(lambda: getattr(self.model, op)(*args, tenant=tenant))
        right = outcome(lambda: getattr(self.sqlite, op)(*args, tenant=tenant))
        assert left == right, (op, tenant, args, left, right)
        return left

    def delivery_ids(self, positions: list[int]) -> tuple[list[int], list[int]]:
        """The ids of the deliveries at ``positions`` (from 1, in (message, recipient)
        order) in each store; positions past the end stand for ids no delivery has."""
        ids: list[list[int]] = []
        for store in (self.model, self.sqlite):
            ordered = sorted(store.deliveries(limit=10_000),
                             key=lambda d: (d.message_id, d.recipient))
            ids.append([ordered[p - 1].id if p <= len(ordered) else 10_000 + p
                        for p in positions])
        return ids[0], ids[1]

    @invariant()
    def same_state(self) -> None:
        assert _state(self.model) == _state(self.sqlite)
        assert self.model.next_due_at(self.now) == self.sqlite.next_due_at(self.now)

    @invariant()
    def no_lease_outlives_its_length(self) -> None:
        for store in (self.model, self.sqlite):
            leased = store.deliveries(status=DeliveryStatus.LEASED)
            assert all(d.lease_owner in {"a", "b"} for d in leased)
            assert all(d.lease_until is not None and d.lease_until <= self.now + LEASE_S
                       for d in leased)

    def teardown(self) -> None:
        self.model.close()
        self.sqlite.close()


def _order(claim: Claim) -> tuple[int, str]:
    return (claim.message_id, claim.recipient)


def _claim_keys(claims: list[Claim]) -> list[tuple[object, ...]]:
    """Everything a claim says, in the order returned (the contract fixes that order too)."""
    return [(c.message_id, c.recipient, c.attempts, c.lease_losses, c.lease_until, c.content,
             c.priority, c.valid_until) for c in claims]


def _delivery_keys(deliveries: list[DeliveryView]) -> list[tuple[int, str, DeliveryStatus]]:
    return sorted((d.message_id, d.recipient, d.status) for d in deliveries)


def _state(store: DispatchStore) -> tuple[object, ...]:
    # uids are random per store: everything else must agree
    messages = [dataclasses.replace(m, uid="") for m in store.messages(limit=1000)]
    deliveries = sorted(
        (d.message_id, d.recipient, d.status, d.attempts, d.lease_losses, d.next_attempt_at,
         d.lease_owner, d.lease_until, d.sent_at, d.last_error, d.dlr_at)
        for d in store.deliveries(limit=10_000)
    )
    opt_outs = [store.opt_outs(tenant) for tenant in TENANTS]
    return (messages, deliveries, opt_outs)


AGREE = settings(max_examples=60, stateful_step_count=30, deadline=None)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_stores_agree_with_the_reference(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "postgres":
        from sms_sim.dispatch.stores.postgres import PostgresStore

        cluster: PgCluster = request.getfixturevalue("pg_cluster")

        class Agree(StoresAgree):
            make_store = staticmethod(lambda: PostgresStore(cluster.fresh_url(), create=True))

        run_state_machine_as_test(Agree, settings=AGREE)
    else:
        run_state_machine_as_test(StoresAgree, settings=AGREE)


def test_the_kept_counts_agree_with_the_deliveries_after_every_kind_of_move(
        tmp_path: Path) -> None:
    """SQLite keeps each message's counts by status instead of counting on every read (the
    machine above compares them with the reference's); its full ``integrity_check``
    compares them with a count of the rows, and says which message disagrees."""
    store = SqliteStore(tmp_path / "counts.db")
    store.submit(NewMessage.validated(content="m", recipients=PHONES), T0)
    claims = store.claim("a", 6, LEASE_S, T0)
    kinds = list(SettleKind) + [SettleKind.SENT, SettleKind.SENT]
    store.settle("a", [Settlement(c.delivery_id, c.attempts, kind, "e", T0)
                       for c, kind in zip(claims, kinds, strict=True)], T0)
    store.claim("b", 2, 1.0, T0)
    store.claim("a", 2, LEASE_S, T0 + 2.0)  # rescues b's expired leases
    store.requeue_dead(None, T0 + 2.0)
    store.cancel(1, T0 + 3.0)
    # Issue 14's moves: suppressed at submit, by an opt-out and on the way back; expired by
    # the claim's sweep; receipts applied at once and held until the send is recorded.
    store.add_opt_outs("default", PHONES[:1], T0 + 3.0)
    store.submit(NewMessage.validated(content="m", recipients=PHONES, valid_for_s=5.0),
                 T0 + 3.0)
    store.submit(NewMessage.validated(content="m", recipients=PHONES[1:3]), T0 + 3.0)
    fresh = store.claim("a", 3, LEASE_S, T0 + 3.0)
    store.record_dlrs([DlrReport(fresh[0].idempotency_key, "delivered", T0 + 3.0)], T0 + 3.0)
    store.settle("a", [Settlement(c.delivery_id, c.attempts, SettleKind.SENT)
                       for c in fresh[:2]], T0 + 3.5)
    store.record_dlrs([DlrReport(fresh[1].idempotency_key, "undelivered", T0 + 3.5)],
                      T0 + 3.5)
    store.add_opt_outs("default", [fresh[2].recipient], T0 + 3.5)
    store.settle("a", [Settlement(fresh[2].delivery_id, fresh[2].attempts, SettleKind.RETRY,
                                  "e", T0 + 3.5)], T0 + 3.5)
    store.claim("a", 10, LEASE_S, T0 + 9.0)  # expires what is left of the second message
    seen = {d.status for d in store.deliveries(limit=100)}
    assert {DeliveryStatus.SUPPRESSED, DeliveryStatus.EXPIRED, DeliveryStatus.DELIVERED,
            DeliveryStatus.UNDELIVERED} <= seen, seen
    assert store.integrity_check() == "ok"
    with sqlite3.connect(tmp_path / "counts.db") as conn:
        conn.execute("UPDATE delivery_counts SET n = n + 1 WHERE status = 'sent'")
    conn.close()
    assert store.integrity_check().startswith("delivery counts of message 1 disagree")
    store.close()
