"""The ``DispatchStore`` contract, run against every backend (STYLE.md sections 4 and 10).

Each test encodes a sentence of the protocol's docstrings; the backends and shared helpers
are in ``conftest``.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sms_sim.dispatch.contract import (
    AGING_STEP_S,
    Claim,
    DeliveryStatus,
    DispatchStore,
    InvalidRequestError,
    MessageOutcome,
    MessageStatus,
    SettleKind,
    Settlement,
    effective_priority,
)
from sms_sim.dispatch.errors import (
    ConflictError,
    LockedError,
    NotFoundError,
    StoreBusyError,
    StoreError,
)
from sms_sim.dispatch.requests import MessageEdit, NewMessage
from sms_sim.dispatch.tenants import DEFAULT_TENANT
from tests.conftest import T0, phones
from tests.contract.conftest import LEASE_S, Opener, submit

JOIN_TIMEOUT_S = 30.0
BUSY_TRIES = 5  # a store call that fails busy is made again, up to this many times
T = TypeVar("T")


def sent(claims: list[Claim]) -> list[Settlement]:
    return [Settlement(delivery_id=c.delivery_id, attempts=c.attempts, kind=SettleKind.SENT)
            for c in claims]


# --- submit -------------------------------------------------------------------------------


def test_submit_makes_one_pending_delivery_per_distinct_recipient(store: DispatchStore) -> None:
    message = NewMessage.validated(content="hi", recipients=["111-111-1111", "222-222-2222",
                                                             "111-111-1111"])
    result = store.submit(message, T0)
    assert result.created
    (view,) = store.messages(message_id=result.message_id)
    assert view.status is MessageStatus.SCHEDULED and view.version == 1
    assert view.scheduled_at == T0 and view.created_at == T0
    assert view.counts[DeliveryStatus.PENDING] == 2
    assert sorted(d.recipient for d in store.deliveries()) == ["111-111-1111", "222-222-2222"]


@pytest.mark.parametrize("opted_out", [0, 1, 3])
def test_a_created_results_view_is_the_message_as_committed(store: DispatchStore,
                                                            opted_out: int) -> None:
    """``SubmitResult.view`` is what ``messages`` reads after the commit (the API answers
    with it instead of reading back); every store gives one for a message stored in one
    transaction. With every recipient opted out, the message it shows is already
    completed. A repeat creates nothing: no view."""
    if opted_out:
        store.add_opt_outs(DEFAULT_TENANT, phones(opted_out), T0)
    message = NewMessage.validated(content="hi", recipients=phones(3), idempotency_key="k",
                                   priority=2, valid_for_s=60.0)
    result = store.submit(message, T0)
    (stored,) = store.messages(message_id=result.message_id)
    assert result.view == stored
    assert stored.status is (MessageStatus.COMPLETED if opted_out == 3
                             else MessageStatus.SCHEDULED)
    assert store.submit(message, T0 + 1).view is None


def test_a_known_idempotency_key_with_the_same_request_returns_the_first_message(
        store: DispatchStore) -> None:
    first = store.submit(NewMessage.validated(content="a", recipients=phones(3),
                                              idempotency_key="k1"), T0)
    # The same recipients in another order, one repeated: the same request.
    again = store.submit(NewMessage.validated(
        content="a", recipients=[*reversed(phones(3)), phones(1)[0]], idempotency_key="k1"),
        T0 + 1)
    assert first.created and not again.created
    assert again.message_id == first.message_id
    assert len(store.messages()) == 1 and len(store.deliveries()) == 3


@pytest.mark.parametrize("change", [
    {"content": "All clear"},
    {"recipients": phones(4)},
    {"scheduled_at": T0 + 600},
    {"priority": 5},
])
def test_a_known_idempotency_key_with_a_different_request_is_a_conflict(
        store: DispatchStore, change: dict[str, object]) -> None:
    """Issue 11, item 3: an "All clear" under an old key was dropped as "already submitted"."""
    fields: dict[str, object] = {"content": "EVACUATE NOW", "recipients": phones(3),
                                 "idempotency_key": "k1"}
    first = store.submit(NewMessage.validated(**fields), T0)  # type: ignore[arg-type]
    with pytest.raises(ConflictError, match=rf"'k1'.*message {first.message_id}"):
        store.submit(NewMessage.validated(**{**fields, **change}), T0 + 1)  # type: ignore[arg-type]
    assert len(store.messages()) == 1 and len(store.deliveries()) == 3


def test_every_message_has_its_own_uid_and_claims_carry_it(store: DispatchStore) -> None:
    ids = [store.submit(NewMessage.validated(content="x", recipients=phones(1)), T0).message_id
           for _ in range(2)]
    uids = {view.id: view.uid for view in store.messages()}
    assert len(set(uids.values())) == 2 and all(len(uid) == 32 for uid in uids.values())
    claims = store.claim("w", 10, LEASE_S, T0)
    assert {c.message_id: c.message_uid for c in claims} == {i: uids[i] for i in ids}
    assert {c.idempotency_key for c in claims} == {f"{uids[c.message_id]}:{c.recipient}"
                                                   for c in claims}


@pytest.mark.slow  # real threads
def test_concurrent_submits_with_one_key_create_exactly_once(opener: Opener) -> None:
    stores = [opener() for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    results: list[bool] = []
    lock = threading.Lock()

    def client(store: DispatchStore) -> None:
        barrier.wait(timeout=JOIN_TIMEOUT_S)
        outcome = store.submit(NewMessage.validated(content="x", recipients=phones(3),
                                                    idempotency_key="same"), T0)
        with lock:
            results.append(outcome.created)

    threads = [threading.Thread(target=client, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
        assert not thread.is_alive()
    assert sorted(results) == [False, False, False, True]
    assert len(stores[0].messages()) == 1 and len(stores[0].deliveries()) == 3


def test_bad_requests_are_refused_at_the_library_edge() -> None:
    with pytest.raises(InvalidRequestError, match="recipient 2 must look like xxx-xxx-xxxx"):
        NewMessage.validated(content="x", recipients=["111-111-1111", "1111111111"])
    with pytest.raises(InvalidRequestError, match="1-1600 characters"):
        NewMessage.validated(content="", recipients=["111-111-1111"])
    with pytest.raises(InvalidRequestError, match="1-1600 characters"):
        NewMessage.validated(content="x" * 1601, recipients=["111-111-1111"])
    with pytest.raises(InvalidRequestError, match="at least 1 recipient"):
        NewMessage.validated(content="x", recipients=[])
    with pytest.raises(InvalidRequestError, match="finite"):
        NewMessage.validated(content="x", recipients=["111-111-1111"], scheduled_at=float("nan"))
    with pytest.raises(InvalidRequestError, match="must change"):
        MessageEdit.validated()


# --- scheduling and claiming --------------------------------------------------------------


def test_nothing_is_claimed_before_its_scheduled_time(store: DispatchStore) -> None:
    submit(store, 3, at=T0 + 60)
    assert store.next_due_at(T0) == T0 + 60
    assert store.claim("w", 10, LEASE_S, T0 + 59.999) == []
    claims = store.claim("w", 10, LEASE_S, T0 + 60)
    assert len(claims) == 3
    assert {c.lease_until for c in claims} == {T0 + 60 + LEASE_S}
    assert {c.attempts for c in claims} == {1}
    (view,) = store.messages()
    assert view.status is MessageStatus.DISPATCHING and view.dispatch_started_at == T0 + 60


def test_a_leased_delivery_is_not_claimed_again_until_its_lease_expires(
        store: DispatchStore) -> None:
    submit(store, 2)
    first = store.claim("a", 10, LEASE_S, T0)
    assert store.claim("b", 10, LEASE_S, T0 + LEASE_S - 0.001) == []
    assert store.next_due_at(T0 + 1) == T0 + LEASE_S
    rescued = store.claim("b", 10, LEASE_S, T0 + LEASE_S)
    assert {c.delivery_id for c in rescued} == {c.delivery_id for c in first}
    assert {(c.attempts, c.lease_losses) for c in rescued} == {(2, 1)}
    assert {c.lease_losses for c in first} == {0}
    late = store.settle("a", sent(first), T0 + LEASE_S + 1)
    assert (late.accepted, late.refused) == (0, 2)
    on_time = store.settle("b", sent(rescued), T0 + LEASE_S + 1)
    assert (on_time.accepted, on_time.refused) == (2, 0)
    assert store.messages()[0].status is MessageStatus.COMPLETED


def test_a_lease_granted_before_the_clock_jumped_back_is_reclaimed(store: DispatchStore) -> None:
    submit(store, 1, now=T0 - 8000)
    (claim,) = store.claim("a", 1, LEASE_S, T0)
    back = T0 - 7200.0  # the clock jumped back 2 h: the old lease would park work for 2 h
    (rescued,) = store.claim("b", 1, LEASE_S, back)
    assert rescued.delivery_id == claim.delivery_id
    assert rescued.lease_until == back + LEASE_S
    assert store.settle("a", sent([claim]), back).refused == 1


def test_a_claimer_whose_now_lags_a_little_does_not_steal_a_fresh_lease(
        store: DispatchStore) -> None:
    """Found by the storm test: ``now`` is read before waiting for the write lock."""
    submit(store, 1, now=T0 - 100)
    store.claim("a", 1, LEASE_S, T0 + 5)
    assert store.claim("b", 1, LEASE_S, T0) == []


@pytest.mark.slow  # real threads
def test_concurrent_claims_never_lease_one_delivery_twice(opener: Opener) -> None:
    submit(opener(), 200)
    submit(opener(), 50, start=1000)
    stores = [opener() for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    claimed: list[list[Claim]] = [[] for _ in stores]

    def worker(index: int) -> None:
        barrier.wait(timeout=JOIN_TIMEOUT_S)
        while batch := stores[index].claim(f"w{index}", 7, LEASE_S, T0):
            claimed[index].extend(batch)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
        assert not thread.is_alive()
    ids = [c.delivery_id for batch in claimed for c in batch]
    assert len(ids) == len(set(ids)) == 250


def test_a_small_message_due_during_a_broadcast_is_claimed_in_the_next_round(
        store: DispatchStore) -> None:
    big = submit(store, 500)
    assert {c.message_id for c in store.claim("w", 20, LEASE_S, T0)} == {big}
    small = submit(store, 1, now=T0 + 1, start=9000)
    claims = store.claim("w", 20, LEASE_S, T0 + 1)
    assert small in {c.message_id for c in claims}
    assert len(claims) == 20


def test_claims_rotate_round_robin_across_due_messages(store: DispatchStore) -> None:
    ids = [submit(store, 50, start=100 * i, now=T0 + i) for i in range(3)]
    rounds = [
        [c.message_id for c in store.claim("w", 2, LEASE_S, T0 + 10 + r)] for r in range(3)
    ]
    assert sorted(rounds[0]) == ids[:2]  # oldest due first, one each
    assert ids[2] in rounds[1]  # the one left out is served next
    served = [m for batch in rounds for m in batch]
    assert all(served.count(m) == 2 for m in ids)


def test_the_limit_is_split_evenly_and_leftovers_go_to_larger_messages(
        store: DispatchStore) -> None:
    big = submit(store, 100)
    small = submit(store, 2, start=500)
    counts = [c.message_id for c in store.claim("w", 10, LEASE_S, T0)]
    assert counts.count(small) == 2 and counts.count(big) == 8


def test_higher_priority_is_claimed_first(store: DispatchStore) -> None:
    low = submit(store, 5)
    high = submit(store, 5, priority=5, start=100, now=T0 + 1)
    claims = store.claim("w", 5, LEASE_S, T0 + 2)
    assert {c.message_id for c in claims} == {high}
    assert {c.message_id for c in store.claim("w", 5, LEASE_S, T0 + 2)} == {low}


def test_cancelled_names_exactly_the_cancelled_messages_asked_about(
        store: DispatchStore) -> None:
    first, second, third = (submit(store, 1, start=i) for i in range(3))
    store.cancel(first, T0)
    store.cancel(third, T0)
    assert store.cancelled([first, second, 999]) == {first}
    assert store.cancelled([]) == set()
    store.close()
    with pytest.raises(StoreError):
        store.cancelled([first])


def test_waiting_work_ages_into_the_class_that_starves_it(store: DispatchStore) -> None:
    """Item 10: a priority-1 broadcast starved every priority-0 message for good. Now the
    low message waits at most ``AGING_STEP_S`` per class, then takes turns with the
    broadcast until it is done (not one share per minute: found in review)."""
    broadcast = submit(store, 500, priority=1)
    low = submit(store, 20, start=1000)
    shares: list[tuple[float, int]] = []  # (claim time, the low message's share)
    for step in range(1, 40):
        now = T0 + 5.0 * step
        claims = store.claim("w", 4, LEASE_S, now)
        store.settle("w", sent(claims), now)
        assert {c.message_id for c in claims} <= {broadcast, low}
        shares.append((now, sum(c.message_id == low for c in claims)))
    served = [(now, share) for now, share in shares if share]
    assert served[0][0] - T0 <= AGING_STEP_S + 5.0  # aged into the broadcast's class
    first = shares.index(served[0])
    assert [share for _, share in shares[first:first + 10]] == [2] * 10  # then round-robin
    assert sum(share for _, share in shares) == 20


def test_a_lease_is_judged_by_its_own_length(store: DispatchStore) -> None:
    """Issue 11, item 1: a worker with a 1 s lease took the live claims of one with 300 s."""
    submit(store, 4)
    long = store.claim("long", 2, 300.0, T0)
    short = store.claim("short", 10, 1.0, T0 + 0.5)
    assert {c.delivery_id for c in long}.isdisjoint(c.delivery_id for c in short)
    assert len(short) == 2
    assert store.settle("long", sent(long), T0 + 299).accepted == 2


def test_two_claims_of_one_owner_at_one_instant_hold_only_their_own_deliveries(
        store: DispatchStore) -> None:
    """Found by the state machine on PostgreSQL: ``a`` claimed, ``b`` claimed, ``a``
    claimed again, at one instant with one lease length; ``a``'s two range leases of the
    message were entered as one range covering ``b``'s delivery between them, so the
    rescue of ``a``'s lease took back ``b``'s live one (sent twice)."""
    submit(store, 3)
    first = store.claim("a", 1, 1.0, T0)
    theirs = store.claim("b", 1, 5.0, T0)
    second = store.claim("a", 1, 1.0, T0)
    holders = {d.id: d.lease_owner
               for d in store.deliveries(message_id=first[0].message_id)}
    assert [holders[c.delivery_id] for c in first + theirs + second] == ["a", "b", "a"]
    rescued = store.claim("c", 10, 300.0, T0 + 2.0)  # a's leases ended, b's has not
    assert sorted(c.delivery_id for c in rescued) == sorted(
        c.delivery_id for c in first + second)
    assert store.settle("b", sent(theirs), T0 + 3.0).accepted == 1


def test_a_claimer_whose_now_is_stale_takes_no_live_lease(store: DispatchStore) -> None:
    """A claim's ``now`` is read before it waits for the write lock. Another worker's
    1 s lease granted during a 5 s wait is live: judged by twice its length, it was taken
    and sent twice (found in review; the fix judges a lease by when it was granted)."""
    submit(store, 4, now=T0 - 10.0)
    short = store.claim("short", 2, 1.0, T0)
    stale = store.claim("long", 10, 300.0, T0 - 5.0)  # read 5 s ago, before its lock wait
    assert {c.delivery_id for c in short}.isdisjoint(c.delivery_id for c in stale)
    assert store.settle("short", sent(short), T0 + 0.5).accepted == 2


def test_a_lease_from_before_a_backward_clock_jump_is_taken_back(store: DispatchStore) -> None:
    submit(store, 1, now=T0 - 200.0)
    store.claim("a", 1, 1.0, T0)
    again = store.claim("b", 1, 300.0, T0 - 100.0)  # the clock went back 100 s
    assert len(again) == 1 and again[0].lease_losses == 1


# --- the fairness of claims, as properties (the claim docstring's numbered sentences) -----
# Judged from what each claim returned and what it left due, never from how a store splits
# the limit. Random scenarios: messages of three priority classes and two tenants arriving
# over a few claims, each claim's deliveries then sent, retried (due at once or later),
# dead-lettered, or kept until their lease runs out and a later claim rescues them. Classes
# and message shares are compared within a tenant; tenants' shares are compared too.

TENANTS = [DEFAULT_TENANT, "acme"]
NEW_MESSAGE = st.tuples(st.integers(0, 2), st.integers(1, 6), st.sampled_from([0.0, 1.5]),
                        st.sampled_from(TENANTS))
OUTCOMES = st.sampled_from(["keep", "sent", "retry", "retry later", "dead"])
FAIRNESS = settings(max_examples=40, deadline=None)


@dataclass(frozen=True)
class Claimed:
    """One claim: its limit, each message's share, every message's class as the claim saw
    it (``effective_priority``) and tenant, and the due deliveries each due message has left
    afterwards (0: it ran out)."""

    limit: int
    shares: Counter[int]
    priority: dict[int, int]
    left: dict[int, int]
    tenant: dict[int, str]

    def peers(self, one: int, other: int) -> bool:
        """Whether two messages compete in one class: same tenant, same class."""
        return self.tenant[one] == self.tenant[other] \
            and self.priority[one] == self.priority[other]

    def tenant_shares(self) -> Counter[str]:
        return Counter({tenant: sum(n for m, n in self.shares.items()
                                    if self.tenant[m] == tenant) for tenant in TENANTS})

    def tenant_left(self) -> dict[str, int]:
        """Due deliveries each tenant with due messages has left (0: it ran out)."""
        left: dict[str, int] = {}
        for message_id, count in self.left.items():
            tenant = self.tenant[message_id]
            left[tenant] = left.get(tenant, 0) + count
        return left


def play(store: DispatchStore, data: st.DataObject, *, lone: bool = False) -> list[Claimed]:
    claimed: list[Claimed] = []
    held: list[Claim] = []
    served_at: dict[int, float] = {}  # message id -> the last claim that served it
    kept: dict[int, int] = {}  # message id -> the raised class aging keeps for it
    now, start = T0, 0
    for number in range(data.draw(st.integers(1, 6), label="claims")):
        arrivals = data.draw(st.lists(NEW_MESSAGE, min_size=int(number == 0), max_size=3),
                             label="new messages")
        if lone:
            arrivals = arrivals[:1] if number == 0 else []
        for priority, size, delay, tenant in arrivals:
            submit(store, size, at=now + delay, priority=priority, now=now, start=start,
                   tenant=tenant)
            start += size
        limit = data.draw(st.integers(0, 12), label="limit")
        # Classes are judged as the claim saw them: aged by the time waited since served,
        # and at least the raised class a message was last served in while work is due.
        messages = store.messages(limit=10_000)
        classes = {m.id: effective_priority(m.priority, served_at.get(m.id, m.scheduled_at),
                                            now, kept.get(m.id)) for m in messages}
        claims = store.claim("w", limit, LEASE_S, now)
        shares = Counter(c.message_id for c in claims)
        served_at.update(dict.fromkeys(shares, now))
        left = due_left(store, now)
        base = {m.id: m.priority for m in messages}
        kept.update({m: classes[m] for m in shares if classes[m] > base[m]})
        for message_id in [m for m in kept if m in left and not left[m]]:
            del kept[message_id]
        claimed.append(Claimed(limit, shares, classes, left,
                               {m.id: m.tenant for m in messages}))
        held += claims
        outcomes = data.draw(st.lists(OUTCOMES, min_size=len(held), max_size=len(held)),
                             label="outcomes")
        reports = [
            Settlement(delivery_id=c.delivery_id, attempts=c.attempts,
                       kind=SettleKind(outcome.split()[0]), error="e",
                       next_attempt_at=now + 1.5 * (outcome == "retry later"))
            for c, outcome in zip(held, outcomes, strict=True) if outcome != "keep"
        ]
        store.settle("w", reports, now)
        held = [c for c, outcome in zip(held, outcomes, strict=True) if outcome == "keep"]
        now += data.draw(st.sampled_from([0.0, 1.0, 2.0, LEASE_S]), label="step")
    store.close()
    return claimed


def due_left(store: DispatchStore, now: float) -> dict[int, int]:
    """Each due message's count of due deliveries."""
    messages = store.messages(limit=10_000)
    left = {m.id: 0 for m in messages if m.scheduled_at <= now
            and m.status in (MessageStatus.SCHEDULED, MessageStatus.DISPATCHING)}
    for d in store.deliveries(limit=100_000):
        if d.message_id in left and d.next_attempt_at <= now \
                and d.status in (DeliveryStatus.PENDING, DeliveryStatus.RETRYING):
            left[d.message_id] += 1
    return left


