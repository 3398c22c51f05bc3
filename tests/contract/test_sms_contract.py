"""The store contract of issue 14 ("Real SMS") on every backend: segments kept per message,
validity (expired, never sent late), opt-outs (suppressed, never sent) and delivery receipts
(recorded per delivery, idempotent, held when they arrive before the send is recorded).

Time is the test's ``now``, passed in: a fake clock, no sleeps.
"""

from __future__ import annotations

import threading

import pytest

from sms_sim.dispatch.contract import (
    Claim,
    DeliveryStatus,
    DispatchStore,
    DlrOutcome,
    DlrReport,
    InvalidRequestError,
    MessageOutcome,
    MessageStatus,
    SettleKind,
    Settlement,
    provider_key,
)
from sms_sim.dispatch.requests import MessageEdit, NewMessage
from sms_sim.dispatch.validation import format_utc
from sms_sim.segments import Encoding
from tests.conftest import T0, phones
from tests.contract.conftest import LEASE_S, Opener, submit

_D = DeliveryStatus


def settle(store: DispatchStore, claims: list[Claim], kind: SettleKind, now: float,
           owner: str = "w") -> int:
    retry_at = now + 5.0 if kind is SettleKind.RETRY else None
    return store.settle(owner, [Settlement(c.delivery_id, c.attempts, kind, "e", retry_at)
                                for c in claims], now).accepted


def statuses(store: DispatchStore, message_id: int) -> dict[str, DeliveryStatus]:
    return {d.recipient: d.status for d in store.deliveries(message_id=message_id)}


# --- segments ------------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "encoding", "count"), [
    ("x" * 160, Encoding.GSM7, 1),
    ("x" * 161, Encoding.GSM7, 2),
    ("é" * 3 + "ж", Encoding.UCS2, 1),
    ("ж" * 200, Encoding.UCS2, 3),
    ("[" * 80, Encoding.GSM7, 1),
])
def test_submit_keeps_the_encoding_and_segment_count(store: DispatchStore, content: str,
                                                     encoding: Encoding, count: int) -> None:
    result = store.submit(NewMessage.validated(content=content, recipients=phones(1)), T0)
    (view,) = store.messages(message_id=result.message_id)
    assert (view.encoding, view.segments) == (encoding, count)


def test_an_edit_of_the_content_recomputes_the_segments(store: DispatchStore) -> None:
    message_id = submit(store, 2, at=T0 + 600)
    view = store.edit(message_id, 1, MessageEdit.validated(content="ж" * 71), T0)
    assert (view.encoding, view.segments) == (Encoding.UCS2, 2)
    view = store.edit(message_id, 2, MessageEdit.validated(recipients=phones(3)), T0)
    assert (view.encoding, view.segments) == (Encoding.UCS2, 2)


# --- validity ------------------------------------------------------------------------------


def test_validity_is_kept_absolute_or_relative_to_the_due_time(store: DispatchStore) -> None:
    absolute = store.submit(NewMessage.validated(content="a", recipients=phones(1),
                                                 valid_until=T0 + 50), T0).message_id
    relative = store.submit(NewMessage.validated(content="b", recipients=phones(1),
                                                 scheduled_at=T0 + 100, valid_for_s=7200),
                            T0).message_id
    forever = submit(store, 1)
    assert [m.valid_until for m in store.messages()] == [T0 + 50, T0 + 7300, None]
    assert [absolute, relative, forever] == [1, 2, 3]


def test_a_delivery_past_its_validity_is_never_leased_and_becomes_expired(
        store: DispatchStore) -> None:
    message_id = store.submit(NewMessage.validated(content="stale", recipients=phones(3),
                                                   scheduled_at=T0 + 10, valid_for_s=60),
                              T0).message_id
    assert store.claim("w", 10, LEASE_S, T0 + 70) == []
    assert set(statuses(store, message_id).values()) == {_D.EXPIRED}
    (view,) = store.messages(message_id=message_id)
    assert view.status is MessageStatus.COMPLETED and view.completed_at == T0 + 70
    assert view.outcome is MessageOutcome.EXPIRED and view.counts[_D.EXPIRED] == 3
    assert store.next_due_at(T0 + 70) is None
    assert all(d.sent_at is None for d in store.deliveries())


