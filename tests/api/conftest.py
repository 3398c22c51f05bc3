"""Fixtures of the HTTP API tests: an app over a store, driven in process.

``ApiHarness`` holds a store, a ``VirtualClock``, the operator's service over them and an
app built on that service, with a ``TestClient``; ``headers(tenant)`` issues an API key and
returns the headers that carry it. ``FailingStore`` is a ``MemoryStore`` that raises a
chosen ``StoreError`` from every read and write, for the 503 answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from sms_sim.api import create_app
from sms_sim.clock import VirtualClock
from sms_sim.dispatch.contract import (
    DeliveryStatus,
    DispatchStore,
    MessageStatus,
    MessageView,
    SettleKind,
    Settlement,
    SubmitResult,
)
from sms_sim.dispatch.errors import StoreError
from sms_sim.dispatch.keys import ApiKey
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.service import DispatchService
from sms_sim.dispatch.stores import MemoryStore
from tests.conftest import phones

PROBLEM = "application/problem+json"
PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance"}
LEASE_S = 30.0


class FailingStore(MemoryStore):
    """A ``MemoryStore`` whose reads and writes raise ``failure`` while it is set."""

    def __init__(self) -> None:
        super().__init__()
        self.failure: StoreError | None = None

    def _fail(self) -> None:
        if self.failure is not None:
            raise self.failure

    def submit(self, message: NewMessage, now: float) -> SubmitResult:
        self._fail()
        return super().submit(message, now)

    def messages(self, **kwargs: Any) -> list[MessageView]:
        self._fail()
        return super().messages(**kwargs)

    def api_key(self, key_id: str) -> tuple[ApiKey, str] | None:
        self._fail()
        return super().api_key(key_id)

    def next_due_at(self, now: float) -> float | None:
        self._fail()
        return super().next_due_at(now)

    def check_writable(self, within_s: float | None = None) -> None:
        self._fail()
        super().check_writable(within_s)

    def delivery_counts(self, *, tenant: str | None = None) -> dict[DeliveryStatus, int]:
        self._fail()
        return super().delivery_counts(tenant=tenant)


class ApiHarness:
    """An app over ``store`` on a ``VirtualClock``, and a client for it."""

    def __init__(self, store: DispatchStore | None = None) -> None:
        self.clock = VirtualClock()
        self.store = store if store is not None else MemoryStore()
        self.service = DispatchService(self.store, self.clock)
        self.app = create_app("memory:", clock=self.clock, service=self.service)
        self.client = TestClient(self.app)

    def headers(self, tenant: str = "acme") -> dict[str, str]:
        """Authorization headers of a new key for ``tenant``."""
        return {"Authorization": f"Bearer {self.service.create_api_key(tenant).token}"}

    def submit(self, headers: dict[str, str], count: int = 2, **fields: Any) -> Response:
        body = {"content": "hello", "recipients": phones(count), **fields}
        response: Response = self.client.post("/v1/messages", json=body, headers=headers)
        return response

    def submitted(self, headers: dict[str, str], count: int = 2, **fields: Any) -> int:
        """The id of a message submitted as ``headers``' tenant."""
        response = self.submit(headers, count, **fields)
        assert response.status_code == 201, response.text
        found: int = response.json()["id"]
        return found

    def kill_all(self) -> None:
        """Lease every due delivery and report each attempt as its last: all go dead."""
        claims = self.store.claim("w", 10_000, LEASE_S, self.clock.now())
        self.store.settle("w", [Settlement(c.delivery_id, c.attempts, SettleKind.DEAD, "boom")
                                for c in claims], self.clock.now())

    def dispatch(self, message_id: int) -> None:
        """Lease one delivery so the message is dispatching (locked for edits)."""
        self.store.claim("w", 1, LEASE_S, self.clock.now())
        assert self.service.get(message_id).status is MessageStatus.DISPATCHING


def assert_problem(response: Response, status: int, slug: str) -> dict[str, Any]:
    """``response`` is a problem document of ``status`` and type ``/problems/<slug>``,
    with a one-line detail and no trace; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert PROBLEM_FIELDS <= set(body)
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == status
    assert "\n" not in body["detail"] and "Traceback" not in response.text
    assert body["instance"] == response.request.url.path
    return body


@pytest.fixture
def api() -> Iterator[ApiHarness]:
    harness = ApiHarness()
    with harness.client:
        yield harness


@pytest.fixture
def acme(api: ApiHarness) -> dict[str, str]:
    return api.headers("acme")
