"""The operator dashboard in process: the API's own app (``create_app``, so the pages meet
every rule the app puts on its routes) over a real ``DispatchService`` on a memory store,
driven with Starlette's TestClient.

What an operator relies on: the key is asked once and kept in a session cookie that scripts
cannot read and other sites cannot send; a tenant sees its own messages and nothing of
another's (the same 404 as a message that does not exist); a revoked key signs the browser
out; anything that came from outside shows as text, never as markup.
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from sms_sim.api import create_app
from sms_sim.api.dashboard import DELIVERIES_PER_PAGE, MESSAGES_PER_PAGE, SESSION_COOKIE
from sms_sim.clock import VirtualClock
from sms_sim.config import RetryPolicy
from sms_sim.dispatch.dispatcher import DispatchConfig, Dispatcher
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.service import DispatchService
from sms_sim.dispatch.stores import open_store
from sms_sim.dispatch.contract import DispatchStore
from sms_sim.dispatch.transport import MemoryProvider, Transport, TransportError
from tests.conftest import T0, phones

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def store() -> DispatchStore:
    return open_store("memory:")


@pytest.fixture
def service(store: DispatchStore) -> Iterator[DispatchService]:
    with DispatchService(store, VirtualClock(T0)) as made:
        yield made


@pytest.fixture
def client(service: DispatchService) -> Iterator[TestClient]:
    # Not the router on a bare app: on that, the pages' own links (?status=, ?after=,
    # ?before=) passed while the API's app refused each of them with a 422.
    with TestClient(create_app("memory:", service=service),
                    follow_redirects=False) as made:
        yield made


def submit(service: DispatchService, tenant: str, content: str, count: int = 3) -> int:
    message = NewMessage.validated(content=content, recipients=phones(count))
    return service.for_tenant(tenant).submit(message).message_id


def sign_in(client: TestClient, service: DispatchService, tenant: str) -> str:
    token = service.create_api_key(tenant).token
    answer = client.post("/login", data={"key": token})
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    return token


class HostileProvider:
    """A provider whose every refusal says something a browser would run, if let."""

    def send(self, key: str, recipient: str, content: str) -> None:
        raise TransportError(HOSTILE)


def dispatch_all(store: DispatchStore, *, failing: bool = False) -> None:
    """Play every due delivery to its end on a virtual clock (dead after one try when
    ``failing``), as a worker would."""
    config = DispatchConfig(retry=RetryPolicy(max_attempts=1), idle_recheck_s=1.0)
    dispatcher = Dispatcher(store, clock=VirtualClock(T0), rng=random.Random(1), config=config)
    provider: Transport = HostileProvider() if failing else MemoryProvider()
    dispatcher.run(provider, threading.Event(), until_idle=True)


# --- signing in -------------------------------------------------------------------------


def test_without_a_session_the_page_is_the_sign_in_form(client: TestClient,
                                                        service: DispatchService) -> None:
    submit(service, "acme", "secret plans")
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<form method="post" action="/login">' in page.text
    assert 'type="password"' in page.text
    assert "secret plans" not in page.text
    assert client.get("/messages/1").status_code == 401  # a deep link asks to sign in too


def test_a_good_key_sets_a_session_cookie_only_this_site_and_no_script_can_use(
        client: TestClient, service: DispatchService) -> None:
    token = service.create_api_key("acme").token
    answer = client.post("/login", data={"key": f"  {token}\n"})
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    cookie = answer.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert {"httponly", "samesite", "path"} <= attributes
    assert "samesite=strict" in cookie.lower()
    assert "max-age" not in attributes and "expires" not in attributes  # the browser session
    assert "secure" not in attributes  # plain http: a Secure cookie would never come back


@pytest.mark.parametrize("key, status, says", [
    ("", 400, "enter an API key"),
    ("smsk_000000000000_" + "a" * 43, 401, "that API key is not valid"),
    ("not a key", 401, "that API key is not valid"),
    ("x" * 5000, 400, "too long"),
])
def test_a_bad_key_is_refused_on_the_form_and_sets_no_cookie(
        client: TestClient, key: str, status: int, says: str) -> None:
    answer = client.post("/login", data={"key": key})
    assert answer.status_code == status
    assert says in answer.text and 'action="/login"' in answer.text
    assert "set-cookie" not in answer.headers


def test_a_sign_in_posted_from_another_site_is_refused(client: TestClient,
                                                       service: DispatchService) -> None:
    token = service.create_api_key("acme").token
    answer = client.post("/login", data={"key": token},
                         headers={"Origin": "https://evil.example"})
    assert answer.status_code == 403 and "set-cookie" not in answer.headers
    same = client.post("/login", data={"key": token}, headers={"Origin": "http://testserver"})
    assert same.status_code == 303


def test_sign_out_clears_the_cookie(client: TestClient, service: DispatchService) -> None:
    sign_in(client, service, "acme")
    answer = client.post("/logout")
    assert answer.status_code == 303
    assert SESSION_COOKIE not in client.cookies
    assert 'action="/login"' in client.get("/").text


def test_a_revoked_key_signs_the_browser_out_at_its_next_reload(
        client: TestClient, service: DispatchService) -> None:
    token = sign_in(client, service, "acme")
    assert client.get("/").status_code == 200
    service.revoke_api_key(token.split("_")[1])
    page = client.get("/")
    assert page.status_code == 401 and "no longer valid" in page.text
    assert SESSION_COOKIE not in client.cookies


# --- what a tenant sees -----------------------------------------------------------------


def test_the_dashboard_shows_the_tenants_messages_with_progress_and_counts(
        client: TestClient, service: DispatchService, store: DispatchStore) -> None:
    ours = submit(service, "acme", "shift starts at 9", count=4)
    theirs = submit(service, "globex", "globex payroll", count=7)
    dispatch_all(store)
    sign_in(client, service, "acme")
    page = client.get("/")
    assert page.status_code == 200
    assert '<meta http-equiv="refresh" content="2">' in page.text
    assert "tenant <b>acme</b>" in page.text
    row = re.search(rf'<tr id="message-{ours}">.*?</tr>', page.text)
    assert row is not None, page.text
    assert "shift starts at 9" in row.group() and "completed" in row.group()
    assert '<progress value="4" max="4">' in row.group()
    assert "globex payroll" not in page.text and f'id="message-{theirs}"' not in page.text
    counts = re.search(r'<ul class="counts">.*?</ul>', page.text)
    assert counts is not None
    assert "<b>4</b>sent" in counts.group()  # acme's 4, not globex's 7 as well
    assert '<li class="dead" id="dead-letters"><b>0</b>dead letters</li>' in counts.group()


def test_another_tenants_message_is_the_same_404_as_one_that_does_not_exist(
        client: TestClient, service: DispatchService) -> None:
    theirs = submit(service, "globex", "globex payroll")
    sign_in(client, service, "acme")
    other = client.get(f"/messages/{theirs}")
    missing = client.get("/messages/999")
    assert other.status_code == missing.status_code == 404
    assert "globex payroll" not in other.text
    assert other.text.replace(f"id {theirs}", "id N") == missing.text.replace("id 999", "id N")
    assert client.get("/messages/abc").status_code == 404


def test_the_message_page_pages_its_deliveries_by_cursor(client: TestClient,
                                                         service: DispatchService) -> None:
    message = submit(service, "acme", "all hands", count=DELIVERIES_PER_PAGE + 20)
    sign_in(client, service, "acme")
    first = client.get(f"/messages/{message}")
    assert first.status_code == 200
    assert '<meta http-equiv="refresh"' in first.text  # still going out
    assert first.text.count("<td>555-") == DELIVERIES_PER_PAGE
    found = re.search(rf'href="/messages/{message}\?after=(\d+)">next page', first.text)
    assert found is not None
    second = client.get(f"/messages/{message}?after={found.group(1)}")
    assert second.text.count("<td>555-") == 20 and "next page" not in second.text
    assert "first page" in second.text


def test_the_message_page_filters_by_status_and_refuses_a_bad_one(
        client: TestClient, service: DispatchService) -> None:
    message = submit(service, "acme", "x", count=2)
    sign_in(client, service, "acme")
    pending = client.get(f"/messages/{message}?status=pending")
    assert pending.text.count("<td>555-") == 2
    assert "No sent deliveries" in client.get(f"/messages/{message}?status=sent").text
    bad = client.get(f"/messages/{message}?status=lost")
    assert bad.status_code == 400 and "status must be one of" in bad.text
    assert client.get(f"/messages/{message}?after=-1").status_code == 400
    assert client.get("/?before=x").status_code == 400


def test_a_finished_message_page_stops_reloading(
        client: TestClient, service: DispatchService, store: DispatchStore) -> None:
    message = submit(service, "acme", "done soon", count=2)
    dispatch_all(store)
    sign_in(client, service, "acme")
    page = client.get(f"/messages/{message}")
    assert "completed" in page.text and '<meta http-equiv="refresh"' not in page.text


# --- hostile text -----------------------------------------------------------------------


def test_hostile_content_and_provider_errors_show_as_text(
        client: TestClient, service: DispatchService, store: DispatchStore) -> None:
    message = submit(service, "acme", HOSTILE, count=2)
    dispatch_all(store, failing=True)
    sign_in(client, service, "acme")
    escaped = ("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x "
               "onerror=alert(1)&gt;")
    for page in (client.get("/"), client.get(f"/messages/{message}"),
                 client.get(f"/messages/{message}?status=dead")):
        assert page.status_code == 200
        assert "<script" not in page.text and "<img" not in page.text
    detail = client.get(f"/messages/{message}").text
    assert escaped in detail  # the content, and the provider's error per delivery
    assert detail.count(escaped) == 3
    assert '<li class="dead" id="dead-letters"><b>2</b>' in client.get("/").text
    hostile = "/messages/%3Cscript%3Ealert(1)%3C%2Fscript%3E"  # no route: its "/" splits it
    for path in (hostile, "/messages/%3Cscript%3E"):
        page = client.get(path, headers={"accept": "text/html"})
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
        assert "<script" not in page.text and "&lt;script&gt;" in page.text
    quoted = client.get(hostile)  # not a browser: the problem document, which quotes it
    assert quoted.headers["x-content-type-options"] == "nosniff"
    assert quoted.headers["content-type"] == "application/problem+json"


def test_the_pages_links_work_on_the_api_app_and_ids_are_plain_digits(
        client: TestClient, service: DispatchService) -> None:
    message = submit(service, "acme", "x", count=DELIVERIES_PER_PAGE + 1)
    for _ in range(MESSAGES_PER_PAGE):
        submit(service, "acme", "filler", count=1)
    sign_in(client, service, "acme")
    pages = [client.get("/"), client.get(f"/messages/{message}")]
    links = {href for page in pages for href in re.findall(r'href="([^"]+)"', page.text)}
    assert any("before=" in link for link in links) and any("after=" in link for link in links)
    assert any("status=" in link for link in links)
    for link in links:  # every one a page, none a 422 from the API's query check
        assert client.get(link.replace("&amp;", "&")).status_code == 200, link
    for loose in ("1_0", "%201", "+1", "%D9%A1", "01x"):
        assert client.get(f"/messages/{loose}").status_code == 404, loose
    assert client.get("/?before=%D9%A1").status_code == 400
    for path in ("/login", "/logout"):  # an address typed in: back to the page
        answer = client.get(path)
        assert answer.status_code == 303 and answer.headers["location"] == "/"


def test_pages_forbid_scripts_framing_and_caching(client: TestClient,
                                                  service: DispatchService) -> None:
    sign_in(client, service, "acme")
    for page in (client.get("/"), client.post("/logout")):
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src" not in policy
        assert "frame-ancestors 'none'" in policy
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["x-content-type-options"] == "nosniff"


def test_a_store_that_is_down_is_503_with_retry_after(client: TestClient,
                                                      service: DispatchService) -> None:
    sign_in(client, service, "acme")
    service.close()
    page = client.get("/")
    assert page.status_code == 503 and page.headers["retry-after"] == "5"
    assert "cannot be reached" in page.text


def test_the_dashboard_is_not_part_of_the_api_document(client: TestClient) -> None:
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    assert not {"/", "/login", "/logout", "/messages/{message_id}"} & set(paths)


def test_the_api_app_serves_the_dashboard_at_its_root() -> None:
    with TestClient(create_app("memory:"), follow_redirects=False) as client:
        page = client.get("/")
        assert page.status_code == 200 and 'action="/login"' in page.text
        assert client.get("/healthz").status_code == 200  # and the API beside it
