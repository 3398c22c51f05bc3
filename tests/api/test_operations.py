"""What operators and tools ask: health, readiness, metrics, the problem types, the OpenAPI
document and Swagger UI (served from this server, no CDN)."""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from sms_sim.api.operations import READY_WITHIN_S, ReadinessProbe
from sms_sim.api.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPES
from sms_sim.dispatch.errors import StoreError
from sms_sim.dispatch.stores import SqliteStore
from tests.api.conftest import ApiHarness, FailingStore, assert_problem
from tests.conftest import eventually
from tests.unit.test_sqlite_locks import ReleasingClock


def test_healthz_answers_without_the_store() -> None:
    store = FailingStore()
    harness = ApiHarness(store)
    store.failure = StoreError("disk gone")
    with harness.client as client:
        response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_the_probes_and_metrics_ignore_a_query_string() -> None:
    # A cache-busting ``?t=...`` from a probe was a 422 its OpenAPI entry did not list.
    with ApiHarness().client as client:
        for path in ("/healthz?t=1", "/readyz?t=1&t=2", "/metrics?x"):
            assert client.get(path).status_code == 200, path


def test_the_probes_answer_head_as_load_balancers_send_it() -> None:
    store = FailingStore()
    with ApiHarness(store).client as client:
        assert client.head("/healthz").status_code == 200
        assert client.head("/readyz").status_code == 200
        store.failure = StoreError("disk gone")
        refused = client.head("/readyz")
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        assert client.head("/healthz").status_code == 200
        assert "head" not in client.get("/openapi.json").json()["paths"]["/healthz"]


def test_every_get_answers_head_with_its_headers_and_no_body(
        api: ApiHarness, acme: dict[str, str]) -> None:
    message_id = api.submitted(acme)
    got = api.client.get(f"/v1/messages/{message_id}", headers=acme)
    head = api.client.head(f"/v1/messages/{message_id}", headers=acme)
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["etag"] == got.headers["etag"]
    assert head.headers["content-length"] == got.headers["content-length"]
    refused = api.client.head("/v1/messages")  # no key: the GET's 401, challenge included
    assert refused.status_code == 401 and refused.content == b""
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert api.client.head(f"/v1/messages/{message_id}/cancel",
                           headers=acme).status_code == 405  # a POST route has no GET


def test_readyz_is_200_with_the_backlog(api: ApiHarness, acme: dict[str, str]) -> None:
    api.submitted(acme)
    api.clock.advance(90)
    body = api.client.get("/readyz").json()
    assert body["status"] == "ready" and body["behind_s"] == 90.0


