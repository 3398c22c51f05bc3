"""Issue 14 over HTTP: segments and validity on messages, ``/v1/opt-outs`` and
``POST /v1/provider/receipts``, each status code they answer, and the new delivery statuses
in counts, listings and ``/metrics``."""

from __future__ import annotations

from typing import Any

from sms_sim.api.times import rfc3339
from sms_sim.dispatch.contract import Claim, SettleKind, Settlement
from tests.api.conftest import LEASE_S, ApiHarness, assert_problem
from tests.conftest import phones


def provider(api: ApiHarness) -> dict[str, str]:
    token = api.service.create_api_key("default", provider=True).token
    return {"Authorization": f"Bearer {token}"}


def sent_claims(api: ApiHarness, count: int) -> list[Claim]:
    claims = api.store.claim("w", count, LEASE_S, api.clock.now())
    api.store.settle("w", [Settlement(c.delivery_id, c.attempts, SettleKind.SENT)
                           for c in claims], api.clock.now())
    return claims


# --- messages: segments and validity --------------------------------------------------------


def test_submit_answers_segments_encoding_and_validity(api: ApiHarness,
                                                       acme: dict[str, str]) -> None:
    body = api.submit(acme, 2, content="ж" * 71, valid_for=7200).json()
    assert (body["encoding"], body["segments"]) == ("UCS-2", 2)
    assert body["valid_until"] == rfc3339(api.clock.now() + 7200)
    until = rfc3339(api.clock.now() + 60)
    shown = api.client.get(f"/v1/messages/{body['id']}", headers=acme).json()
    assert shown["valid_until"] == body["valid_until"]
    other = api.submit(acme, 1, valid_until=until).json()
    assert other["valid_until"] == until and other["segments"] == 1


def test_a_bad_validity_is_422_naming_it(api: ApiHarness, acme: dict[str, str]) -> None:
    now = api.clock.now()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"valid_for": 0}, "valid_for"),
        ({"valid_for": 60, "valid_until": rfc3339(now + 60)}, "not both"),
        ({"send_at": rfc3339(now + 600), "valid_until": rfc3339(now + 600)},
         "must be after the send time"),
        # Leaving a validity end out means no limit (it said "to send now", as for send_at).
        ({"valid_until": rfc3339(now - 3600)}, "leave valid_until out for no limit"),
        ({"valid_until": "tomorrow"}, "valid_until"),
    ]
    for fields, words in cases:
        problem = assert_problem(api.submit(acme, 1, **fields), 422, "invalid-request")
        assert words in problem["detail"], (fields, problem)
    assert api.client.get("/v1/messages", headers=acme).json()["data"] == []


def test_a_form_takes_validity_too(api: ApiHarness, acme: dict[str, str]) -> None:
    response = api.client.post("/v1/messages", headers=acme, data={
        "content": "drill", "valid_for": "90"}, files={
        "recipients": ("staff.csv", b"phone\n555-010-0001\n", "text/csv")})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["valid_until"] == rfc3339(api.clock.now() + 90)
    bad = api.client.post("/v1/messages", headers=acme, data={
        "content": "drill", "valid_for": "soon"}, files={
        "recipients": ("staff.csv", b"555-010-0001\n", "text/csv")})
    assert "valid_for must be a number" in assert_problem(bad, 422, "invalid-request")["detail"]


def test_patch_changes_the_validity(api: ApiHarness, acme: dict[str, str]) -> None:
    later = rfc3339(api.clock.now() + 3600)
    message_id = api.submitted(acme, 1, send_at=later)
    response = api.client.patch(f"/v1/messages/{message_id}", json={"valid_for": 600},
                                headers={**acme, "If-Match": '"1"'})
    assert response.status_code == 200, response.text
    assert response.json()["valid_until"] == rfc3339(api.clock.now() + 4200)


def test_an_expired_message_reads_expired_and_never_goes_out(api: ApiHarness,
                                                             acme: dict[str, str]) -> None:
    message_id = api.submitted(acme, 3, valid_for=60)
    api.clock.advance(61)
    assert api.store.claim("w", 10, LEASE_S, api.clock.now()) == []
    body = api.client.get(f"/v1/messages/{message_id}", headers=acme).json()
    assert (body["status"], body["outcome"]) == ("completed", "expired")
    assert body["deliveries"]["expired"] == body["progress"]["expired"] == 3
    listed = api.client.get(f"/v1/messages/{message_id}/deliveries?status=expired",
                            headers=acme).json()
    assert len(listed["data"]) == 3 and all(d["sent_at"] is None for d in listed["data"])