@FAIRNESS
@given(data=st.data())
def test_a_lower_class_is_served_only_when_every_higher_class_ran_out(
        new_store: Opener, data: st.DataObject) -> None:
    for claim in play(new_store(), data):
        starved = [(m, served) for m, left in claim.left.items() if left
                   for served in claim.shares
                   if claim.tenant[served] == claim.tenant[m]
                   and claim.priority[m] > claim.priority[served]]
        assert starved == [], claim


@FAIRNESS
@given(data=st.data())
def test_tenant_shares_differ_by_at_most_one_unless_the_smaller_ran_out(
        new_store: Opener, data: st.DataObject) -> None:
    """Whatever the classes of their messages: one tenant's high-priority broadcast does
    not take another tenant's share."""
    for claim in play(new_store(), data):
        shares, left = claim.tenant_shares(), claim.tenant_left()
        uneven = [(short, other) for short, short_left in left.items() if short_left
                  for other in left if shares[other] > shares[short] + 1]
        assert uneven == [], claim


@FAIRNESS
@given(data=st.data())
def test_a_tenant_is_served_again_only_after_every_other_tenant_was(
        new_store: Opener, data: st.DataObject) -> None:
    """If two claims serve a tenant, every other tenant with due work at the second was
    served by one of the two or by a claim in between."""
    claimed = play(new_store(), data)
    last: dict[str, int] = {}
    skipped = []
    for index, claim in enumerate(claimed):
        shares, left = claim.tenant_shares(), claim.tenant_left()
        for again in [t for t in TENANTS if shares[t]]:
            if again in last:
                between = claimed[last[again]:index + 1]
                skipped += [(index, again, other) for other, other_left in left.items()
                            if other != again and (other_left or shares[other])
                            and not any(r.tenant_shares()[other] for r in between)]
        last.update({t: index for t in TENANTS if shares[t]})
    assert skipped == []


