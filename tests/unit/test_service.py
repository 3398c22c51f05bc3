"""``DispatchService`` over the reference store and a ``VirtualClock``: what each operation
returns, that every time it records is the injected clock's, and that each typed error is
raised where the docstrings promise it (and changes nothing)."""

from __future__ import annotations

import re

import pytest

from sms_sim.clock import VirtualClock
from sms_sim.dispatch import contract, errors
from sms_sim.dispatch.contract import (
    DeliveryStatus,
    MessageStatus,
    MessageView,
    SettleKind,
    Settlement,
)
from sms_sim.dispatch.requests import MessageEdit, NewMessage
from sms_sim.dispatch.service import (
    ConflictError,
    DispatchService,
    Health,
    InvalidRequestError,
    LockedError,
    NotFoundError,
    Progress,
    StoreError,
)
from sms_sim.dispatch.stores import MemoryStore
from sms_sim.errors import SmsSimError
from tests.conftest import phones

LEASE_S = 30.0


class Harness:
    """A service and, beside it, the store, for the worker's side (claim, settle)."""

    def __init__(self) -> None:
        self.clock = VirtualClock()
        self.store = MemoryStore()
        self.service = DispatchService(self.store, self.clock)

    def submit(self, count: int = 2) -> int:
        message = NewMessage.validated(
            content="hello", recipients=phones(count))
        return self.service.submit(message).message_id

    def kill_all(self) -> None:
        """Lease everything due and report every attempt as the last one."""
        claims = self.store.claim("w", 1000, LEASE_S, self.clock.now())
        self.store.settle("w", [Settlement(c.delivery_id, c.attempts, SettleKind.DEAD, "boom")
                                for c in claims], self.clock.now())


@pytest.fixture
def h() -> Harness:
    return Harness()


def snapshot(h: Harness) -> tuple[list[MessageView], list[contract.DeliveryView]]:
    return h.store.messages(limit=1000), h.store.deliveries(limit=1000)


def test_the_typed_errors_are_the_engines_and_all_are_sms_sim_errors() -> None:
    assert ConflictError is errors.ConflictError
    assert LockedError is errors.LockedError
    assert NotFoundError is errors.NotFoundError
    assert InvalidRequestError is contract.InvalidRequestError
    assert StoreError is errors.StoreError
    for error in (ConflictError, LockedError, NotFoundError, InvalidRequestError, StoreError):
        assert issubclass(error, SmsSimError)


def test_submit_and_get_use_the_injected_clock(h: Harness) -> None:
    h.clock.advance(12.5)
    message_id = h.submit(3)
    view = h.service.get(message_id)
    assert view.created_at == view.updated_at == view.scheduled_at == h.clock.now()
    assert view.status is MessageStatus.SCHEDULED and view.version == 1
    assert view.counts[DeliveryStatus.PENDING] == 3


def test_a_scheduled_time_is_kept_and_a_repeated_key_creates_nothing(h: Harness) -> None:
    due = h.clock.now() + 3600
    first = h.service.submit(NewMessage.validated(
        content="a", recipients=["555-000-0001"], scheduled_at=due, idempotency_key="k"))
    again = h.service.submit(NewMessage.validated(
        content="a", recipients=["555-000-0001"], scheduled_at=due, idempotency_key="k"))
    assert first.created and not again.created
    assert again.message_id == first.message_id
    assert h.service.get(first.message_id).scheduled_at == due
    assert len(h.service.list_messages()) == 1


@pytest.mark.parametrize("bad_id", ["1", 1.0, True, None])
def test_an_id_that_is_not_an_integer_is_an_invalid_request(h: Harness, bad_id: object) -> None:
    h.submit()
    for call in (lambda: h.service.get(bad_id),  # type: ignore[arg-type]
                 lambda: h.service.cancel(bad_id),  # type: ignore[arg-type]
                 lambda: h.service.deliveries(bad_id),  # type: ignore[arg-type]
                 lambda: h.service.edit(bad_id, 1,  # type: ignore[arg-type]
                                        MessageEdit.validated(content="x"))):
        with pytest.raises(InvalidRequestError, match="message id must be an integer"):
            call()
    assert h.service.get(1).status is MessageStatus.SCHEDULED  # the cancel did nothing