# --- opt-outs ---------------------------------------------------------------------------


def test_opt_outs_add_list_and_delete(api: ApiHarness, acme: dict[str, str]) -> None:
    pending = api.submitted(acme, 2, send_at=rfc3339(api.clock.now() + 600))
    added = api.client.post("/v1/opt-outs", json={"phones": ["+15550000000", phones(3)[2]]},
                            headers=acme)
    assert added.status_code == 200, added.text
    assert added.json() == {"given": 2, "added": 2, "suppressed": 1}
    again = api.client.post("/v1/opt-outs", json={"phones": [phones(1)[0]]}, headers=acme)
    assert again.json() == {"given": 1, "added": 0, "suppressed": 0}
    page = api.client.get("/v1/opt-outs?limit=1", headers=acme).json()
    assert [o["phone"] for o in page["data"]] == [phones(1)[0]]
    assert page["has_more"] is True and page["next_after"] == phones(1)[0]
    rest = api.client.get(f"/v1/opt-outs?after={page['next_after']}", headers=acme).json()
    assert [o["phone"] for o in rest["data"]] == [phones(3)[2]] and rest["has_more"] is False
    e164 = "%2B1" + page["next_after"].replace("-", "")  # the same cursor in E.164: it
    assert api.client.get(f"/v1/opt-outs?after={e164}",  # restarted the list
                          headers=acme).json()["data"] == rest["data"]
    body = api.client.get(f"/v1/messages/{pending}", headers=acme).json()
    assert body["deliveries"]["suppressed"] == 1
    submitted = api.submit(acme, 3).json()
    assert submitted["suppressed"] == 2 and submitted["deliveries"]["suppressed"] == 2
    assert api.client.delete("/v1/opt-outs/+15550000000", headers=acme).status_code == 204
    gone = api.client.delete("/v1/opt-outs/555-000-0000", headers=acme)
    assert "not on your opt-out list" in assert_problem(gone, 404, "not-found")["detail"]


