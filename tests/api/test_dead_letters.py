"""``/v1/dead-letters``: listing what ran out of attempts, and requeueing it only when told
exactly what."""

from __future__ import annotations

import pytest

from tests.api.conftest import ApiHarness, assert_problem


@pytest.fixture
def dead(api: ApiHarness, acme: dict[str, str]) -> list[int]:
    """Two of acme's messages, every delivery dead: their ids."""
    ids = [api.submitted(acme, 3), api.submitted(acme, 2)]
    api.kill_all()
    return ids


def test_dead_letters_page_by_id_and_filter_by_message(api: ApiHarness, acme: dict[str, str],
                                                       dead: list[int]) -> None:
    first = api.client.get("/v1/dead-letters?limit=4", headers=acme).json()
    assert len(first["data"]) == 4 and first["has_more"] is True
    assert first["data"][0]["status"] == "dead" and first["data"][0]["last_error"] == "boom"
    assert first["data"][0]["attempts"] == 1
    rest = api.client.get(f"/v1/dead-letters?after={first['next_after']}",
                          headers=acme).json()
    assert len(rest["data"]) == 1 and rest["has_more"] is False and rest["next_after"] is None
    one = api.client.get(f"/v1/dead-letters?message_id={dead[1]}", headers=acme).json()
    assert {d["message_id"] for d in one["data"]} == {dead[1]} and len(one["data"]) == 2
    missing = api.client.get("/v1/dead-letters?message_id=999", headers=acme)
    assert_problem(missing, 404, "not-found")


def test_requeue_by_message_by_ids_or_all(api: ApiHarness, acme: dict[str, str],
                                          dead: list[int]) -> None:
    listed = api.client.get(f"/v1/dead-letters?message_id={dead[0]}", headers=acme).json()
    some = [d["id"] for d in listed["data"][:2]]
    response = api.client.post("/v1/dead-letters/requeue", json={"delivery_ids": some},
                               headers=acme)
    assert response.status_code == 200 and response.json() == {"requeued": 2}
    by_message = api.client.post("/v1/dead-letters/requeue", json={"message_id": dead[0]},
                                 headers=acme)
    assert by_message.json() == {"requeued": 1}
    every = api.client.post("/v1/dead-letters/requeue", json={"all": True}, headers=acme)
    assert every.json() == {"requeued": 2}
    assert api.client.get("/v1/dead-letters", headers=acme).json()["data"] == []
    message = api.client.get(f"/v1/messages/{dead[1]}", headers=acme).json()
    assert message["status"] == "dispatching" and message["deliveries"]["pending"] == 2


# ``1`` and ``1.0`` equal True in Python, and a literal true was once matched by equality:
# ``{"all": 1}`` requeued every dead delivery the tenant had.
@pytest.mark.parametrize("body", [{}, {"all": False}, {"all": None}, {"all": 1},
                                  {"all": 1.0}, {"all": "true"},
                                  {"message_id": 1, "all": True},
                                  {"delivery_ids": []}, {"message": 1}])
def test_requeue_must_be_told_what(api: ApiHarness, acme: dict[str, str], dead: list[int],
                                   body: dict[str, object]) -> None:
    response = api.client.post("/v1/dead-letters/requeue", json=body, headers=acme)
    assert_problem(response, 422, "invalid-request")
    assert len(api.client.get("/v1/dead-letters", headers=acme).json()["data"]) == 5


def test_requeue_without_a_body_is_422(api: ApiHarness, acme: dict[str, str]) -> None:
    response = api.client.post("/v1/dead-letters/requeue", headers=acme)
    assert "body is required" in assert_problem(response, 422, "invalid-request")["detail"]


def test_requeue_of_an_unknown_message_is_404(api: ApiHarness, acme: dict[str, str]) -> None:
    response = api.client.post("/v1/dead-letters/requeue", json={"message_id": 7},
                               headers=acme)
    assert_problem(response, 404, "not-found")