@pytest.mark.parametrize("failing", ["check_writable", "next_due_at"])
def test_readyz_is_503_when_the_store_cannot_write_or_read(
        failing: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    store = FailingStore()
    harness = ApiHarness(store)

    def refuse(*args: object, **kwargs: object) -> None:
        raise StoreError("attempt to write a readonly database")

    monkeypatch.setattr(store, failing, refuse)
    with harness.client as client:
        response = client.get("/readyz")
    body = assert_problem(response, 503, "store-unavailable")
    assert "does not take writes" in body["detail"] and response.headers["retry-after"] == "5"
    assert "readonly database" in caplog.text and "readonly" not in response.text


def test_readyz_answers_within_its_bound_while_another_writer_holds_the_file(
        tmp_path: Path) -> None:
    # A probe has a timeout of its own: a lock held elsewhere makes /readyz 503 once
    # ``READY_WITHIN_S`` has passed on the store's clock, not after the 30 s a submit
    # waits (it answered after 30-44 s).
    path = tmp_path / "alerts.db"
    SqliteStore(path).close()
    holder = sqlite3.connect(path, isolation_level=None, timeout=0)
    holder.execute("BEGIN IMMEDIATE")
    clock = ReleasingClock(holder, release_on=None)
    store = SqliteStore(path, lock_clock=clock)
    harness = ApiHarness(store)
    began = clock.monotonic()
    with harness.client as client:
        response = client.get("/readyz")
    assert_problem(response, 503, "store-unavailable")
    assert READY_WITHIN_S - 1e-6 <= clock.monotonic() - began <= READY_WITHIN_S + 0.001
    holder.execute("COMMIT")
    with harness.client as client:
        assert client.get("/readyz").json()["status"] == "ready"
    holder.close()


def _samples(text: str, name: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, _, value = line.rpartition(" ")
            found[key] = float(value)
    return found


def test_metrics_read_the_store_at_each_scrape(api: ApiHarness, acme: dict[str, str]) -> None:
    message_id = api.submitted(acme, 3)
    api.dispatch(message_id)
    api.clock.advance(30)
    api.client.get(f"/v1/messages/{message_id}", headers=acme)
    api.client.get("/v1/messages/12345", headers=acme)
    response = api.client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "text/plain; version=")
    text = response.text
    deliveries = _samples(text, "sms_sim_deliveries{")
    assert deliveries['sms_sim_deliveries{status="pending"}'] == 2
    assert deliveries['sms_sim_deliveries{status="leased"}'] == 1
    assert _samples(text, "sms_sim_claims_leased") == {"sms_sim_claims_leased": 1}
    assert _samples(text, "sms_sim_oldest_due_age_seconds") == \
        {"sms_sim_oldest_due_age_seconds": 30.0}
    assert _samples(text, "sms_sim_store_up") == {"sms_sim_store_up": 1}
    counts = _samples(text, "sms_sim_http_request_duration_seconds_count")
    route = 'method="GET",route="/v1/messages/{message_id}"'
    assert counts[f'sms_sim_http_request_duration_seconds_count{{{route},status="200"}}'] == 1
    assert counts[f'sms_sim_http_request_duration_seconds_count{{{route},status="404"}}'] == 1
    assert "12345" not in text


def test_metrics_say_the_store_is_down_instead_of_failing() -> None:
    store = FailingStore()
    harness = ApiHarness(store)
    with harness.client as client:
        store.failure = StoreError("database is locked")
        response = client.get("/metrics")
    assert response.status_code == 200
    assert _samples(response.text, "sms_sim_store_up") == {"sms_sim_store_up": 0}
    assert "sms_sim_deliveries{" not in response.text


def test_two_apps_in_one_process_count_apart() -> None:
    first, second = ApiHarness(), ApiHarness()
    with first.client, second.client:
        first.client.get("/healthz")
        assert "/healthz" in first.client.get("/metrics").text
        assert "/healthz" not in second.client.get("/metrics").text


@pytest.mark.parametrize("kind", PROBLEM_TYPES, ids=lambda kind: kind.slug)
def test_every_problem_type_is_described_at_its_uri(api: ApiHarness, kind: Any) -> None:
    response = api.client.get(kind.uri)
    assert response.status_code == 200 and kind.meaning in response.text
    assert_problem(api.client.get("/problems/no-such"), 404, "not-found")


def test_docs_come_from_this_server(api: ApiHarness) -> None:
    page = api.client.get("/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    assert not re.search(r"https?://", page.text)
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(assets) == 3
    for asset in assets:
        assert api.client.get(asset).status_code == 200
    script = api.client.get("/docs/assets/swagger-ui-bundle.js").text
    assert "swagger-ui" in script and len(script) > 100_000


def test_the_documents_links_lead_from_a_submit_to_its_message_and_from_a_read_to_an_edit(
        api: ApiHarness, acme: dict[str, str]) -> None:
    """Followed as a generated client would: each link's operation and parameters, the
    values taken from the answer by the link's own runtime expressions."""
    document = api.client.get("/openapi.json").json()
    by_id = {operation["operationId"]: (method, path)
             for path, operations in document["paths"].items()
             for method, operation in operations.items()}

    def follow(answer: Any, link: dict[str, Any], body: Any = None) -> Any:
        method, path = by_id[link["operationId"]]
        headers = dict(acme)
        for name, expression in link["parameters"].items():
            if expression.startswith("$response.body#/"):
                value = answer.json()[expression.removeprefix("$response.body#/")]
            else:
                value = answer.headers[expression.removeprefix("$response.header.")]
            if name.startswith("header."):
                headers[name.removeprefix("header.")] = value
            else:
                path = path.replace("{" + name + "}", str(value))
        return api.client.request(method, path, headers=headers, json=body)

    submitted = api.submit(acme, send_at="2099-01-01T00:00:00Z")
    links = document["paths"]["/v1/messages"]["post"]["responses"]["201"]["links"]
    assert set(links) == {"GetMessage", "ListDeliveries", "CancelMessage"}
    read = follow(submitted, links["GetMessage"])
    assert read.status_code == 200 and read.json()["id"] == submitted.json()["id"]
    assert follow(submitted, links["ListDeliveries"]).status_code == 200
    read_links = document["paths"]["/v1/messages/{message_id}"]["get"]["responses"]["200"][
        "links"]
    edited = follow(read, read_links["EditMessage"], {"content": "changed"})
    assert edited.status_code == 200 and edited.json()["content"] == "changed"
    edit_links = document["paths"]["/v1/messages/{message_id}"]["patch"]["responses"]["200"][
        "links"]
    assert follow(edited, edit_links["EditMessage"], {"content": "again"}).status_code == 200
    cancelled = follow(submitted, links["CancelMessage"])
    assert cancelled.status_code == 200
    cancel_links = document["paths"]["/v1/messages/{message_id}/cancel"]["post"]["responses"][
        "200"]["links"]
    assert follow(cancelled, cancel_links["GetMessage"]).json()["status"] == "cancelled"


def test_the_openapi_document_is_valid_3_1_and_documents_every_problem(
        api: ApiHarness) -> None:
    document = api.client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    validate(document, cls=OpenAPIV31SpecValidator)
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "Problem" in schemas
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    assert list(response["content"]) == [PROBLEM_MEDIA_TYPE], (path, status)
            assert "500" in responses, (method, path)
            if path.startswith("/v1"):
                # 403: a key of the other kind (a provider's on a tenant's route); it was
                # documented on the provider's route only.
                assert {"401", "403", "422", "503"} <= set(responses), (method, path)
                assert operation["security"] == [{"bearer": []}]
    submit = document["paths"]["/v1/messages"]["post"]
    assert set(submit["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert "Location" in submit["responses"]["201"]["headers"]


def test_the_app_has_no_state_outside_itself() -> None:
    """The same schema object is not shared between apps (each builds its own)."""
    first, second = ApiHarness(), ApiHarness()
    assert first.app.openapi() is not second.app.openapi()
    assert TestClient(first.app).get("/openapi.json").json() == \
        TestClient(second.app).get("/openapi.json").json()


def test_readyz_answers_within_its_bound_when_the_store_does_not_answer_at_all() -> None:
    # On PostgreSQL a lock held elsewhere or a stopped server made /readyz (its read before
    # the write check) wait 19-30 s.
    release = threading.Event()
    calls: list[float] = []

    class Stuck(FailingStore):
        def next_due_at(self, now: float) -> float | None:
            calls.append(now)
            release.wait(30)
            return super().next_due_at(now)

    store = Stuck()
    harness = ApiHarness(store)
    harness.app.state.readiness = ReadinessProbe(within_s=0.05)
    with harness.client as client:
        for _ in range(3):  # the probes join the one check still waiting
            body = assert_problem(client.get("/readyz"), 503, "store-unavailable")
            assert "did not answer within 0.05 s" in body["detail"]
        assert len(calls) == 1  # one thread waits on the store, not one per probe
        release.set()
        assert eventually(lambda: client.get("/readyz").status_code == 200, within_s=10)