@pytest.mark.parametrize("missing", [2, 0, -1, 2**64])
def test_an_unknown_id_is_not_found_everywhere(h: Harness, missing: int) -> None:
    h.submit()
    before = snapshot(h)
    for call in (lambda: h.service.get(missing),
                 lambda: h.service.cancel(missing),
                 lambda: h.service.edit(missing, 1, MessageEdit.validated(content="x")),
                 lambda: h.service.deliveries(missing),
                 lambda: h.service.dead(missing),
                 lambda: h.service.requeue(missing)):
        with pytest.raises(NotFoundError, match=f"no message with id {missing}"):
            call()
    assert snapshot(h) == before


def test_edit_bumps_the_version_at_the_clocks_time(h: Harness) -> None:
    message_id = h.submit()
    h.clock.advance(5)
    edited = h.service.edit(message_id, 1, MessageEdit.validated(
        content="changed", recipients=["555-111-0000"]))
    assert (edited.version, edited.content, edited.updated_at) == (2, "changed", h.clock.now())
    assert [d.recipient for d in h.service.deliveries(message_id)] == ["555-111-0000"]


def test_a_stale_version_is_a_conflict_and_changes_nothing(h: Harness) -> None:
    message_id = h.submit()
    h.service.edit(message_id, 1, MessageEdit.validated(content="v2"))
    before = snapshot(h)
    with pytest.raises(ConflictError, match="is at version 2, not 1"):
        h.service.edit(message_id, 1, MessageEdit.validated(content="stale"))
    assert snapshot(h) == before


@pytest.mark.parametrize("version", [0, -3, True, "1"])
def test_a_version_below_one_or_not_an_integer_is_invalid(h: Harness, version: object) -> None:
    message_id = h.submit()
    with pytest.raises(InvalidRequestError, match="version must be an integer >= 1"):
        h.service.edit(message_id, version, MessageEdit.validated(  # type: ignore[arg-type]
            content="x"))
    assert h.service.get(message_id).version == 1


def test_editing_a_message_that_started_dispatching_is_locked(h: Harness) -> None:
    message_id = h.submit()
    h.store.claim("w", 1, LEASE_S, h.clock.now())
    with pytest.raises(LockedError, match="locked: dispatching since"):
        h.service.edit(message_id, 1, MessageEdit.validated(content="too late"))
    assert h.service.get(message_id).content == "hello"


def test_cancel_reports_what_it_did_and_a_second_cancel_is_locked(h: Harness) -> None:
    message_id = h.submit(3)
    h.store.claim("w", 1, LEASE_S, h.clock.now())
    h.clock.advance(1)
    result = h.service.cancel(message_id)
    assert (result.cancelled, result.already_sent, result.in_flight) == (2, 0, 1)
    assert result.was_status is MessageStatus.DISPATCHING
    view = h.service.get(message_id)
    assert view.status is MessageStatus.CANCELLED and view.updated_at == h.clock.now()
    with pytest.raises(LockedError, match="already cancelled"):
        h.service.cancel(message_id)


def test_list_filters_by_status_given_as_enum_or_text_and_honours_the_limit(
        h: Harness) -> None:
    ids = [h.submit(1) for _ in range(4)]
    h.service.cancel(ids[1])
    h.service.cancel(ids[3])
    assert [v.id for v in h.service.list_messages()] == ids
    assert [v.id for v in h.service.list_messages(limit=2)] == ids[:2]
    assert [v.id for v in h.service.list_messages(status="cancelled")] == [ids[1], ids[3]]
    assert [v.id for v in h.service.list_messages(status=MessageStatus.SCHEDULED)] == \
        [ids[0], ids[2]]
    assert h.service.list_messages(limit=0) == []


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"status": "done"}, "status must be one of scheduled, dispatching, completed, cancelled"),
    ({"limit": -1}, "limit must be an integer >= 0 (got -1)"),
    ({"limit": 2.5}, "limit must be an integer >= 0"),
    ({"limit": True}, "limit must be an integer >= 0"),
])
def test_bad_list_arguments_are_invalid_requests(
        h: Harness, kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidRequestError, match=re.escape(fragment)):
        h.service.list_messages(**kwargs)  # type: ignore[arg-type]