def test_a_claim_just_before_the_end_still_leases_and_carries_the_end(
        store: DispatchStore) -> None:
    store.submit(NewMessage.validated(content="soon", recipients=phones(2), valid_for_s=60), T0)
    claims = store.claim("w", 10, LEASE_S, T0 + 59.5)
    assert len(claims) == 2 and {c.valid_until for c in claims} == {T0 + 60}
    assert all(c.valid_until is None for c in [Claim(1, 1, "r", "c", 1, 0.0)])


def test_retries_and_released_claims_past_the_end_expire_at_the_next_claim(
        store: DispatchStore) -> None:
    message_id = store.submit(NewMessage.validated(content="m", recipients=phones(3),
                                                   valid_for_s=60), T0).message_id
    claims = store.claim("w", 3, LEASE_S, T0)
    settle(store, claims[:1], SettleKind.SENT, T0 + 1)
    settle(store, claims[1:2], SettleKind.RETRY, T0 + 1)
    # The worker found the validity over when it came to send: it gave the claim back.
    settle(store, claims[2:], SettleKind.RELEASE, T0 + 61)
    assert store.claim("w", 10, LEASE_S, T0 + 61) == []
    assert sorted(statuses(store, message_id).values()) == [_D.EXPIRED, _D.EXPIRED, _D.SENT]
    (view,) = store.messages(message_id=message_id)
    assert view.status is MessageStatus.COMPLETED
    assert view.outcome is MessageOutcome.PARTLY_FAILED


def test_an_edit_moves_a_relative_validity_with_the_due_time(store: DispatchStore) -> None:
    message_id = store.submit(NewMessage.validated(content="m", recipients=phones(1),
                                                   scheduled_at=T0 + 100, valid_for_s=60),
                              T0).message_id
    view = store.edit(message_id, 1, MessageEdit.validated(scheduled_at=T0 + 500,
                                                           valid_for_s=60), T0)
    assert view.valid_until == T0 + 560
    view = store.edit(message_id, 2, MessageEdit.validated(valid_until=T0 + 9000), T0)
    assert (view.scheduled_at, view.valid_until) == (T0 + 500, T0 + 9000)
    view = store.edit(message_id, 3, MessageEdit.validated(content="n"), T0)
    assert view.valid_until == T0 + 9000


def test_an_edit_that_would_end_the_validity_before_the_send_is_refused_whole(
        store: DispatchStore) -> None:
    message_id = store.submit(NewMessage.validated(content="m", recipients=phones(1),
                                                   scheduled_at=T0 + 100,
                                                   valid_until=T0 + 200), T0).message_id
    with pytest.raises(InvalidRequestError, match="must be after the send time"):
        store.edit(message_id, 1, MessageEdit.validated(content="new",
                                                        scheduled_at=T0 + 300), T0)
    (view,) = store.messages(message_id=message_id)
    assert (view.version, view.content, view.scheduled_at) == (1, "m", T0 + 100)
    assert store.deliveries()[0].next_attempt_at == T0 + 100
    view = store.edit(message_id, 1, MessageEdit.validated(scheduled_at=T0 + 300,
                                                           valid_for_s=60), T0)
    assert (view.scheduled_at, view.valid_until) == (T0 + 300, T0 + 360)


def test_next_due_at_counts_a_validity_end_with_work_left(store: DispatchStore) -> None:
    """A retry due after the end still wakes a worker at the end, whose claim expires it."""
    message_id = store.submit(NewMessage.validated(content="m", recipients=phones(1),
                                                   valid_for_s=60), T0).message_id
    (claim,) = store.claim("w", 1, LEASE_S, T0)
    store.settle("w", [Settlement(claim.delivery_id, claim.attempts, SettleKind.RETRY, "e",
                                  T0 + 600)], T0)
    assert store.next_due_at(T0) == T0 + 60
    assert store.claim("w", 1, LEASE_S, T0 + 60) == []
    assert store.next_due_at(T0 + 60) is None
    assert statuses(store, message_id) == {phones(1)[0]: _D.EXPIRED}


def test_validity_is_checked_where_it_is_asked_for() -> None:
    with pytest.raises(InvalidRequestError, match="not both"):
        NewMessage.validated(content="m", recipients=phones(1), valid_until=T0, valid_for_s=1)
    with pytest.raises(InvalidRequestError, match="valid_for must be more than 0"):
        NewMessage.validated(content="m", recipients=phones(1), valid_for_s=0)
    with pytest.raises(InvalidRequestError, match="must be after the send time"):
        NewMessage.validated(content="m", recipients=phones(1), scheduled_at=T0,
                             valid_until=T0)


