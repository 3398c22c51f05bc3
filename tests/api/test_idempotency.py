"""``Idempotency-Key``: a repeat gets the first answer, a different request under a used key
is 422, a repeat while the first is unfinished is 409, keys are per tenant; and 50 requests
racing with one key create one message."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from sms_sim.api import create_app
from sms_sim.api.idempotency import RECEIPT_WAIT_S
from sms_sim.api.times import rfc3339
from sms_sim.clock import VirtualClock
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.service import DispatchService
from sms_sim.dispatch.stores import open_store
from tests.api.conftest import ApiHarness, assert_problem
from tests.conftest import phones

BODY: dict[str, Any] = {"content": "Shift starts at 9",
                        "recipients": ["555-010-0001", "+15550100001", "555-010-0002"]}


def _post(api: ApiHarness, headers: dict[str, str], key: str,
          body: dict[str, object] | None = None) -> httpx.Response:
    response: httpx.Response = api.client.post("/v1/messages", json=body or BODY,
                                               headers={**headers, "Idempotency-Key": key})
    return response


def test_a_repeat_gets_the_first_answer_byte_for_byte(api: ApiHarness,
                                                      acme: dict[str, str]) -> None:
    first = _post(api, acme, "order-1")
    assert first.status_code == 201 and first.json()["idempotency_key"] == "order-1"
    api.clock.advance(5)
    api.dispatch(first.json()["id"])  # the message moved on: the answer does not
    again = _post(api, acme, "order-1", {**BODY, "recipients": BODY["recipients"][::-1]})
    assert again.status_code == 201
    assert again.content == first.content
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert len(api.service.list_messages()) == 1


@pytest.mark.parametrize("field", ["send_at", "valid_until"])
def test_a_repeat_after_its_times_passed_is_answered_not_refused_as_past(
        api: ApiHarness, acme: dict[str, str], field: str) -> None:
    # The repeat of a request whose time has since passed got 422 "in the past": the
    # client was told it failed while its message stood (and a new key would send twice).
    soon = rfc3339(api.clock.now() + 30)
    body = {**BODY, field: soon} if field == "send_at" else \
        {**BODY, "send_at": rfc3339(api.clock.now() + 10), field: soon}
    first = _post(api, acme, "late-1", body)
    assert first.status_code == 201
    api.clock.advance(600)
    again = _post(api, acme, "late-1", body)
    assert again.status_code == 201 and again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    other = _post(api, acme, "late-1", {**body, "content": "other"})  # still a conflict
    assert_problem(other, 422, "idempotency-key-reused")
    new = _post(api, acme, "late-2", body)  # a new request for that time: refused
    assert "is in the past" in assert_problem(new, 422, "invalid-request")["detail"]
    new = api.client.post("/v1/messages", json=body, headers=acme)  # no key: refused
    assert "is in the past" in assert_problem(new, 422, "invalid-request")["detail"]
    assert len(api.service.list_messages()) == 1


def test_a_quoted_key_is_the_same_key(api: ApiHarness, acme: dict[str, str]) -> None:
    first = _post(api, acme, "abc")
    assert _post(api, acme, '"abc"').content == first.content


def test_a_different_request_under_a_used_key_is_422(api: ApiHarness,
                                                     acme: dict[str, str]) -> None:
    first = _post(api, acme, "order-2")
    for change in ({"content": "other"}, {"recipients": ["555-010-0003"]}, {"priority": 1},
                   {"send_at": "2030-01-01T00:00:00Z"}):
        response = _post(api, acme, "order-2", {**BODY, **change})
        body = assert_problem(response, 422, "idempotency-key-reused")
        assert "order-2" in body["detail"] and str(first.json()["id"]) in body["detail"]
    assert len(api.service.list_messages()) == 1


def test_keys_belong_to_their_tenant(api: ApiHarness, acme: dict[str, str]) -> None:
    globex = api.headers("globex")
    mine, theirs = _post(api, acme, "shared"), _post(api, globex, "shared")
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    other = _post(api, globex, "shared", {**BODY, "content": "other"})
    assert_problem(other, 422, "idempotency-key-reused")


def test_a_key_longer_than_255_characters_is_refused(api: ApiHarness,
                                                     acme: dict[str, str]) -> None:
    assert _post(api, acme, "k" * 255).status_code == 201
    body = assert_problem(_post(api, acme, "k" * 256), 422, "invalid-request")
    assert "idempotency key must be 1-255 characters" in body["detail"]


@pytest.mark.parametrize("raw", ["ключ".encode(), b"a\tb", b"caf\xe9"],
                         ids=["utf-8", "tab", "latin-1"])
def test_a_key_that_is_not_printable_ascii_is_refused(api: ApiHarness, acme: dict[str, str],
                                                      raw: bytes) -> None:
    # Header bytes arrive as Latin-1: "ключ" was stored as "ÐºÐ»ÑÑ", a tab kept.
    response = api.client.post("/v1/messages", json={"content": "x",
                                                     "recipients": ["555-010-0001"]},
                               headers=[*acme.items(), ("Idempotency-Key", raw)])
    assert "printable ASCII" in assert_problem(response, 422, "invalid-request")["detail"]
    assert api.client.get("/v1/messages", headers=acme).json()["data"] == []


def test_a_repeat_before_the_first_kept_its_answer_is_409_then_answered(
        api: ApiHarness, acme: dict[str, str]) -> None:
    # The first request stored its message and died before keeping its answer.
    tenant_view = api.service.for_tenant("acme")
    first = tenant_view.submit(NewMessage.validated(
        content=BODY["content"], recipients=BODY["recipients"], idempotency_key="order-3",
        tenant="acme"))
    response = _post(api, acme, "order-3")
    body = assert_problem(response, 409, "request-in-progress")
    assert response.headers["retry-after"] == "1" and "order-3" in body["detail"]
    api.clock.advance(RECEIPT_WAIT_S)
    late = _post(api, acme, "order-3")
    assert late.status_code == 201 and late.json()["id"] == first.message_id
    assert late.json()["duplicates_dropped"] == 1
    assert _post(api, acme, "order-3").content == late.content  # kept from now on


def test_fifty_racing_requests_with_one_key_create_one_message(tmp_path: Path) -> None:
    """On a SQLite file, 50 concurrent POSTs (the app's thread pool runs them): one creates,
    the others replay its answer or are told the first is still in progress."""
    clock = VirtualClock()
    service = DispatchService(open_store(str(tmp_path / "race.db"), create=True), clock)
    app = create_app("race.db", clock=clock, service=service)
    token = service.create_api_key("acme").token
    body = {"content": "race", "recipients": phones(50)}
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "race-1"}

    async def race() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await asyncio.gather(*[client.post("/v1/messages", json=body,
                                                      headers=headers) for _ in range(50)])

    try:
        responses = asyncio.run(race())
        assert all(r.status_code in (201, 409) for r in responses), \
            sorted({(r.status_code, r.text) for r in responses})
        created = [r for r in responses if r.status_code == 201
                   and "idempotent-replayed" not in r.headers]
        replays = [r for r in responses if r.headers.get("idempotent-replayed") == "true"]
        assert len(created) == 1
        assert all(r.content == created[0].content for r in replays)
        assert len(created) + len(replays) + sum(r.status_code == 409 for r in responses) == 50
        assert [m.id for m in service.list_messages()] == [created[0].json()["id"]]
    finally:
        service.close()
