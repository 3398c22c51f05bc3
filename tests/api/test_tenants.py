"""Tenant isolation over random traffic: whatever two tenants do, neither can see, change or
requeue the other's messages; each of the other's ids is 404 on every endpoint, and no
listing shows them."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import ApiHarness

TENANTS = ("acme", "globex")
OPERATIONS = st.lists(st.tuples(st.sampled_from(["submit", "edit", "cancel", "kill",
                                                 "requeue"]),
                                st.sampled_from(TENANTS), st.integers(0, 5)),
                      min_size=1, max_size=12)


def _run(api: ApiHarness, headers: dict[str, dict[str, str]],
         operations: list[tuple[str, str, int]]) -> dict[str, set[int]]:
    owned: dict[str, set[int]] = {tenant: set() for tenant in TENANTS}
    for name, tenant, pick in operations:
        mine = sorted(owned[tenant])
        target = mine[pick % len(mine)] if mine else None
        if name == "submit":
            owned[tenant].add(api.submitted(headers[tenant], pick + 1))
        elif name == "edit" and target is not None:
            api.client.patch(f"/v1/messages/{target}", json={"content": f"v{pick}"},
                             headers={**headers[tenant], "If-Match": "*"})
        elif name == "cancel" and target is not None:
            api.client.post(f"/v1/messages/{target}/cancel", headers=headers[tenant])
        elif name == "kill":
            api.kill_all()
        elif name == "requeue":
            api.client.post("/v1/dead-letters/requeue", json={"all": True},
                            headers=headers[tenant])
    return owned


def _assert_cannot_reach(api: ApiHarness, headers: dict[str, str], theirs: set[int]) -> None:
    for message_id in theirs:
        for method, path, body in [
                ("GET", f"/v1/messages/{message_id}", None),
                ("PATCH", f"/v1/messages/{message_id}", {"content": "mine now"}),
                ("POST", f"/v1/messages/{message_id}/cancel", None),
                ("GET", f"/v1/messages/{message_id}/deliveries", None),
                ("GET", f"/v1/dead-letters?message_id={message_id}", None),
                ("POST", "/v1/dead-letters/requeue", {"message_id": message_id})]:
            response = api.client.request(method, path, json=body,
                                          headers={**headers, "If-Match": "*"})
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["detail"] == f"no message with id {message_id}"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPERATIONS)
def test_one_tenant_never_reaches_another(operations: list[tuple[str, str, int]]) -> None:
    api = ApiHarness()
    headers = {tenant: api.headers(tenant) for tenant in TENANTS}
    with api.client:
        owned = _run(api, headers, operations)
        for tenant, other in (TENANTS, TENANTS[::-1]):
            before = api.service.list_messages()
            _assert_cannot_reach(api, headers[tenant], owned[other])
            assert api.service.list_messages() == before  # nothing changed by trying
            listed = api.client.get("/v1/messages?limit=1000", headers=headers[tenant]).json()
            assert {m["id"] for m in listed["data"]} == owned[tenant]
            dead = api.client.get("/v1/dead-letters?limit=1000", headers=headers[tenant]).json()
            assert {d["message_id"] for d in dead["data"]} <= owned[tenant]
            their_dead = [d.id for d in api.service.dead(limit=1000)
                          if d.message_id in owned[other]]
            if their_dead:
                requeued = api.client.post("/v1/dead-letters/requeue",
                                           json={"delivery_ids": their_dead[:1000]},
                                           headers=headers[tenant])
                assert requeued.json() == {"requeued": 0}