LAST_HOUR = 253402297200.0  # 9999-12-31T23:00:00Z


def test_a_validity_ending_after_the_year_9999_is_refused_and_changes_nothing(
        store: DispatchStore) -> None:
    # The submit was saved, then its confirmation ended on a traceback (exit 1, so a script
    # retried and saved it twice), and every ``show`` of it after that.
    with pytest.raises(InvalidRequestError, match="ends after the year 9999"):
        NewMessage.validated(content="m", recipients=phones(1), scheduled_at=LAST_HOUR,
                             valid_for_s=7200)
    message_id = store.submit(NewMessage.validated(content="m", recipients=phones(1),
                                                   scheduled_at=LAST_HOUR), T0).message_id
    with pytest.raises(InvalidRequestError, match="ends after the year 9999"):
        store.edit(message_id, 1, MessageEdit.validated(valid_for_s=86400), T0)
    (view,) = store.messages(message_id=message_id)
    assert (view.version, view.valid_until) == (1, None)
    assert format_utc(view.scheduled_at + 86400) == "after 9999-12-31T23:59:59.000Z"
    assert format_utc(-1e300) == "before 0001-01-01T00:00:00.000Z"


# --- opt-outs ------------------------------------------------------------------------------


def test_a_listed_number_gets_a_suppressed_delivery_at_submit(store: DispatchStore) -> None:
    result = store.add_opt_outs("default", [phones(3)[1]], T0)
    assert (result.added, result.suppressed) == (1, 0)
    submitted = store.submit(NewMessage.validated(content="m", recipients=phones(3)), T0)
    assert submitted.suppressed == 1
    assert statuses(store, submitted.message_id)[phones(3)[1]] is _D.SUPPRESSED
    claims = store.claim("w", 10, LEASE_S, T0)
    assert sorted(c.recipient for c in claims) == [phones(3)[0], phones(3)[2]]
    settle(store, claims, SettleKind.SENT, T0)
    (view,) = store.messages()
    assert view.outcome is MessageOutcome.ALL_SENT and view.counts[_D.SUPPRESSED] == 1
    assert store.delivery_counts()[_D.SUPPRESSED] == 1


def test_a_large_submit_suppresses_listed_numbers_in_every_part(store: DispatchStore) -> None:
    """Past SQLite's load chunk (2,000 deliveries per transaction), listed numbers in every
    chunk are suppressed, and the kept counts agree."""
    people = phones(4500)
    listed = [people[0], people[2100], people[4499]]
    store.add_opt_outs("default", listed, T0)
    result = store.submit(NewMessage.validated(content="m", recipients=people), T0)
    assert result.suppressed == 3
    (view,) = store.messages(message_id=result.message_id)
    assert view.counts[_D.SUPPRESSED] == 3 and view.counts[_D.PENDING] == 4497
    assert sorted(d.recipient for d in store.deliveries(status=_D.SUPPRESSED)) == listed
    check = getattr(store, "integrity_check", None)
    assert check is None or check() == "ok"


def test_lists_are_per_tenant(store: DispatchStore) -> None:
    store.add_opt_outs("acme", phones(1), T0)
    ours = store.submit(NewMessage.validated(content="m", recipients=phones(1)), T0)
    theirs = store.submit(NewMessage.validated(content="m", recipients=phones(1),
                                               tenant="acme"), T0)
    assert (ours.suppressed, theirs.suppressed) == (0, 1)
    (view,) = store.messages(message_id=theirs.message_id)
    assert view.status is MessageStatus.COMPLETED
    assert view.outcome is MessageOutcome.ALL_SUPPRESSED
    assert [o.phone for o in store.opt_outs("acme")] == phones(1)
    assert store.opt_outs("default") == []