def test_deliveries_of_a_message_by_status_with_a_limit(h: Harness) -> None:
    first, second = h.submit(3), h.submit(2)
    h.store.claim("w", 1, LEASE_S, h.clock.now())  # one delivery of the first message
    assert [d.message_id for d in h.service.deliveries(second)] == [second, second]
    leased = h.service.deliveries(first, status="leased")
    assert len(leased) == 1 and leased[0].status is DeliveryStatus.LEASED
    assert len(h.service.deliveries(first, status=DeliveryStatus.PENDING)) == 2
    assert len(h.service.deliveries(first, limit=2)) == 2
    with pytest.raises(InvalidRequestError, match="status must be one of pending, leased"):
        h.service.deliveries(first, status="lost")
    with pytest.raises(InvalidRequestError, match="limit must be"):
        h.service.deliveries(first, limit=-5)


def test_dead_lists_dead_deliveries_and_requeue_gives_them_a_fresh_start(h: Harness) -> None:
    first, second = h.submit(2), h.submit(1)
    assert h.service.dead() == []
    h.kill_all()
    assert [d.message_id for d in h.service.dead()] == [first, first, second]
    assert [d.message_id for d in h.service.dead(second)] == [second]
    assert len(h.service.dead(limit=1)) == 1
    assert h.service.get(first).status is MessageStatus.COMPLETED

    h.clock.advance(60)
    assert h.service.requeue(first) == 2
    assert [d.message_id for d in h.service.dead()] == [second]
    again = h.service.deliveries(first)
    assert all(d.status is DeliveryStatus.PENDING and d.attempts == 0
               and d.next_attempt_at == h.clock.now() and d.last_error == "boom"
               for d in again)
    assert h.service.get(first).status is MessageStatus.DISPATCHING
    assert h.service.requeue() == 1
    assert h.service.dead() == []


def test_requeue_leaves_deliveries_of_cancelled_messages_dead(h: Harness) -> None:
    message_id = h.submit(2)
    claims = h.store.claim("w", 1, LEASE_S, h.clock.now())
    h.store.settle("w", [Settlement(claims[0].delivery_id, 1, SettleKind.DEAD, "x")],
                   h.clock.now())
    h.service.cancel(message_id)
    assert h.service.requeue() == 0
    assert len(h.service.dead(message_id)) == 1


def test_health_reports_how_long_due_work_has_waited(h: Harness) -> None:
    empty = h.service.health()
    assert empty == Health(ok=True, checked_at=h.clock.now(), next_due_at=None, behind_s=0.0)
    due = h.clock.now() + 100
    h.service.submit(NewMessage.validated(content="later", recipients=["555-000-0001"],
                                          scheduled_at=due))
    ahead = h.service.health()
    assert (ahead.ok, ahead.next_due_at, ahead.behind_s) == (True, due, 0.0)
    h.clock.advance(130)
    late = h.service.health()
    assert (late.next_due_at, late.behind_s, late.checked_at) == (due, 30.0, h.clock.now())


def test_health_reports_a_failing_store_instead_of_raising(h: Harness) -> None:
    h.store.close()
    report = h.service.health()
    assert not report.ok
    assert report.error == "the store is closed"
    assert report.checked_at == h.clock.now()


def test_close_and_the_with_block_close_the_store(h: Harness) -> None:
    with h.service as service:
        assert service is h.service
        h.submit()
    with pytest.raises(StoreError, match="closed"):
        h.service.get(1)
    with pytest.raises(StoreError, match="closed"):
        h.store.messages()


# --- what an operator reads (issue 11, items 14-16, 12) -------------------------------------