@FAIRNESS
@given(data=st.data())
def test_shares_in_one_class_differ_by_at_most_one_unless_the_smaller_ran_out(
        new_store: Opener, data: st.DataObject) -> None:
    for claim in play(new_store(), data):
        uneven = [(short, other) for short, left in claim.left.items() if left
                  for other in claim.left
                  if claim.peers(other, short) and claim.shares[other] > claim.shares[short] + 1]
        assert uneven == [], claim


@FAIRNESS
@given(data=st.data())
def test_a_claim_takes_the_limit_or_everything_due(new_store: Opener,
                                                   data: st.DataObject) -> None:
    for claim in play(new_store(), data):
        taken = sum(claim.shares.values())
        assert taken <= claim.limit, claim
        assert taken == claim.limit or not any(claim.left.values()), claim


@FAIRNESS
@given(data=st.data())
def test_a_lone_message_gets_the_full_limit(new_store: Opener, data: st.DataObject) -> None:
    for claim in play(new_store(), data, lone=True):
        (message_id,) = claim.priority
        share = claim.shares[message_id]
        assert share == min(claim.limit, share + claim.left.get(message_id, 0)), claim


@FAIRNESS
@given(data=st.data())
def test_a_message_is_served_again_only_after_its_class_was(new_store: Opener,
                                                            data: st.DataObject) -> None:
    """If two claims serve a message, every other message of its class with due work at the
    second was served by one of the two or by a claim in between."""
    claimed = play(new_store(), data)
    last: dict[int, int] = {}  # message id -> the last claim that served it
    skipped = []
    for index, claim in enumerate(claimed):
        for again in claim.shares:
            if again not in last:
                continue
            between = claimed[last[again]:index + 1]
            skipped += [(index, again, other) for other, left in claim.left.items()
                        if other != again and claim.peers(other, again)
                        and (left or claim.shares[other])
                        and not any(r.shares[other] for r in between)]
        last.update(dict.fromkeys(claim.shares, index))
    assert skipped == []