def test_an_opt_out_suppresses_what_is_not_leased_and_what_comes_back(
        store: DispatchStore) -> None:
    people = phones(4)
    message_id = submit(store, 4)
    later = submit(store, 4, at=T0 + 600)
    claims = store.claim("w", 2, LEASE_S, T0)  # people[0] and people[1] in flight
    retry = store.claim("w", 1, LEASE_S, T0)  # people[2]
    settle(store, retry, SettleKind.RETRY, T0)
    result = store.add_opt_outs("default", people, T0 + 1)
    assert (result.added, result.suppressed) == (4, 2 + 4)
    assert statuses(store, message_id) == {people[0]: _D.LEASED, people[1]: _D.LEASED,
                                           people[2]: _D.SUPPRESSED,
                                           people[3]: _D.SUPPRESSED}
    (done,) = store.messages(message_id=later)
    assert done.status is MessageStatus.COMPLETED
    # What comes back (a retry, a release, a lost lease) is suppressed, never leased again.
    settle(store, claims[:1], SettleKind.RETRY, T0 + 2)
    settle(store, claims[1:], SettleKind.RELEASE, T0 + 2)
    assert store.claim("w", 10, LEASE_S, T0 + 100) == []
    assert set(statuses(store, message_id).values()) == {_D.SUPPRESSED}
    (view,) = store.messages(message_id=message_id)
    assert view.status is MessageStatus.COMPLETED
    assert view.outcome is MessageOutcome.ALL_SUPPRESSED


def test_a_lost_lease_and_a_requeued_dead_delivery_of_a_listed_number_are_suppressed(
        store: DispatchStore) -> None:
    people = phones(2)
    message_id = submit(store, 2)
    lost, dead = store.claim("w", 2, 1.0, T0)
    settle(store, [dead], SettleKind.DEAD, T0)
    store.add_opt_outs("default", people, T0)
    assert store.claim("w", 10, LEASE_S, T0 + 5) == []  # rescues the lost lease
    assert store.requeue_dead(message_id, T0 + 5) == 0
    assert statuses(store, message_id) == {lost.recipient: _D.SUPPRESSED,
                                           dead.recipient: _D.SUPPRESSED}
    assert store.deliveries(status=_D.SUPPRESSED)[0].lease_losses == 1
    (view,) = store.messages(message_id=message_id)
    assert view.status is MessageStatus.COMPLETED


def test_opt_outs_are_idempotent_removable_and_listed_by_cursor(store: DispatchStore) -> None:
    people = phones(5)
    assert store.add_opt_outs("default", people[:3], T0).added == 3
    assert store.add_opt_outs("default", people, T0 + 1).added == 2
    first = store.opt_outs("default", limit=2)
    assert [o.phone for o in first] == people[:2] and first[0].created_at == T0
    rest = store.opt_outs("default", after=first[-1].phone)
    assert [o.phone for o in rest] == people[2:] and rest[-1].created_at == T0 + 1
    assert store.remove_opt_out("default", people[0]) is True
    assert store.remove_opt_out("default", people[0]) is False
    assert len(store.opt_outs("default")) == 4
    # Removing does not bring back what was suppressed; a new message reaches the number.
    assert store.submit(NewMessage.validated(content="m", recipients=people[:1]),
                        T0).suppressed == 0
    with pytest.raises(InvalidRequestError):
        store.opt_outs("default", limit=-1)


def test_opt_outs_list_in_byte_order_whatever_the_form(store: DispatchStore) -> None:
    """"+61..." sorts before "555-..." (as Python and SQLite compare), on PostgreSQL too,
    whatever the database's collation, so cursors page alike on every store."""
    listed = ["555-000-0001", "+61412345678", "+4420718387", "999-000-0000"]
    store.add_opt_outs("default", listed, T0)
    first = store.opt_outs("default", limit=2)
    assert [o.phone for o in first] == ["+4420718387", "+61412345678"]
    rest = store.opt_outs("default", after=first[-1].phone)
    assert [o.phone for o in rest] == ["555-000-0001", "999-000-0000"]


# --- delivery receipts ---------------------------------------------------------------------


def _sent_one(store: DispatchStore, count: int = 1) -> list[Claim]:
    submit(store, count)
    claims = store.claim("w", count, LEASE_S, T0)
    settle(store, claims, SettleKind.SENT, T0 + 1)
    return claims


def test_a_receipt_moves_a_sent_delivery_and_a_repeat_changes_nothing(
        store: DispatchStore) -> None:
    (claim,) = _sent_one(store)
    report = DlrReport(claim.idempotency_key, "delivered", T0 + 5)
    assert store.record_dlrs([report], T0 + 6).outcomes == (DlrOutcome.APPLIED,)
    assert store.record_dlrs([report], T0 + 7).outcomes == (DlrOutcome.REPEAT,)
    (delivery,) = store.deliveries()
    assert (delivery.status, delivery.dlr_at) == (_D.DELIVERED, T0 + 5)
    assert delivery.sent_at == T0 + 1
    (view,) = store.messages()
    assert view.status is MessageStatus.COMPLETED and view.outcome is MessageOutcome.ALL_SENT
    assert store.delivery_counts()[_D.DELIVERED] == 1 and store.delivery_counts()[_D.SENT] == 0


