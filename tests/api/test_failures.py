"""A store that fails is 503 with Retry-After on every route, never 500; a bug is a 500
problem document with nothing of the traceback in it, and logged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sms_sim.dispatch.errors import StoreBusyError, StoreDamagedError, StoreError
from sms_sim.dispatch.errors import StillSubmittingError
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.service import DispatchService
from tests.api.conftest import ApiHarness, FailingStore, assert_problem
from tests.api.test_messages import V1_ROUTES

FAILURES = [(StoreBusyError("database '/srv/alerts.db': database is locked"), "1"),
            (StoreError("database '/srv/alerts.db': disk I/O error"), "5"),
            (StoreDamagedError("database '/srv/alerts.db' is damaged"), "5")]


@pytest.mark.parametrize(("failure", "retry_after"), FAILURES,
                         ids=lambda value: type(value).__name__)
@pytest.mark.parametrize(("method", "path"), V1_ROUTES)
def test_a_failing_store_is_503_with_retry_after(method: str, path: str, failure: StoreError,
                                                 retry_after: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    store = FailingStore()
    harness = ApiHarness(store)
    headers = harness.headers("acme")
    harness.submitted(headers)
    store.failure = failure
    json = {"all": True} if path.endswith("requeue") else \
        {"content": "x", "recipients": ["555-010-0001"]}
    with harness.client as client:
        response = client.request(method, path, json=None if method == "GET" else json,
                                  headers={**headers, "If-Match": '"1"'})
    body = assert_problem(response, 503, "store-unavailable")
    assert response.headers["retry-after"] == retry_after
    # Why in general for the client; the store's own words, which name its file or its
    # server, only in the log.
    assert "/srv/alerts.db" not in response.text and "store" in body["detail"]
    assert str(failure) in caplog.text


def test_a_store_still_loading_the_first_submit_is_409(monkeypatch: pytest.MonkeyPatch) -> None:
    harness = ApiHarness()
    headers = harness.headers("acme")

    def loading(self: DispatchService, message: NewMessage) -> None:
        raise StillSubmittingError("message 1 with idempotency key 'k' is still being loaded")

    monkeypatch.setattr(DispatchService, "submit", loading)
    response = harness.client.post("/v1/messages", json={
        "content": "x", "recipients": ["555-010-0001"]}, headers={**headers,
                                                                  "Idempotency-Key": "k"})
    assert_problem(response, 409, "request-in-progress")
    assert response.headers["retry-after"] == "1"


def test_a_bug_is_a_500_problem_without_its_traceback(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    harness = ApiHarness()
    headers = harness.headers("acme")

    def broken(self: DispatchService, message_id: int) -> None:
        raise RuntimeError("secret internals at 0xdeadbeef")

    monkeypatch.setattr(DispatchService, "get", broken)
    client = TestClient(harness.app, raise_server_exceptions=False)
    with caplog.at_level(logging.ERROR, logger="sms_sim.api.problems"):
        response = client.get("/v1/messages/1", headers=headers)
    body = assert_problem(response, 500, "internal-error")
    assert "deadbeef" not in response.text and "RuntimeError" not in response.text
    assert body["detail"] == "an unexpected error; it was logged"
    assert any("deadbeef" in (record.exc_text or "") or record.exc_info
               for record in caplog.records)


def test_before_startup_the_api_is_503_not_500() -> None:
    """An app whose lifespan has not run (no store yet) says so."""
    from sms_sim.api import create_app

    app = create_app("memory:")
    client = TestClient(app)  # not entered: no startup
    response = client.get("/readyz")
    assert_problem(response, 503, "store-unavailable")
    response = client.get("/v1/messages", headers={"Authorization": "Bearer x"})
    assert_problem(response, 503, "store-unavailable")


def test_a_client_gone_before_its_body_ended_is_no_500_and_no_error_in_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    # It was logged as an unhandled error with two tracebacks and counted as a 500.
    harness = ApiHarness()
    token = harness.headers("acme")["Authorization"].encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/messages",
             "raw_path": b"/v1/messages", "query_string": b"", "root_path": "",
             "client": ("127.0.0.1", 5000), "server": ("testserver", 80),
             "headers": [(b"host", b"testserver"), (b"authorization", token),
                         (b"content-type", b"application/json"), (b"content-length", b"100")]}
    incoming = [{"type": "http.request", "body": b"{}", "more_body": True}]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    with caplog.at_level(logging.INFO):
        asyncio.run(harness.app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400
    assert b"cut short" in b"".join(m.get("body", b"") for m in sent[1:])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with harness.client as client:
        scraped = client.get("/metrics").text
    assert 'status="500"' not in scraped and 'status="400"' in scraped