# --- settling, retries, dead letters ------------------------------------------------------


def test_settle_is_fenced_by_status_owner_and_attempt(store: DispatchStore) -> None:
    submit(store, 1)
    (claim,) = store.claim("a", 1, LEASE_S, T0)
    wrong_owner = store.settle("b", sent([claim]), T0 + 1)
    wrong_attempt = store.settle("a", [Settlement(delivery_id=claim.delivery_id,
                                                  attempts=claim.attempts + 1,
                                                  kind=SettleKind.SENT)], T0 + 1)
    unknown = store.settle("a", [Settlement(delivery_id=999, attempts=1,
                                            kind=SettleKind.SENT)], T0 + 1)
    assert [r.refused for r in (wrong_owner, wrong_attempt, unknown)] == [1, 1, 1]
    assert store.settle("a", sent([claim]), T0 + 1).accepted == 1
    assert store.settle("a", sent([claim]), T0 + 2).refused == 1  # no double completion
    (delivery,) = store.deliveries()
    assert delivery.status is DeliveryStatus.SENT and delivery.sent_at == T0 + 1
    assert delivery.lease_owner is None


def test_a_sent_report_records_when_the_provider_accepted_it(store: DispatchStore) -> None:
    """A delivery's ``sent_at`` was the settle's time, a claim round after the send (and a
    whole outage later when the store was down meanwhile). It is the reported send time,
    kept between the lease's start and the settle's ``now``; without one, ``now``. First
    attempts (a PostgreSQL range lease) and a retry's second (a per-row lease) alike, in
    one settle with a report of another kind."""
    submit(store, 6)
    claims = store.claim("w", 6, LEASE_S, T0 + 1)
    first, second, third, fourth, fifth, sixth = claims
    store.settle("w", [Settlement(delivery_id=fifth.delivery_id, attempts=1,
                                  kind=SettleKind.RETRY, error="busy", next_attempt_at=T0)],
                 T0 + 1)
    (again,) = store.claim("w", 1, LEASE_S, T0 + 2)
    assert again.delivery_id == fifth.delivery_id and again.attempts == 2
    result = store.settle("w", [
        Settlement(delivery_id=first.delivery_id, attempts=1, kind=SettleKind.SENT,
                   sent_at=T0 + 3),
        Settlement(delivery_id=second.delivery_id, attempts=1, kind=SettleKind.SENT),
        Settlement(delivery_id=third.delivery_id, attempts=1, kind=SettleKind.SENT,
                   sent_at=T0 + 50),  # after the settle: a clock stepped back meanwhile
        Settlement(delivery_id=fourth.delivery_id, attempts=1, kind=SettleKind.SENT,
                   sent_at=T0),  # before the lease began
        Settlement(delivery_id=fifth.delivery_id, attempts=2, kind=SettleKind.SENT,
                   sent_at=T0 + 4),
        Settlement(delivery_id=sixth.delivery_id, attempts=1, kind=SettleKind.DEAD,
                   error="invalid number"),
    ], T0 + 10)
    assert (result.accepted, result.refused) == (6, 0)
    sent_at = {d.id: d.sent_at for d in store.deliveries()}
    assert [sent_at[c.delivery_id] for c in claims] == [
        T0 + 3, T0 + 10, T0 + 10, T0 + 1, T0 + 4, None]
    with pytest.raises(InvalidRequestError, match="sent_at"):
        store.settle("w", [Settlement(delivery_id=first.delivery_id, attempts=1,
                                      kind=SettleKind.SENT, sent_at=float("nan"))], T0 + 11)