def test_delivered_is_final_and_replaces_a_failure_receipt(store: DispatchStore) -> None:
    one, two = _sent_one(store, 2)
    result = store.record_dlrs([
        DlrReport(one.idempotency_key, "undelivered", T0 + 2),
        DlrReport(one.idempotency_key, "expired", T0 + 3),
        DlrReport(one.idempotency_key, "delivered", T0 + 4),
        DlrReport(one.idempotency_key, "undelivered", T0 + 5),
        DlrReport(two.idempotency_key, "expired", T0 + 6),
    ], T0 + 10)
    assert result.outcomes == (DlrOutcome.APPLIED, DlrOutcome.IGNORED, DlrOutcome.APPLIED,
                               DlrOutcome.IGNORED, DlrOutcome.APPLIED)
    assert result.count(DlrOutcome.APPLIED) == 3
    found = {d.recipient: (d.status, d.dlr_at) for d in store.deliveries()}
    assert found == {one.recipient: (_D.DELIVERED, T0 + 4), two.recipient: (_D.EXPIRED, T0 + 6)}
    (view,) = store.messages()
    assert view.outcome is MessageOutcome.PARTLY_FAILED  # a receipt's expiry is not sent


def test_a_receipt_status_may_be_given_as_an_enum_member(store: DispatchStore) -> None:
    """The simulated provider reports ``model.ReceiptStatus`` members; the engine's own
    ``DeliveryStatus`` members do as well: both are their text."""
    from sms_sim.model import ReceiptStatus

    one, two = _sent_one(store, 2)
    result = store.record_dlrs([DlrReport(one.idempotency_key, _D.DELIVERED, T0 + 1),
                                DlrReport(two.idempotency_key, ReceiptStatus.UNDELIVERED, 2)],
                               T0 + 2)
    assert result.outcomes == (DlrOutcome.APPLIED, DlrOutcome.APPLIED)
    found = {d.recipient: (d.status, d.dlr_at) for d in store.deliveries()}
    assert found == {one.recipient: (_D.DELIVERED, T0 + 1),
                     two.recipient: (_D.UNDELIVERED, 2.0)}
    assert type(store.deliveries()[1].dlr_at) is float


def test_unknown_keys_are_reported_not_errors(store: DispatchStore) -> None:
    (claim,) = _sent_one(store)
    result = store.record_dlrs([DlrReport("f" * 32 + ":555-000-0000", "delivered", T0),
                                DlrReport(provider_key(claim.message_uid, "555-999-9999"),
                                          "delivered", T0),
                                DlrReport("no-colon", "delivered", T0),
                                DlrReport(":", "delivered", T0)], T0)
    assert result.outcomes == (DlrOutcome.UNKNOWN,) * 4
    assert store.deliveries()[0].status is _D.SENT


def test_a_receipt_before_the_send_is_recorded_is_held_and_applied_by_the_settle(
        store: DispatchStore) -> None:
    submit(store, 2)
    claims = store.claim("w", 2, LEASE_S, T0)
    early = DlrReport(claims[0].idempotency_key, "undelivered", T0 + 0.5)
    better = DlrReport(claims[0].idempotency_key, "delivered", T0 + 0.6)
    assert store.record_dlrs([early, early, better, early], T0 + 0.7).outcomes == (
        DlrOutcome.HELD, DlrOutcome.REPEAT, DlrOutcome.HELD, DlrOutcome.IGNORED)
    assert store.deliveries()[0].status is _D.LEASED
    assert settle(store, claims, SettleKind.SENT, T0 + 1) == 2
    found = {d.recipient: (d.status, d.dlr_at, d.sent_at) for d in store.deliveries()}
    assert found == {claims[0].recipient: (_D.DELIVERED, T0 + 0.6, T0 + 1),
                     claims[1].recipient: (_D.SENT, None, T0 + 1)}
    assert store.delivery_counts()[_D.DELIVERED] == 1
    assert store.record_dlrs([better], T0 + 2).outcomes == (DlrOutcome.REPEAT,)


