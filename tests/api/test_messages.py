"""``/v1/messages``: every route, every answer it promises, and the shape of each refusal."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from sms_sim.api.idempotency import RECEIPT_WAIT_S
from sms_sim.api.submission import BODY_MAX_BYTES
from sms_sim.api.times import rfc3339
from sms_sim.dispatch.validation import PAST_GRACE_S
from tests.api.conftest import ApiHarness, assert_problem
from tests.conftest import phones

CSV = "text/csv"


# --- submit: JSON --------------------------------------------------------------------------


def test_submit_answers_201_with_location_and_the_message(api: ApiHarness,
                                                          acme: dict[str, str]) -> None:
    response = api.submit(acme, 3, priority=2)
    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"/v1/messages/{body['id']}"
    assert response.headers["content-type"] == "application/json"
    assert "idempotent-replayed" not in response.headers
    assert body["status"] == "scheduled" and body["version"] == 1 and body["priority"] == 2
    assert body["recipient_count"] == 3 and body["duplicates_dropped"] == 0
    assert body["deliveries"]["pending"] == 3
    assert body["send_at"] == body["created_at"] == rfc3339(api.clock.now())
    assert body["progress"] == {"total": 3, "sent": 0, "dead": 0, "open": 3,
                                "percent_sent": 0.0, "rate_per_s": None, "eta": None,
                                "delivered": 0, "expired": 0, "suppressed": 0,
                                "segments_sent": 0}
    assert (body["encoding"], body["segments"], body["valid_until"]) == ("GSM-7", 1, None)
    assert body["suppressed"] == 0


def test_one_phone_written_two_ways_is_one_delivery(api: ApiHarness,
                                                    acme: dict[str, str]) -> None:
    recipients = ["555-010-0001", "+15550100001", "+442071838750", "555-010-0001"]
    body = api.submit(acme, recipients=recipients).json()
    assert body["recipient_count"] == 2 and body["duplicates_dropped"] == 2
    listed = api.client.get(f"/v1/messages/{body['id']}/deliveries", headers=acme).json()
    assert [d["recipient"] for d in listed["data"]] == ["555-010-0001", "+442071838750"]


def test_send_at_in_the_future_is_kept_and_a_little_past_is_forgiven(
        api: ApiHarness, acme: dict[str, str]) -> None:
    later = api.clock.now() + 3600
    body = api.submit(acme, send_at=rfc3339(later).replace("Z", "+00:00")).json()
    assert body["send_at"] == rfc3339(later)
    offset = api.submit(acme, send_at="2001-09-09T03:46:40.125+02:00").json()
    assert offset["send_at"] == rfc3339(api.clock.now())  # the same instant
    just_past = rfc3339(api.clock.now() - PAST_GRACE_S + 1)
    assert api.submit(acme, send_at=just_past).status_code == 201


@pytest.mark.parametrize(("send_at", "words"), [
    ("2001-09-09T00:00:00Z", "is in the past"),
    ("2001-09-09T05:00:00", "must include its UTC offset"),
    ("2001-09-09", "must include its UTC offset"),
    ("tomorrow", "must be an RFC 3339 time"),
    ("2001-02-30T10:00:00Z", "not a real time"),
])
def test_send_at_is_refused_as_the_cli_refuses_it(api: ApiHarness, acme: dict[str, str],
                                                  send_at: str, words: str) -> None:
    body = assert_problem(api.submit(acme, send_at=send_at), 422, "invalid-request")
    assert words in body["detail"] and "send_at" in body["detail"]
    assert send_at in body["detail"]


@pytest.mark.parametrize(("fields", "words"), [
    ({"recipients": ["555-010-0001", "12"]}, "recipient 2 must look like xxx-xxx-xxxx"),
    ({"recipients": []}, "at least 1 recipient"),
    ({"content": "tab\there"}, "control characters"),
    ({"content": "   "}, "only whitespace"),
    ({"content": "x" * 1601}, "1-1600 characters (got 1601)"),
    ({"priority": "1"}, "priority"),
    ({"priority": 2**63}, "priority"),
    ({"sendAt": "2030-01-01T00:00:00Z"}, "sendAt is not a field"),
    ({"recipients": "555-010-0001"}, "recipients"),
])
def test_bad_fields_are_422_naming_field_and_value(api: ApiHarness, acme: dict[str, str],
                                                   fields: dict[str, Any],
                                                   words: str) -> None:
    body = assert_problem(api.submit(acme, **fields), 422, "invalid-request")
    assert words in body["detail"]
    assert api.service.list_messages() == []


def test_a_body_that_is_not_json_is_400(api: ApiHarness, acme: dict[str, str]) -> None:
    response = api.client.post("/v1/messages", content=b'{"content": ',
                               headers={**acme, "Content-Type": "application/json"})
    assert "not valid JSON" in assert_problem(response, 400, "malformed-request")["detail"]


def test_other_content_types_are_415(api: ApiHarness, acme: dict[str, str]) -> None:
    form = "application/x-www-form-urlencoded"
    response = api.client.post("/v1/messages", content=b"content=hi",
                               headers={**acme, "Content-Type": form})
    assert "application/json or multipart/form-data" in \
        assert_problem(response, 415, "unsupported-media-type")["detail"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
def test_the_json_bodied_routes_refuse_other_content_types_with_415(
        api: ApiHarness, acme: dict[str, str], content_type: str | None) -> None:
    # They were 422, quoting the body back as "not a valid dictionary"; a submit was 415.
    message_id = api.submitted(acme)
    provider = {"Authorization": "Bearer "
                + api.service.create_api_key("default", provider=True).token}
    for method, path, headers in [
            ("PATCH", f"/v1/messages/{message_id}", {**acme, "If-Match": '"1"'}),
            ("POST", "/v1/dead-letters/requeue", acme),
            ("POST", "/v1/provider/receipts", provider)]:
        # None: no Content-Type with a body (it was a 422 quoting the body back).
        sent = headers if content_type is None else {**headers, "Content-Type": content_type}
        response = api.client.request(method, path, content=b'{"all": true}', headers=sent)
        assert "must be application/json" in \
            assert_problem(response, 415, "unsupported-media-type")["detail"], path
        without_key = {k: v for k, v in sent.items() if k != "Authorization"}
        assert api.client.request(method, path, content=b"x",
                                  headers=without_key).status_code == 401, path
    assert api.client.get(f"/v1/messages/{message_id}", headers=acme).json()["version"] == 1


def test_a_body_declared_too_large_is_413_before_it_is_read(api: ApiHarness,
                                                            acme: dict[str, str]) -> None:
    response = api.client.post("/v1/messages", content=b"{}", headers={
        **acme, "Content-Type": "application/json", "Content-Length": str(BODY_MAX_BYTES + 1)})
    assert_problem(response, 413, "content-too-large")


def test_a_body_that_grows_too_large_is_413(api: ApiHarness, acme: dict[str, str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sms_sim.api.submission.BODY_MAX_BYTES", 100)

    def chunks() -> Iterator[bytes]:
        yield b'{"content": "hi", "recipients": ['
        yield b'"555-010-0001",' * 20
        yield b'"555-010-0002"]}'

    response = api.client.post("/v1/messages", content=chunks(),
                               headers={**acme, "Content-Type": "application/json"})
    assert_problem(response, 413, "content-too-large")


def test_a_submit_without_content_length_is_taken(api: ApiHarness,
                                                  acme: dict[str, str]) -> None:
    # Sent chunked: the route cannot bound the body before reading it, so it looks the key
    # up first (a pool trip of its own), then reads, then submits.
    def chunks() -> Iterator[bytes]:
        yield b'{"content": "hi", '
        yield b'"recipients": ["555-010-0001"]}'

    response = api.client.post("/v1/messages", content=chunks(),
                               headers={**acme, "Content-Type": "application/json"})
    assert response.status_code == 201, response.text
    assert response.json()["recipient_count"] == 1


@pytest.mark.parametrize("body", [
    b'{"content": ',  # small, not JSON: the key is still checked first
    b'{"content": "hi", "recipients": []}',  # small and invalid
    b'{"content": "hi", "recipients": [' + b'"555-010-0001", ' * 2000 + b'"555-010-0002"]}',
], ids=["not-json", "invalid", "large"])
def test_a_bad_key_is_401_whatever_the_body(api: ApiHarness, body: bytes) -> None:
    response = api.client.post("/v1/messages", content=body, headers={
        "Authorization": "Bearer smsk_000000000000_" + "a" * 43,
        "Content-Type": "application/json"})
    assert "unknown API key" in assert_problem(response, 401, "unauthorized")["detail"]
    assert api.service.list_messages() == []


# --- submit: a form with a CSV file --------------------------------------------------------


def test_a_csv_upload_takes_a_spreadsheet_export(api: ApiHarness, acme: dict[str, str]) -> None:
    csv_text = ("\ufeffphone,name\r\n555-010-0001,Ann\r\n\r\n# managers\r\n"
                "+15550100001,Ann again\r\n\"+442071838750\",Bo\r\n")
    response = api.client.post(
        "/v1/messages", headers=acme,
        files={"recipients": ("staff.csv", csv_text.encode(), CSV)},
        data={"content": "Office closed\r\ntoday", "priority": "3",
              "send_at": rfc3339(api.clock.now() + 60)})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["recipient_count"] == 2 and body["duplicates_dropped"] == 1
    # A textarea's line break, which a browser sends as CRLF, was refused as a control
    # character; it is kept as the line break it is.
    assert body["priority"] == 3 and body["content"] == "Office closed\ntoday"


def test_a_big_csv_is_read_from_its_spooled_file(api: ApiHarness, acme: dict[str, str]) -> None:
    numbers = phones(25_000)
    data = ("\n".join(numbers) + "\n").encode() * 4  # past the 1 MiB held in memory
    assert len(data) > 2**20
    response = api.client.post("/v1/messages", headers=acme, data={"content": "hi"},
                               files={"recipients": ("big.csv", data, CSV)})
    assert response.status_code == 201, response.text
    assert response.json()["recipient_count"] == 25_000
    assert response.json()["duplicates_dropped"] == 75_000


@pytest.mark.parametrize(("data", "file", "status", "words"), [
    ({"content": "hi"}, b"555-010-0001\n55-010-0002\n", 422, "recipients CSV line 2"),
    ({"content": "hi"}, b"555-010-0001\n\xff\xfe\n", 400, "not UTF-8"),
    ({}, b"555-010-0001\n", 422, "content is required"),
    ({"content": "hi", "priority": "high"}, b"555-010-0001\n", 422, "priority must be"),
    ({"content": "hi", "send_at": "2001-01-01T00:00:00Z"}, b"555-010-0001\n", 422, "past"),
    ({"content": "hi", "colour": "red"}, b"555-010-0001\n", 400, "'colour' is not a field"),
    ({"content": "hi"}, None, 422, "recipients is required"),
])
def test_a_bad_form_is_refused_naming_the_field_or_line(
        api: ApiHarness, acme: dict[str, str], data: dict[str, str], file: bytes | None,
        status: int, words: str) -> None:
    files = {"recipients": ("r.csv", file, CSV)} if file is not None else \
        {name: (None, value) for name, value in data.items()}
    response = api.client.post("/v1/messages", headers=acme, files=files,
                               data=data if file is not None else None)
    slug = "invalid-request" if status == 422 else "malformed-request"
    assert words in assert_problem(response, status, slug)["detail"]


def test_recipients_may_come_as_a_plain_form_field(api: ApiHarness,
                                                   acme: dict[str, str]) -> None:
    response = api.client.post("/v1/messages", headers=acme, files={
        "content": (None, "hi"), "recipients": (None, "555-010-0001\n555-010-0002")})
    assert response.status_code == 201, response.text
    assert response.json()["recipient_count"] == 2


# --- list and show -------------------------------------------------------------------------


def test_listing_pages_newest_first_with_a_cursor(api: ApiHarness,
                                                  acme: dict[str, str]) -> None:
    ids = [api.submitted(acme) for _ in range(5)]
    first = api.client.get("/v1/messages?limit=2", headers=acme).json()
    assert [m["id"] for m in first["data"]] == ids[:-3:-1]
    assert first["has_more"] is True and first["next_after"] == ids[3]
    second = api.client.get(f"/v1/messages?limit=2&after={first['next_after']}",
                            headers=acme).json()
    assert [m["id"] for m in second["data"]] == [ids[2], ids[1]]
    last = api.client.get(f"/v1/messages?limit=2&after={second['next_after']}",
                          headers=acme).json()
    assert [m["id"] for m in last["data"]] == [ids[0]]
    assert last["has_more"] is False and last["next_after"] is None


def test_an_unknown_query_parameter_is_refused(api: ApiHarness, acme: dict[str, str]) -> None:
    # Without a key the answer is 401 whatever the query: a caller is told to
    # authenticate before anything about the request.
    assert_problem(api.client.get("/v1/messages?limt=5"), 401, "unauthorized")
    body = assert_problem(api.client.get("/v1/messages?limt=5", headers=acme), 422,
                          "invalid-request")
    assert "'limt'" in body["detail"] and "limit" in body["detail"]


@pytest.mark.parametrize("path", ["/v1/messages?after=true&after=0.0",
                                  "/v1/dead-letters?after=true&after=0.0",
                                  "/v1/messages?limit=1&limit=2"])
def test_a_query_parameter_given_twice_is_refused(api: ApiHarness, acme: dict[str, str],
                                                  path: str) -> None:
    """Found by the schema fuzz: FastAPI used the last of the two values."""
    body = assert_problem(api.client.get(path, headers=acme), 422, "invalid-request")
    assert "given more than once" in body["detail"]


def test_listing_filters_by_status(api: ApiHarness, acme: dict[str, str]) -> None:
    kept, gone = api.submitted(acme), api.submitted(acme)
    api.client.post(f"/v1/messages/{gone}/cancel", headers=acme)
    found = api.client.get("/v1/messages?status=cancelled", headers=acme).json()
    assert [m["id"] for m in found["data"]] == [gone]
    found = api.client.get("/v1/messages?status=scheduled", headers=acme).json()
    assert [m["id"] for m in found["data"]] == [kept]


@pytest.mark.parametrize("query", ["status=sent", "limit=0", "limit=1001", "after=0",
                                   "after=x", "limit=1.5"])
def test_bad_listing_parameters_are_422(api: ApiHarness, acme: dict[str, str],
                                        query: str) -> None:
    body = assert_problem(api.client.get(f"/v1/messages?{query}", headers=acme), 422,
                          "invalid-request")
    name, _, value = query.partition("=")
    assert f"query parameter {name}" in body["detail"] and value in body["detail"]


def test_show_gives_progress_and_the_version_as_etag(api: ApiHarness,
                                                     acme: dict[str, str]) -> None:
    message_id = api.submitted(acme, 4)
    api.clock.advance(10)
    claims = api.store.claim("w", 2, 30.0, api.clock.now())
    api.clock.advance(2)
    from sms_sim.dispatch.contract import SettleKind, Settlement
    api.store.settle("w", [Settlement(c.delivery_id, c.attempts, SettleKind.SENT)
                           for c in claims], api.clock.now())
    response = api.client.get(f"/v1/messages/{message_id}", headers=acme)
    assert response.status_code == 200 and response.headers["etag"] == '"1"'
    body = response.json()
    assert body["status"] == "dispatching" and body["deliveries"]["sent"] == 2
    assert body["dispatch_started_at"] == rfc3339(api.clock.now() - 2)
    assert body["progress"]["percent_sent"] == 50.0 and body["progress"]["rate_per_s"] == 1.0
    assert body["progress"]["eta"] == rfc3339(api.clock.now() + 2)


def test_an_unknown_message_is_404_everywhere(api: ApiHarness, acme: dict[str, str]) -> None:
    for method, path in [("GET", "/v1/messages/99"), ("POST", "/v1/messages/99/cancel"),
                         ("GET", "/v1/messages/99/deliveries")]:
        response = api.client.request(method, path, headers=acme)
        assert "no message with id 99" in assert_problem(response, 404, "not-found")["detail"]
    response = api.client.patch("/v1/messages/99", json={"content": "x"}, headers=acme)
    assert_problem(response, 404, "not-found")  # before the missing If-Match: nothing to edit


def test_a_path_id_that_is_no_id_is_422(api: ApiHarness, acme: dict[str, str]) -> None:
    body = assert_problem(api.client.get("/v1/messages/abc", headers=acme), 422,
                          "invalid-request")
    assert "path parameter message_id" in body["detail"] and "abc" in body["detail"]


@pytest.mark.parametrize("written", ["1.0", "1e0", "+1", " 1", "\uff11"])
def test_ids_and_counts_in_urls_are_digits_only(api: ApiHarness, acme: dict[str, str],
                                                written: str) -> None:
    # "47.00" parsed as 47: POST /v1/messages/47.00/cancel cancelled message 47.
    message_id = api.submitted(acme)
    assert message_id == 1
    quoted = urllib.parse.quote(written)
    for method, path in [("POST", f"/v1/messages/{quoted}/cancel"),
                         ("GET", f"/v1/messages?limit={quoted}"),
                         ("GET", f"/v1/messages?after={quoted}"),
                         ("GET", f"/v1/dead-letters?message_id={quoted}")]:
        response = api.client.request(method, path, headers=acme)
        assert "whole number written in digits" in \
            assert_problem(response, 422, "invalid-request")["detail"], path
    assert api.client.get("/v1/messages/1", headers=acme).json()["status"] == "scheduled"


# --- edit ----------------------------------------------------------------------------------


def test_edit_needs_if_match_and_the_current_version(api: ApiHarness,
                                                     acme: dict[str, str]) -> None:
    message_id = api.submitted(acme)
    path = f"/v1/messages/{message_id}"
    change = {"content": "changed", "recipients": ["+442071838750"]}
    assert_problem(api.client.patch(path, json=change, headers=acme), 428,
                   "precondition-required")
    response = api.client.patch(path, json=change, headers={**acme, "If-Match": '"1"'})
    assert response.status_code == 200 and response.headers["etag"] == '"2"'
    assert response.json()["content"] == "changed" and response.json()["recipient_count"] == 1
    stale = api.client.patch(path, json=change, headers={**acme, "If-Match": '"1"'})
    assert "version 2" in assert_problem(stale, 412, "precondition-failed")["detail"]
    weak = api.client.patch(path, json=change, headers={**acme, "If-Match": 'W/"2"'})
    assert_problem(weak, 412, "precondition-failed")
    none = api.client.patch(path, json=change, headers={**acme, "If-Match": '"0"'})  # was 422
    assert "not one of [0]" in assert_problem(none, 412, "precondition-failed")["detail"]
    assert api.client.patch(path, json={"content": "any"},
                            headers={**acme, "If-Match": "*"}).headers["etag"] == '"3"'
    assert api.client.patch(path, json={"content": "listed"},
                            headers={**acme, "If-Match": '"1", "3"'}).headers["etag"] == '"4"'
    assert api.client.get(path, headers=acme).json()["content"] == "listed"


def test_edit_of_a_dispatching_message_is_409_locked(api: ApiHarness,
                                                     acme: dict[str, str]) -> None:
    message_id = api.submitted(acme)
    api.dispatch(message_id)
    response = api.client.patch(f"/v1/messages/{message_id}", json={"content": "x"},
                                headers={**acme, "If-Match": '"1"'})
    assert "dispatching" in assert_problem(response, 409, "locked")["detail"]


@pytest.mark.parametrize(("change", "words"), [
    ({}, "an edit must change"),
    ({"content": None}, "content may not be null"),
    ({"send_at": "2001-01-01T00:00:00Z"}, "in the past"),
    ({"recipients": ["nope"]}, "recipient 1 must look like"),
    ({"version": 2}, "version is not a field"),
])
def test_bad_edits_are_422(api: ApiHarness, acme: dict[str, str], change: dict[str, object],
                           words: str) -> None:
    message_id = api.submitted(acme)
    response = api.client.patch(f"/v1/messages/{message_id}", json=change,
                                headers={**acme, "If-Match": '"1"'})
    assert words in assert_problem(response, 422, "invalid-request")["detail"]
    assert api.service.get(message_id).version == 1


def test_edit_moves_the_time(api: ApiHarness, acme: dict[str, str]) -> None:
    message_id = api.submitted(acme)
    later = rfc3339(api.clock.now() + RECEIPT_WAIT_S)
    response = api.client.patch(f"/v1/messages/{message_id}", json={"send_at": later},
                                headers={**acme, "If-Match": '"1"'})
    assert response.json()["send_at"] == later


# --- cancel and deliveries -----------------------------------------------------------------


def test_cancel_counts_what_it_stopped_and_twice_is_409(api: ApiHarness,
                                                        acme: dict[str, str]) -> None:
    message_id = api.submitted(acme, 3)
    api.dispatch(message_id)
    response = api.client.post(f"/v1/messages/{message_id}/cancel", headers=acme)
    assert response.status_code == 200
    body = response.json()
    assert (body["was_status"], body["cancelled"], body["already_sent"], body["in_flight"]) \
        == ("dispatching", 2, 0, 1)
    assert body["message"]["status"] == "cancelled"
    again = api.client.post(f"/v1/messages/{message_id}/cancel", headers=acme)
    assert_problem(again, 409, "locked")


def test_deliveries_page_by_id_and_filter(api: ApiHarness, acme: dict[str, str]) -> None:
    message_id = api.submitted(acme, 5)
    path = f"/v1/messages/{message_id}/deliveries"
    first = api.client.get(f"{path}?limit=3", headers=acme).json()
    assert len(first["data"]) == 3 and first["has_more"] is True
    rest = api.client.get(f"{path}?limit=3&after={first['next_after']}", headers=acme).json()
    assert len(rest["data"]) == 2 and rest["has_more"] is False
    assert [d["id"] for d in first["data"] + rest["data"]] == \
        sorted(d["id"] for d in first["data"] + rest["data"])
    one = api.client.get(f"{path}?recipient=%2B15550000003", headers=acme).json()
    assert [d["recipient"] for d in one["data"]] == ["555-000-0003"]
    assert api.client.get(f"{path}?status=sent", headers=acme).json()["data"] == []
    bad = api.client.get(f"{path}?recipient=12", headers=acme)
    assert "recipient must look like" in assert_problem(bad, 422, "invalid-request")["detail"]


# --- who may ask ---------------------------------------------------------------------------

V1_ROUTES = [("GET", "/v1/messages"), ("POST", "/v1/messages"), ("GET", "/v1/messages/1"),
             ("PATCH", "/v1/messages/1"), ("POST", "/v1/messages/1/cancel"),
             ("GET", "/v1/messages/1/deliveries"), ("GET", "/v1/dead-letters"),
             ("POST", "/v1/dead-letters/requeue")]


@pytest.mark.parametrize(("method", "path"), V1_ROUTES)
def test_every_v1_route_wants_a_valid_key(api: ApiHarness, method: str, path: str) -> None:
    revoked = api.service.create_api_key("acme")
    api.service.revoke_api_key(revoked.key.key_id)
    json = {"all": True} if path.endswith("requeue") else {"content": "x"}
    for authorization, words in [(None, "send Authorization"),
                                 ("Basic dXNlcjpwdw==", "send Authorization"),
                                 ("Bearer nope", "not an sms_sim API key"),
                                 ("Bearer smsk_000000000000_" + "a" * 43, "unknown API key"),
                                 (f"Bearer {revoked.token}", "was revoked")]:
        headers = {} if authorization is None else {"Authorization": authorization}
        response = api.client.request(method, path, headers=headers,
                                      json=json if method != "GET" else None)
        body = assert_problem(response, 401, "unauthorized")
        assert words in body["detail"] and "aaaa" not in body["detail"]
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_wrong_method_is_405_with_allow(api: ApiHarness, acme: dict[str, str]) -> None:
    response = api.client.delete("/v1/messages/1", headers=acme)
    body = assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "GET, PATCH"
    assert "DELETE" in body["detail"]


def test_an_unknown_path_is_a_404_problem(api: ApiHarness) -> None:
    assert "/v2/messages" in assert_problem(api.client.get("/v2/messages"), 404,
                                            "not-found")["detail"]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_trailing_slash_is_a_404_naming_the_path_not_a_redirect(
        api: ApiHarness, acme: dict[str, str], method: str) -> None:
    # A 307 left a POST unsent for a client that does not follow redirects, and exit 0
    # from ``curl -X POST``; nothing may be created by the slashed path either.
    response = api.client.request(method, "/v1/messages/", headers=acme, follow_redirects=False,
                                  json={"content": "x", "recipients": ["555-010-0001"]})
    detail = assert_problem(response, 404, "not-found")["detail"]
    assert detail == "no resource at /v1/messages/ (did you mean /v1/messages?)"
    assert api.client.get("/v1/messages", headers=acme).json()["data"] == []
    assert "did you mean" not in assert_problem(
        api.client.get("/v2/messages/"), 404, "not-found")["detail"]