def test_a_completion_after_the_lease_ran_out_is_refused_even_if_nobody_took_over(
        store: DispatchStore) -> None:
    submit(store, 1)
    (claim,) = store.claim("a", 1, LEASE_S, T0)
    assert store.settle("a", sent([claim]), T0 + LEASE_S).refused == 1
    (delivery,) = store.deliveries()
    assert delivery.status is DeliveryStatus.LEASED  # rescued by the next claim
    (again,) = store.claim("b", 1, LEASE_S, T0 + LEASE_S)
    assert again.attempts == 2


def test_a_retry_is_not_claimed_before_its_time_and_keeps_counting_attempts(
        store: DispatchStore) -> None:
    submit(store, 1)
    (claim,) = store.claim("w", 1, LEASE_S, T0)
    retry = Settlement(delivery_id=claim.delivery_id, attempts=1, kind=SettleKind.RETRY,
                       error="timeout", next_attempt_at=T0 + 5)
    assert store.settle("w", [retry], T0 + 1).accepted == 1
    (delivery,) = store.deliveries()
    assert delivery.status is DeliveryStatus.RETRYING and delivery.last_error == "timeout"
    assert store.next_due_at(T0 + 1) == T0 + 5
    assert store.claim("w", 1, LEASE_S, T0 + 4.999) == []
    (again,) = store.claim("w", 1, LEASE_S, T0 + 5)
    assert again.attempts == 2