def test_a_held_receipt_waits_through_a_retry(store: DispatchStore) -> None:
    submit(store, 1)
    (claim,) = store.claim("w", 1, LEASE_S, T0)
    store.record_dlrs([DlrReport(claim.idempotency_key, "delivered", T0)], T0)
    settle(store, [claim], SettleKind.RETRY, T0)
    assert store.deliveries()[0].status is _D.RETRYING
    (again,) = store.claim("w", 1, LEASE_S, T0 + 5)
    settle(store, [again], SettleKind.SENT, T0 + 6)
    assert store.deliveries()[0].status is _D.DELIVERED


def test_a_batch_with_one_malformed_receipt_changes_nothing(store: DispatchStore) -> None:
    (claim,) = _sent_one(store)
    for bad in (DlrReport(claim.idempotency_key, "unknown", T0),
                DlrReport("", "delivered", T0),
                DlrReport(claim.idempotency_key, "delivered", float("nan"))):
        with pytest.raises(InvalidRequestError, match="receipt 2"):
            store.record_dlrs([DlrReport(claim.idempotency_key, "delivered", T0), bad], T0)
    assert store.deliveries()[0].status is _D.SENT


def test_a_cancel_counts_receipted_deliveries_as_already_sent(store: DispatchStore) -> None:
    message_id = submit(store, 3)
    claims = store.claim("w", 2, LEASE_S, T0)
    settle(store, claims, SettleKind.SENT, T0)
    store.record_dlrs([DlrReport(claims[0].idempotency_key, "delivered", T0)], T0)
    result = store.cancel(message_id, T0 + 1)
    assert (result.cancelled, result.already_sent, result.in_flight) == (1, 2, 0)


def test_pruning_a_message_forgets_the_receipts_held_for_it(store: DispatchStore) -> None:
    message_id = submit(store, 1)
    (claim,) = store.claim("w", 1, LEASE_S, T0)
    store.record_dlrs([DlrReport(claim.idempotency_key, "delivered", T0)], T0)
    settle(store, [claim], SettleKind.DEAD, T0)
    assert store.prune(T0 + 1).messages == 1
    assert store.messages(message_id=message_id) == []
    assert store.record_dlrs([DlrReport(claim.idempotency_key, "delivered", T0)],
                             T0).outcomes == (DlrOutcome.UNKNOWN,)


# --- opt-outs under concurrency ------------------------------------------------------------

JOIN_TIMEOUT_S = 60.0


def test_no_claim_after_an_opt_out_leases_the_number_while_workers_churn(
        opener: Opener) -> None:
    """Workers claim and give back (RETRY, RELEASE) as fast as they can while the opt-out
    lands: every claim that starts after ``add_opt_outs`` returned leaves the number out,
    and in the end nothing to it is open."""
    store = opener()
    stopped = "555-777-0000"
    for start in range(12):
        people = [stopped, phones(1, 100 + start)[0]]
        store.submit(NewMessage.validated(content="m", recipients=people), T0)
    opted = threading.Event()
    barrier = threading.Barrier(4)
    late: list[str] = []
    errors: list[Exception] = []

    def churn(owner: str) -> None:
        mine = opener()
        try:
            barrier.wait(JOIN_TIMEOUT_S)
            for turn in range(25):
                after = opted.is_set()
                claims = mine.claim(owner, 4, LEASE_S, T0)
                if after:
                    late.extend(c.recipient for c in claims)
                kind = SettleKind.RETRY if turn % 2 else SettleKind.RELEASE
                mine.settle(owner, [Settlement(c.delivery_id, c.attempts, kind, "e", T0)
                                    for c in claims], T0)
        except Exception as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(f"w{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    barrier.wait(JOIN_TIMEOUT_S)
    store.add_opt_outs("default", [stopped], T0)
    opted.set()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
        assert not thread.is_alive()
    assert errors == []
    assert stopped not in late
    mine = {d.status for d in store.deliveries(recipient=stopped)}
    assert mine == {DeliveryStatus.SUPPRESSED}, mine
    assert all(c.recipient != stopped for c in store.claim("x", 100, LEASE_S, T0))


def test_the_postgresql_opt_out_lock_is_the_claims_lock() -> None:
    """``postgres.lists`` serialises opt-outs and requeues with claims by taking the lock
    claims take: the two numbers must stay one."""
    pytest.importorskip("psycopg")
    from sms_sim.dispatch.stores.postgres import claim, lists

    assert lists._CLAIM_LOCK == claim._CLAIM_LOCK