def test_a_message_page_is_newest_first_and_counts_the_older_ones(h: Harness) -> None:
    ids = [h.submit(1) for _ in range(5)]
    page = h.service.message_page(limit=2)
    assert [v.id for v in page.messages] == [ids[4], ids[3]]
    assert (page.more, page.next_before) == (3, ids[3])
    last = h.service.message_page(limit=3, before=ids[2])
    assert [v.id for v in last.messages] == [ids[1], ids[0]]
    assert (last.more, last.next_before) == (0, None)
    h.service.cancel(ids[0])
    cancelled = h.service.message_page(status="cancelled", limit=10)
    assert ([v.id for v in cancelled.messages], cancelled.more) == ([ids[0]], 0)
    assert h.service.message_page(limit=0).more == 5
    assert [v.id for v in h.service.list_messages(newest_first=True, before=ids[1])] == [ids[0]]


def test_progress_gives_the_share_sent_the_rate_and_the_eta_on_the_clock(h: Harness) -> None:
    message_id = h.submit(10)
    assert h.service.progress(h.service.get(message_id)) == Progress(
        total=10, sent=0, dead=0, open=10, sent_fraction=0.0, rate_per_s=None, eta_at=None)
    claims = h.store.claim("w", 10, LEASE_S, h.clock.now())
    h.clock.advance(4)
    h.store.settle("w", [Settlement(c.delivery_id, c.attempts, SettleKind.SENT)
                         for c in claims[:2]], h.clock.now())
    progress = h.service.progress(h.service.get(message_id))
    assert (progress.sent, progress.open, progress.sent_fraction) == (2, 8, 0.2)
    assert progress.rate_per_s == 0.5  # 2 sent in the 4 s since dispatch began
    assert progress.eta_at == h.clock.now() + 16  # 8 more at 0.5/s
    h.store.settle("w", [Settlement(c.delivery_id, c.attempts, SettleKind.DEAD, "x")
                         for c in claims[2:]], h.clock.now())
    h.clock.advance(100)
    done = h.service.progress(h.service.get(message_id))
    assert (done.rate_per_s, done.eta_at, done.dead) == (0.5, None, 8)  # until completion


def test_an_eta_past_the_year_9999_is_none_not_a_time_nothing_can_print(h: Harness) -> None:
    # A dispatch stalled for years put the ETA in year 20276: ``show`` ended on a traceback.
    message_id = h.submit(10_000)  # 9,999 still to go at one per 600 days
    claims = h.store.claim("w", 1, LEASE_S, h.clock.now())
    h.clock.advance(1)
    h.store.settle("w", [Settlement(claims[0].delivery_id, claims[0].attempts,
                                    SettleKind.SENT)], h.clock.now())
    h.clock.advance(600 * 86400)
    progress = h.service.progress(h.service.get(message_id))
    assert progress.rate_per_s is not None and progress.eta_at is None


def test_a_memory_store_has_no_file_to_damage(h: Harness) -> None:
    assert h.service.check() == "ok"


def test_deliveries_of_one_recipient_and_after_a_cursor(h: Harness) -> None:
    message_id = h.submit(3)
    every = h.service.deliveries(message_id)
    assert [d.id for d in h.service.deliveries(message_id, recipient=phones(3)[1])] == \
        [every[1].id]
    assert [d.id for d in h.service.deliveries(message_id, after=every[0].id, limit=1)] == \
        [every[1].id]


def test_after_a_cancel_the_service_waits_for_workers_to_settle_what_they_held(
        h: Harness) -> None:
    """Item 8's report: "in flight" now means sends in progress. A cancel waits (on the
    clock, bounded) until workers settle what they held, so it can say what went out."""
    message_id = h.submit(3)
    claims = h.store.claim("w", 3, LEASE_S, h.clock.now())
    result = h.service.cancel(message_id)
    assert result.in_flight == 3
    start = h.clock.monotonic()
    view = h.service.await_workers(message_id, timeout_s=2.0)  # nobody settles
    assert view.counts[contract.DeliveryStatus.LEASED] == 3
    assert 2.0 <= h.clock.monotonic() - start <= 2.1
    h.store.settle("w", [Settlement(claims[0].delivery_id, claims[0].attempts, SettleKind.SENT),
                         *(Settlement(c.delivery_id, c.attempts, SettleKind.RELEASE)
                           for c in claims[1:])], h.clock.now())
    start = h.clock.monotonic()
    view = h.service.await_workers(message_id, timeout_s=2.0)
    assert h.clock.monotonic() == start  # nothing held: no wait
    assert (view.counts[contract.DeliveryStatus.SENT],
            view.counts[contract.DeliveryStatus.CANCELLED]) == (1, 2)