def test_one_settle_of_every_kind_applies_each_to_its_own_delivery(
        store: DispatchStore) -> None:
    """A settle mixing SENT with the other kinds (the PostgreSQL store writes SENT reports
    with a statement of their own, the rest with another, in one transaction), plus a
    stale report of an attempt the delivery is past: each report lands on its delivery
    alone, and the stale one is refused whatever its kind."""
    submit(store, 5)
    claims = store.claim("w", 5, LEASE_S, T0)
    first, second, third, fourth, fifth = claims
    store.settle("w", [Settlement(delivery_id=fifth.delivery_id, attempts=fifth.attempts,
                                  kind=SettleKind.RETRY, error="busy", next_attempt_at=T0)],
                 T0)
    (again,) = store.claim("w", 1, LEASE_S, T0)  # the fifth, now on its second attempt
    assert again.delivery_id == fifth.delivery_id and again.attempts == 2
    result = store.settle("w", [
        Settlement(delivery_id=first.delivery_id, attempts=1, kind=SettleKind.SENT),
        Settlement(delivery_id=second.delivery_id, attempts=1, kind=SettleKind.RETRY,
                   error="timeout", next_attempt_at=T0 + 9),
        Settlement(delivery_id=third.delivery_id, attempts=1, kind=SettleKind.DEAD,
                   error="invalid number"),
        Settlement(delivery_id=fourth.delivery_id, attempts=1, kind=SettleKind.RELEASE),
        Settlement(delivery_id=fifth.delivery_id, attempts=1, kind=SettleKind.SENT),  # stale
    ], T0 + 1)
    assert (result.accepted, result.refused) == (4, 1)
    by_id = {d.id: d for d in store.deliveries()}
    assert by_id[first.delivery_id].status is DeliveryStatus.SENT
    assert by_id[first.delivery_id].sent_at == T0 + 1
    assert by_id[second.delivery_id].status is DeliveryStatus.RETRYING
    assert by_id[second.delivery_id].next_attempt_at == T0 + 9
    assert by_id[second.delivery_id].last_error == "timeout"
    assert by_id[third.delivery_id].status is DeliveryStatus.DEAD
    assert by_id[fourth.delivery_id].status is DeliveryStatus.PENDING
    assert by_id[fourth.delivery_id].attempts == 0
    assert by_id[fifth.delivery_id].status is DeliveryStatus.LEASED
    assert store.settle("w", sent([again]), T0 + 2).accepted == 1
    assert store.messages()[0].status is MessageStatus.DISPATCHING  # two still to go


def test_dead_deliveries_keep_their_error_and_can_be_requeued(store: DispatchStore) -> None:
    message_id = submit(store, 2)
    claims = store.claim("w", 2, LEASE_S, T0)
    store.settle("w", [
        Settlement(delivery_id=claims[0].delivery_id, attempts=1, kind=SettleKind.DEAD,
                   error="invalid number"),
        Settlement(delivery_id=claims[1].delivery_id, attempts=1, kind=SettleKind.SENT),
    ], T0 + 1)
    (view,) = store.messages()
    assert view.status is MessageStatus.COMPLETED
    (dead,) = store.deliveries(status=DeliveryStatus.DEAD)
    assert dead.last_error == "invalid number"
    assert store.requeue_dead(message_id, T0 + 2) == 1
    assert store.messages()[0].status is MessageStatus.DISPATCHING
    (again,) = store.claim("w", 5, LEASE_S, T0 + 2)
    assert again.delivery_id == dead.id
    assert (again.attempts, again.lease_losses) == (1, 0)
    store.settle("w", sent([again]), T0 + 3)
    assert store.messages()[0].status is MessageStatus.COMPLETED
    assert store.requeue_dead(None, T0 + 4) == 0
    with pytest.raises(NotFoundError):
        store.requeue_dead(999, T0)


def test_release_returns_a_delivery_without_counting_the_attempt(store: DispatchStore) -> None:
    submit(store, 1)
    (claim,) = store.claim("w", 1, LEASE_S, T0)
    store.settle("w", [Settlement(delivery_id=claim.delivery_id, attempts=1,
                                  kind=SettleKind.RELEASE)], T0)
    (delivery,) = store.deliveries()
    assert delivery.status is DeliveryStatus.PENDING and delivery.attempts == 0
    assert store.claim("w", 1, LEASE_S, T0)[0].attempts == 1


# --- edit and cancel ----------------------------------------------------------------------


def test_edit_needs_the_current_version_and_bumps_it(store: DispatchStore) -> None:
    message_id = submit(store, 2, at=T0 + 100)
    edited = store.edit(message_id, 1, MessageEdit.validated(
        content="new text", scheduled_at=T0 + 200, recipients=["999-999-9999"]), T0 + 1)
    assert edited.version == 2 and edited.content == "new text"
    assert edited.scheduled_at == T0 + 200 and edited.updated_at == T0 + 1
    assert [d.recipient for d in store.deliveries()] == ["999-999-9999"]
    assert store.next_due_at(T0 + 1) == T0 + 200
    with pytest.raises(ConflictError, match="at version 2, not 1"):
        store.edit(message_id, 1, MessageEdit.validated(content="stale"), T0 + 2)
    assert store.messages()[0].content == "new text"
    with pytest.raises(NotFoundError):
        store.edit(999, 1, MessageEdit.validated(content="x"), T0)


@pytest.mark.slow  # real threads
def test_an_edit_racing_the_first_claim_lands_before_it_or_is_refused(opener: Opener) -> None:
    for round_number in range(10):
        _race_edit_and_claim(opener, round_number)