def test_opt_outs_import_a_csv_and_are_per_tenant(api: ApiHarness,
                                                  acme: dict[str, str]) -> None:
    csv = b"\xef\xbb\xbfphone,name\n555-010-0001,Ann\n# ignored\n\n+15550100002,Bo\n"
    response = api.client.post("/v1/opt-outs", content=csv,
                               headers={**acme, "Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.json()["added"] == 2
    globex = api.headers("globex")
    assert api.client.get("/v1/opt-outs", headers=globex).json()["data"] == []
    assert api.client.delete("/v1/opt-outs/555-010-0001", headers=globex).status_code == 404
    assert api.submit(globex, recipients=["555-010-0001"]).json()["suppressed"] == 0


def test_opt_out_refusals(api: ApiHarness, acme: dict[str, str]) -> None:
    assert_problem(api.client.get("/v1/opt-outs"), 401, "unauthorized")
    assert_problem(api.client.post("/v1/opt-outs", json={"phones": ["123"]}, headers=acme),
                   422, "invalid-request")
    assert_problem(api.client.post("/v1/opt-outs", json={"phones": []}, headers=acme),
                   422, "invalid-request")
    assert_problem(api.client.post("/v1/opt-outs", json={"phone": "555-010-0001"},
                                   headers=acme), 422, "invalid-request")
    assert_problem(api.client.post("/v1/opt-outs", content=b"555-010-0001",
                                   headers={**acme, "Content-Type": "text/plain"}),
                   415, "unsupported-media-type")
    assert_problem(api.client.post("/v1/opt-outs", content=b"\xff\xfe",
                                   headers={**acme, "Content-Type": "text/csv"}),
                   400, "malformed-request")
    bad_line = api.client.post("/v1/opt-outs", content=b"555-010-0001\nnope\n",
                               headers={**acme, "Content-Type": "text/csv"})
    assert "opt-out CSV line 2" in assert_problem(bad_line, 422, "invalid-request")["detail"]
    assert_problem(api.client.delete("/v1/opt-outs/12", headers=acme), 422, "invalid-request")
    assert_problem(api.client.get("/v1/opt-outs?limit=0", headers=acme), 422,
                   "invalid-request")
    assert_problem(api.client.get("/v1/opt-outs", headers=provider(api)), 403, "forbidden")


# --- delivery receipts ------------------------------------------------------------------


def test_receipts_apply_repeat_hold_and_report_unknown_keys(
        api: ApiHarness, acme: dict[str, str]) -> None:
    message_id = api.submitted(acme, 3)
    claims = api.store.claim("w", 3, LEASE_S, api.clock.now())
    first, second, third = claims
    api.store.settle("w", [Settlement(c.delivery_id, c.attempts, SettleKind.SENT)
                           for c in (first, second)], api.clock.now())
    at = rfc3339(api.clock.now() + 5)
    batch = {"receipts": [
        {"key": first.idempotency_key, "status": "delivered", "at": at},
        {"key": second.idempotency_key, "status": "undelivered", "at": at},
        {"key": third.idempotency_key, "status": "delivered", "at": at},  # not sent yet
        {"key": "f" * 32 + ":555-000-0000", "status": "delivered", "at": at},
    ]}
    response = api.client.post("/v1/provider/receipts", json=batch, headers=provider(api))
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["outcome"] for r in body["results"]] == ["applied", "applied", "held", "unknown"]
    assert (body["applied"], body["held"], body["unknown"]) == (2, 1, 1)
    again = api.client.post("/v1/provider/receipts", json=batch, headers=provider(api)).json()
    assert [r["outcome"] for r in again["results"]] == ["repeat", "repeat", "repeat",
                                                        "unknown"]
    api.store.settle("w", [Settlement(third.delivery_id, third.attempts, SettleKind.SENT)],
                     api.clock.now())
    shown = api.client.get(f"/v1/messages/{message_id}", headers=acme).json()
    assert shown["deliveries"]["delivered"] == 2 and shown["deliveries"]["undelivered"] == 1
    assert shown["progress"]["sent"] == 3 and shown["progress"]["delivered"] == 2
    listed = api.client.get(f"/v1/messages/{message_id}/deliveries", headers=acme).json()
    assert {d["dlr_at"] for d in listed["data"]} == {at}


def test_receipts_need_a_provider_key(api: ApiHarness, acme: dict[str, str]) -> None:
    batch = {"receipts": [{"key": "a:b", "status": "delivered", "at": rfc3339(0.0)}]}
    assert_problem(api.client.post("/v1/provider/receipts", json=batch), 401, "unauthorized")
    assert_problem(api.client.post("/v1/provider/receipts", json=batch, headers=acme), 403,
                   "forbidden")
    bad = {"Authorization": "Bearer smsk_000000000000_" + "x" * 43}
    assert_problem(api.client.post("/v1/provider/receipts", json=batch, headers=bad), 401,
                   "unauthorized")
    assert_problem(api.client.get("/v1/messages", headers=provider(api)), 403, "forbidden")


def test_a_malformed_batch_is_refused_whole(api: ApiHarness, acme: dict[str, str]) -> None:
    (claim,) = (api.submitted(acme, 1), sent_claims(api, 1))[1]
    good = {"key": claim.idempotency_key, "status": "delivered", "at": rfc3339(0.0)}
    for bad in ({**good, "status": "unknown"}, {**good, "at": "yesterday"},
                {**good, "at": "2026-02-30T00:00:00Z"}, {**good, "extra": 1}):
        response = api.client.post("/v1/provider/receipts", json={"receipts": [good, bad]},
                                   headers=provider(api))
        assert_problem(response, 422, "invalid-request")
    assert_problem(api.client.post("/v1/provider/receipts", json={"receipts": []},
                                   headers=provider(api)), 422, "invalid-request")
    broken = api.client.post("/v1/provider/receipts", content=b"{",
                             headers={**provider(api), "Content-Type": "application/json"})
    assert_problem(broken, 400, "malformed-request")
    assert api.store.deliveries()[0].status == "sent"


def test_metrics_count_the_new_statuses(api: ApiHarness, acme: dict[str, str]) -> None:
    api.client.post("/v1/opt-outs", json={"phones": [phones(1)[0]]}, headers=acme)
    api.submitted(acme, 2)
    text = api.client.get("/metrics").text
    assert 'sms_sim_deliveries{status="suppressed"} 1.0' in text
    for status in ("expired", "delivered", "undelivered"):
        assert f"sms_sim_deliveries{{status={status!r}}} 0.0".replace("'", '"') in text