# --- issue 14: progress in segments and receipts, opt-outs, receipts, provider keys -------


def test_progress_counts_receipted_deliveries_as_sent_and_gives_segments(h: Harness) -> None:
    message_id = h.service.submit(NewMessage.validated(content="ж" * 71,
                                                       recipients=phones(4))).message_id
    h.service.add_opt_outs([phones(4)[3]])  # after the submit: suppresses it at once
    claims = h.store.claim("w", 10, LEASE_S, h.clock.now())
    h.store.settle("w", [Settlement(c.delivery_id, c.attempts, SettleKind.SENT)
                         for c in claims], h.clock.now())
    key = claims[0].idempotency_key
    result = h.service.record_dlrs([contract.DlrReport(key, "delivered", h.clock.now())])
    assert result.outcomes == (contract.DlrOutcome.APPLIED,)
    progress = h.service.progress(h.service.get(message_id))
    assert (progress.sent, progress.delivered, progress.suppressed) == (3, 1, 1)
    assert progress.segments_sent == 6 and progress.open == 0


def test_opt_outs_go_to_the_views_tenant_or_the_one_the_operator_names(h: Harness) -> None:
    acme = h.service.for_tenant("acme")
    assert acme.add_opt_outs(["+15550000001"], tenant="other").added == 1
    assert [o.phone for o in h.service.opt_outs(tenant="acme")] == ["555-000-0001"]
    assert h.service.opt_outs() == [] and acme.opt_outs(tenant="default") != []
    assert h.service.add_opt_outs(["555-000-0002"]).added == 1  # the default tenant
    assert acme.remove_opt_out("+15550000001") is True
    assert acme.opt_outs() == []
    with pytest.raises(InvalidRequestError, match="phone 1 must look like"):
        h.service.add_opt_outs(["nope"])
    with pytest.raises(InvalidRequestError, match="at least 1"):
        h.service.add_opt_outs([])
    with pytest.raises(InvalidRequestError, match="limit"):
        h.service.opt_outs(limit=-1)
    with pytest.raises(InvalidRequestError, match="tenant"):
        h.service.add_opt_outs(["555-000-0003"], tenant="Bad Name")


def test_receipts_are_the_operators_or_a_providers_not_a_tenants(h: Harness) -> None:
    with pytest.raises(InvalidRequestError, match="not a tenant's"):
        h.service.for_tenant("acme").record_dlrs([])
    assert h.service.record_dlrs([]).outcomes == ()


def test_a_provider_key_posts_receipts_only_and_a_tenant_key_never_does(h: Harness) -> None:
    from sms_sim.dispatch.keys import ForbiddenError, KeyRole, UnauthorizedError

    provider = h.service.create_api_key("default", provider=True)
    tenant = h.service.create_api_key("acme")
    assert provider.key.role is KeyRole.PROVIDER and tenant.key.role is KeyRole.TENANT
    assert h.service.authenticate_provider(provider.token).key_id == provider.key.key_id
    assert h.service.authenticate(tenant.token) == "acme"
    with pytest.raises(ForbiddenError, match="is a provider key"):
        h.service.authenticate(provider.token)
    with pytest.raises(ForbiddenError, match="need a provider key"):
        h.service.authenticate_provider(tenant.token)
    h.service.revoke_api_key(provider.key.key_id)
    with pytest.raises(UnauthorizedError, match="was revoked"):
        h.service.authenticate_provider(provider.token)
    assert isinstance(ForbiddenError("x"), UnauthorizedError)


def test_a_prune_reaching_back_before_1970_is_refused_in_one_line() -> None:
    # --older-than 800000d ended on "ValueError: year -711 is out of range", printing it.
    clock = VirtualClock()
    service = DispatchService(MemoryStore(), clock)
    with pytest.raises(InvalidRequestError, match="reaches back before 1970"):
        service.prune(clock.now() + 1.0)
    assert service.prune(clock.now())[1].messages == 0