def _race_edit_and_claim(opener: Opener, round_number: int) -> None:
    now = T0 + round_number
    message_id = submit(opener(), 3, now=now, start=100 * round_number)
    editor, claimer = opener(), opener()
    barrier = threading.Barrier(2)
    outcome: dict[str, object] = {}

    # A call that fails busy did nothing and is made again, as a worker or the API would:
    # a host stalled past the PostgreSQL store's idle limit inside a claim (seen once in a
    # full-suite run) has that claim ended by the server and rolled back.
    def edit() -> None:
        barrier.wait(timeout=JOIN_TIMEOUT_S)
        try:
            outcome["edit"] = _until_not_busy(lambda: editor.edit(
                message_id, 1, MessageEdit.validated(content="new",
                                                     recipients=["999-999-9999"]), now))
        except LockedError as exc:
            outcome["edit"] = exc

    def claim() -> None:
        barrier.wait(timeout=JOIN_TIMEOUT_S)
        outcome["claims"] = _until_not_busy(lambda: claimer.claim("w", 10, LEASE_S, now))

    threads = [threading.Thread(target=edit), threading.Thread(target=claim)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
        assert not thread.is_alive()
    claims = outcome["claims"]
    assert isinstance(claims, list)
    seen = {(c.content, c.recipient) for c in claims if c.message_id == message_id}
    if isinstance(outcome["edit"], LockedError):  # dispatch began first: all old
        assert {content for content, _ in seen} == {"alert"} and len(seen) == 3
    else:  # the edit landed first: whatever was claimed is entirely new
        assert seen <= {("new", "999-999-9999")}
    claimer.settle("w", sent(claims), now)  # the next round starts from a quiet store


def _until_not_busy(call: Callable[[], T]) -> T:
    for _ in range(BUSY_TRIES - 1):
        try:
            return call()
        except StoreBusyError:
            continue
    return call()


def test_edit_is_locked_once_dispatch_has_begun(store: DispatchStore) -> None:
    message_id = submit(store, 2)
    store.claim("w", 1, LEASE_S, T0)
    with pytest.raises(LockedError, match="locked: dispatching since 2001-09-09T01:46:40.125Z"):
        store.edit(message_id, 1, MessageEdit.validated(content="too late"), T0 + 1)
    (view,) = store.messages()
    assert view.content == "alert" and view.version == 1


def test_cancel_while_scheduled_cancels_every_delivery(store: DispatchStore) -> None:
    message_id = submit(store, 3, at=T0 + 10)
    result = store.cancel(message_id, T0)
    assert (result.cancelled, result.already_sent, result.in_flight) == (3, 0, 0)
    assert result.was_status is MessageStatus.SCHEDULED
    assert store.claim("w", 10, LEASE_S, T0 + 20) == []
    assert store.next_due_at(T0 + 20) is None
    with pytest.raises(LockedError, match="already cancelled"):
        store.cancel(message_id, T0)
    with pytest.raises(LockedError):
        store.edit(message_id, 2, MessageEdit.validated(content="x"), T0)


def test_cancel_while_dispatching_keeps_sent_and_stops_retries(store: DispatchStore) -> None:
    message_id = submit(store, 4)
    claims = store.claim("w", 2, LEASE_S, T0)
    store.settle("w", sent(claims[:1]), T0 + 1)
    result = store.cancel(message_id, T0 + 2)
    assert (result.cancelled, result.already_sent, result.in_flight) == (2, 1, 1)
    retry = Settlement(delivery_id=claims[1].delivery_id, attempts=1, kind=SettleKind.RETRY,
                       error="busy", next_attempt_at=T0 + 3)
    assert store.settle("w", [retry], T0 + 3).accepted == 1
    counts = store.messages()[0].counts
    assert counts[DeliveryStatus.SENT] == 1 and counts[DeliveryStatus.CANCELLED] == 3
    assert store.messages()[0].status is MessageStatus.CANCELLED
    assert store.next_due_at(T0 + 3) is None


def test_cancel_of_an_unknown_message_is_not_found(store: DispatchStore) -> None:
    with pytest.raises(NotFoundError, match="no message with id 7"):
        store.cancel(7, T0)


def test_next_due_at_is_none_for_an_empty_store_and_listing_filters(
        store: DispatchStore) -> None:
    assert store.next_due_at(T0) is None
    first = submit(store, 1)
    submit(store, 1, start=10)
    store.cancel(first, T0)
    assert [m.id for m in store.messages(status=MessageStatus.CANCELLED)] == [first]
    assert len(store.messages(limit=1)) == 1
    assert len(store.deliveries(message_id=first)) == 1


def test_a_closed_store_raises_store_error(opener: Opener) -> None:
    store = opener()
    store.close()
    with pytest.raises(StoreError):
        store.messages()


def test_a_claim_given_back_after_a_cancel_is_cancelled_not_stuck(store: DispatchStore) -> None:
    """A worker stopping after a cancel releases its unstarted claims: they must become
    cancelled (pending under a cancelled message is never claimed nor closed) and nothing
    may look due any more (or idle workers would spin on empty claims)."""
    message_id = submit(store, 3)
    claims = store.claim("w", 3, LEASE_S, T0)
    store.cancel(message_id, T0 + 1)
    release = [Settlement(delivery_id=c.delivery_id, attempts=c.attempts,
                          kind=SettleKind.RELEASE) for c in claims]
    assert store.settle("w", release, T0 + 2).accepted == 3
    assert {d.status for d in store.deliveries()} == {DeliveryStatus.CANCELLED}
    assert store.next_due_at(T0 + 2) is None
    assert store.claim("w2", 3, LEASE_S, T0 + 100) == []


def test_arguments_no_store_could_keep_are_refused_alike(store: DispatchStore) -> None:
    """Both backends refuse the same odd library calls the same way, changing nothing: a NaN
    time or lease (SQLite would store NULL: a lease never expired and never current), one
    attempt reported twice in a call (no agreed order), a negative listing limit; and an
    id beyond any integer the database holds is simply not found."""
    message_id = submit(store, 2)
    for limit, lease_s, now in [(5, float("nan"), T0), (5, LEASE_S, float("nan")),
                                (5, 0.0, T0), (5, float("inf"), T0), (1.5, LEASE_S, T0)]:
        with pytest.raises(InvalidRequestError):
            store.claim("w", limit, lease_s, now)  # type: ignore[arg-type]
    claims = store.claim("w", 5, LEASE_S, T0)
    retry = Settlement(delivery_id=claims[0].delivery_id, attempts=1, kind=SettleKind.RETRY,
                       error="busy", next_attempt_at=T0 + 5)
    with pytest.raises(InvalidRequestError, match="attempt 1 is reported twice"):
        store.settle("w", [retry, *sent(claims)], T0 + 1)
    with pytest.raises(InvalidRequestError, match="finite"):
        store.settle("w", sent(claims), float("nan"))
    for bad, fragment in [
        (retry._replace(next_attempt_at=float("nan")), "next_attempt_at must be a finite"),
        (retry._replace(delivery_id=2**64), "delivery_id and attempts must be integers"),
        (retry._replace(attempts=2**64), "delivery_id and attempts must be integers"),
        (retry._replace(attempts=True), "delivery_id and attempts must be integers"),
        (retry._replace(error="\udcff"), "error is not valid UTF-8"),
    ]:
        with pytest.raises(InvalidRequestError, match=fragment):
            store.settle("w", [bad], T0 + 1)
    assert {d.status for d in store.deliveries()} == {DeliveryStatus.LEASED}
    for listing in (store.messages, store.deliveries):
        with pytest.raises(InvalidRequestError, match="limit"):
            listing(limit=-1)
    huge = 2**64
    assert store.messages(message_id=huge) == [] and store.deliveries(message_id=huge) == []
    assert len(store.messages(limit=2**70)) == 1
    for call in (lambda: store.cancel(huge, T0), lambda: store.requeue_dead(huge, T0),
                 lambda: store.edit(huge, 1, MessageEdit.validated(content="x"), T0)):
        with pytest.raises(NotFoundError):
            call()
    assert store.messages()[0].id == message_id


def test_two_attempts_of_one_delivery_in_one_settle_count_only_the_current(
        store: DispatchStore) -> None:
    """A worker paused past its lease may re-claim a delivery whose first claim it still
    holds, and report both together, stale first or last: only the current one counts."""
    submit(store, 1)
    (stale,) = store.claim("w", 1, LEASE_S, T0)
    (current,) = store.claim("w", 1, LEASE_S, T0 + LEASE_S)
    assert (stale.attempts, current.attempts) == (1, 2)
    result = store.settle("w", [*sent([current]), *sent([stale])], T0 + LEASE_S + 1)
    assert (result.accepted, result.refused) == (1, 1)
    assert store.deliveries()[0].status is DeliveryStatus.SENT


# --- reading pages (issue 11, items 14-16) --------------------------------------------------


def test_messages_newest_first_with_a_before_cursor_and_a_count_of_the_rest(
        store: DispatchStore) -> None:
    """An operator's listing: the newest page first, then older pages through ``before``
    (the last id shown), and how many are left, all under one filter."""
    ids = [submit(store, 1, start=i) for i in range(5)]
    store.cancel(ids[1], T0)
    store.cancel(ids[3], T0)
    assert [m.id for m in store.messages(newest_first=True, limit=2)] == [ids[4], ids[3]]
    assert [m.id for m in store.messages(newest_first=True, limit=2, before=ids[3])] == \
        [ids[2], ids[1]]
    assert [m.id for m in store.messages(before=ids[3])] == ids[:3]  # ascending by default
    assert store.count_messages() == 5
    assert store.count_messages(before=ids[3]) == 3
    cancelled = MessageStatus.CANCELLED
    assert [m.id for m in store.messages(status=cancelled, newest_first=True)] == \
        [ids[3], ids[1]]
    assert store.count_messages(status=cancelled, before=ids[3]) == 1
    assert store.messages(before=ids[0]) == [] and store.count_messages(before=ids[0]) == 0
    assert store.messages(before=0) == [] and store.count_messages(before=-5) == 0
    assert len(store.messages(before=2**70)) == 5 and store.count_messages(before=2**70) == 5
    for bad in ("3", 2.5, True):
        with pytest.raises(InvalidRequestError, match="before must be an id"):
            store.messages(before=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidRequestError, match="before must be an id"):
            store.count_messages(before=bad)  # type: ignore[arg-type]


def test_deliveries_by_recipient_and_after_a_cursor(store: DispatchStore) -> None:
    """Did this number get it? One recipient's delivery, and a message's deliveries page
    by page in recipient order."""
    first = submit(store, 5)
    other = submit(store, 2)
    every = store.deliveries(message_id=first)
    assert [d.recipient for d in every] == phones(5)
    (found,) = store.deliveries(message_id=first, recipient=phones(5)[3])
    assert found.id == every[3].id and found.status is DeliveryStatus.PENDING
    assert store.deliveries(message_id=first, recipient="999-999-9999") == []
    assert len(store.deliveries(recipient=phones(1)[0])) == 2  # both messages list it
    page = store.deliveries(message_id=first, after=every[1].id, limit=2)
    assert [d.id for d in page] == [every[2].id, every[3].id]
    assert store.deliveries(message_id=first, after=every[4].id) == []
    assert [d.message_id for d in store.deliveries(after=every[4].id)] == [other, other]
    assert len(store.deliveries(message_id=first, after=-1)) == 5
    assert store.deliveries(after=2**63 - 1) == [] and store.deliveries(after=2**70) == []
    with pytest.raises(InvalidRequestError, match="after must be an id"):
        store.deliveries(after="1")  # type: ignore[arg-type]


@pytest.mark.parametrize(("outcomes", "expected"), [
    ([SettleKind.SENT, SettleKind.SENT], MessageOutcome.ALL_SENT),
    ([SettleKind.SENT, SettleKind.DEAD], MessageOutcome.PARTLY_FAILED),
    ([SettleKind.DEAD, SettleKind.DEAD], MessageOutcome.ALL_FAILED),
])
def test_a_completed_message_says_how_it_ended(store: DispatchStore,
                                               outcomes: list[SettleKind],
                                               expected: MessageOutcome) -> None:
    """``completed`` only says nothing is left to try; the outcome says whether anyone got
    it. Messages still going out, and cancelled ones, have none."""
    message_id = submit(store, 2)
    assert store.messages()[0].outcome is None
    claims = store.claim("w", 2, LEASE_S, T0)
    store.settle("w", [sent(claims)[0]._replace(kind=outcomes[0])], T0 + 1)
    assert store.messages()[0].outcome is None  # dispatching
    store.settle("w", [sent(claims)[1]._replace(kind=outcomes[1], error="x")], T0 + 1)
    (view,) = store.messages(message_id=message_id)
    assert (view.status, view.outcome) == (MessageStatus.COMPLETED, expected)
    cancelled = submit(store, 1, start=9)
    store.cancel(cancelled, T0)
    assert store.messages(message_id=cancelled)[0].outcome is None
