"""The submit's short path (issue 12's benchmark): the answer comes from the store's own copy
of the new message, and the route reads its parameters by hand, as FastAPI would have.

``messages._SubmitRoute`` skips FastAPI's dependency solving; these tests hold it to the
declaration the OpenAPI document is built from, and to what ``BEARER`` and ``known_query``
answer on every other route.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from starlette.requests import Request

from sms_sim.api import messages
from sms_sim.api.auth import BEARER, bearer_from_header, bearer_token
from sms_sim.api.problems import ProblemError
from sms_sim.dispatch.contract import MessageView, SubmitResult
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.stores import MemoryStore, SqliteStore
from tests.api.conftest import ApiHarness, assert_problem


class CountingMemoryStore(MemoryStore):
    """Counts the reads of messages (``messages``), the read-back an answer would need."""

    reads = 0

    def messages(self, **kwargs: Any) -> list[MessageView]:
        self.reads += 1
        return super().messages(**kwargs)


class CountingSqliteStore(SqliteStore):
    reads = 0

    def messages(self, **kwargs: Any) -> list[MessageView]:
        self.reads += 1
        return super().messages(**kwargs)


class ViewlessStore(CountingMemoryStore):
    """A store that keeps no copy of the new message (``SubmitResult.view`` None)."""

    def submit(self, message: NewMessage, now: float) -> SubmitResult:
        return dataclasses.replace(super().submit(message, now), view=None)


def _opened(kind: str, tmp_path: Path) -> CountingMemoryStore | CountingSqliteStore:
    if kind == "sqlite":
        return CountingSqliteStore(tmp_path / "x.db")
    return ViewlessStore() if kind == "viewless" else CountingMemoryStore()


@pytest.mark.parametrize(("kind", "reads"), [("memory", 0), ("sqlite", 0), ("viewless", 1)])
def test_a_submit_is_answered_from_the_stores_copy_of_the_new_message(
        tmp_path: Path, kind: str, reads: int) -> None:
    """Memory and SQLite give the message as their transaction left it, so the answer needs
    no read-back; a store that does not (PostgreSQL today) is read once, as before."""
    store = _opened(kind, tmp_path)
    api = ApiHarness(store)
    acme = api.headers()
    with api.client:
        response = api.submit(acme, 3, priority=2, valid_for=60)
        assert response.status_code == 201, response.text
        assert store.reads == reads
        body = response.json()
        shown = api.client.get(f"/v1/messages/{body['id']}", headers=acme).json()
        assert {**shown, "duplicates_dropped": 0, "suppressed": 0} == body
    store.close()


def test_an_answer_from_the_stores_copy_counts_opted_out_recipients(tmp_path: Path) -> None:
    store = CountingSqliteStore(tmp_path / "x.db")
    api = ApiHarness(store)
    acme = api.headers()
    with api.client:
        api.service.add_opt_outs(["555-010-0001", "555-010-0002"], tenant="acme")
        some = api.submit(acme, recipients=["555-010-0001", "555-010-0003"]).json()
        assert (some["status"], some["suppressed"]) == ("scheduled", 1)
        assert some["deliveries"]["pending"] == 1
        every = api.submit(acme, recipients=["555-010-0001", "555-010-0002"]).json()
        assert (every["status"], every["outcome"], every["suppressed"]) == (
            "completed", "all suppressed", 2)
        assert every["completed_at"] is not None and store.reads == 0
    store.close()


def _submit_route() -> APIRoute:
    return next(route for route in messages.router.routes
                if isinstance(route, APIRoute) and route.path == "/v1/messages"
                and "POST" in (route.methods or ()))


def test_the_submit_route_declares_exactly_what_it_reads() -> None:
    """``_SubmitRoute`` reads the query (to refuse it), the bearer token and Idempotency-Key;
    a parameter added to the declaration without teaching the route fails here."""
    route = _submit_route()
    dependant = route.dependant
    assert type(route).__name__ == "_SubmitRoute"
    assert not (dependant.query_params or dependant.path_params or dependant.cookie_params
                or dependant.body_params)
    assert [param.alias for param in dependant.header_params] == ["Idempotency-Key"]
    assert [sub.call for sub in dependant.dependencies] == [bearer_token]


@pytest.mark.parametrize("value", [
    None, "", "Bearer abc", "bearer abc", "BEARER abc", "Bearer   abc  ", "Bearer a b",
    "Bearer", "Bearer ", "Bearer\tabc", " Bearer abc", "Basic abc", "abc",
])
def test_the_submit_route_reads_a_bearer_token_as_every_other_route(
        value: str | None) -> None:
    headers = [] if value is None else [(b"authorization", value.encode("latin-1"))]
    credentials = asyncio.run(BEARER(Request({"type": "http", "headers": headers})))
    if credentials is None:
        with pytest.raises(ProblemError) as caught:
            bearer_from_header(value)
        assert caught.value.kind.status == 401
    else:
        assert bearer_from_header(value) == credentials.credentials


def test_a_submit_with_a_query_is_refused_before_its_key_is_looked_at(
        api: ApiHarness) -> None:
    """As on every route: without a key it is 401 whatever the query; with one, the query
    is refused before the key is looked up in the store (the app's ``known_query``)."""
    no_key = api.client.post("/v1/messages?dry_run=1", json={"content": "x"})
    assert "Bearer" in assert_problem(no_key, 401, "unauthorized")["detail"]
    response = api.client.post("/v1/messages?dry_run=1", json={"content": "x"},
                               headers={"Authorization": "Bearer smsk_unknown_key"})
    body = assert_problem(response, 422, "invalid-request")
    assert "'dry_run' is not one this operation takes" in body["detail"]
    twice = api.client.post("/v1/messages?a=1&a=2", json={"content": "x"},
                            headers=api.headers())
    assert "'a' is not one" in assert_problem(twice, 422, "invalid-request")["detail"]


def test_the_idempotency_key_header_is_read_in_any_case(api: ApiHarness,
                                                        acme: dict[str, str]) -> None:
    first = api.submit({**acme, "idempotency-key": '"k-1"'})
    again = api.submit({**acme, "IDEMPOTENCY-KEY": "k-1"})
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
