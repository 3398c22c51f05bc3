"""Tenants and API keys through ``DispatchService``: a tenant's view sees and changes only
its own messages, keys authenticate to their tenant until revoked, and the recipient formats
an HTTP portal sends (E.164) become the one stored form."""

from __future__ import annotations

import pytest

from sms_sim.clock import VirtualClock
from sms_sim.dispatch.contract import DeliveryStatus
from sms_sim.dispatch.keys import UnauthorizedError, parse_token
from sms_sim.dispatch.requests import MessageEdit, NewMessage
from sms_sim.dispatch.service import DispatchService, InvalidRequestError, NotFoundError
from sms_sim.dispatch.stores import MemoryStore
from sms_sim.dispatch.tenants import DEFAULT_TENANT, validate_tenant
from sms_sim.dispatch.validation import IDEMPOTENCY_KEY_MAX_CHARS, validate_recipients
from tests.conftest import phones


@pytest.fixture
def service() -> DispatchService:
    return DispatchService(MemoryStore(), VirtualClock())


def _message(count: int = 2, **fields: object) -> NewMessage:
    return NewMessage.validated(content="hello", recipients=phones(count),
                                **fields)  # type: ignore[arg-type]


def test_a_tenant_view_submits_into_its_tenant_and_sees_only_its_own(
        service: DispatchService) -> None:
    acme, globex = service.for_tenant("acme"), service.for_tenant("globex")
    theirs = acme.submit(_message(3)).message_id
    mine = globex.submit(_message(1, tenant="acme")).message_id  # the view's tenant wins
    assert (acme.tenant, service.tenant) == ("acme", None)
    assert service.get(mine).tenant == "globex"
    for call in (lambda: globex.get(theirs), lambda: globex.cancel(theirs),
                 lambda: globex.deliveries(theirs), lambda: globex.dead(theirs),
                 lambda: globex.requeue(theirs), lambda: globex.keep_receipt(theirs, "r"),
                 lambda: globex.edit(theirs, 1, MessageEdit.validated(content="x"))):
        with pytest.raises(NotFoundError, match=f"^no message with id {theirs}$"):
            call()
    assert [m.id for m in globex.message_page().messages] == [mine]
    assert globex.delivery_counts()[DeliveryStatus.PENDING] == 1
    assert service.delivery_counts()[DeliveryStatus.PENDING] == 4
    assert [m.id for m in service.message_page().messages] == [mine, theirs]


def test_closing_a_tenant_view_leaves_the_shared_store_open(service: DispatchService) -> None:
    service.for_tenant("acme").close()
    assert service.submit(_message()).created
    assert service.get(1).tenant == DEFAULT_TENANT


def test_a_key_authenticates_to_its_tenant_until_it_is_revoked(
        service: DispatchService) -> None:
    issued = service.create_api_key("acme")
    assert service.authenticate(issued.token) == "acme"
    key_id, secret = parse_token(issued.token)
    assert key_id == issued.key.key_id and secret not in repr(service.api_keys())
    service.revoke_api_key(key_id)
    with pytest.raises(UnauthorizedError, match=f"^API key {key_id} was revoked$"):
        service.authenticate(issued.token)
    assert service.api_keys()[0].is_revoked


@pytest.mark.parametrize("token", ["", "Bearer x", "smsk_0123456789ab_short",
                                   "smsk_0123456789ab_" + "A" * 43])
def test_a_malformed_or_unknown_token_is_unauthorized_without_repeating_it(
        service: DispatchService, token: str) -> None:
    service.create_api_key("acme")
    with pytest.raises(UnauthorizedError) as caught:
        service.authenticate(token)
    assert token == "" or token not in str(caught.value)


def test_a_known_key_id_with_the_wrong_secret_is_unknown(service: DispatchService) -> None:
    issued = service.create_api_key("acme")
    forged = issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B")
    with pytest.raises(UnauthorizedError, match="^unknown API key$"):
        service.authenticate(forged)


@pytest.mark.parametrize("name", ["", "Acme", "-acme", "a b", "a" * 64, 7, "ä"])
def test_a_tenant_name_outside_the_rule_is_refused(name: object) -> None:
    with pytest.raises(InvalidRequestError, match="tenant must be 1-63 characters"):
        validate_tenant(name)


def test_the_same_phone_written_two_ways_gets_one_delivery() -> None:
    """+1 and ten digits is a North American number: stored as xxx-xxx-xxxx, as ever."""
    assert validate_recipients(["+15550100001", "555-010-0001", "+447700900123",
                                "+447700900123"]) == ("555-010-0001", "+447700900123")


@pytest.mark.parametrize("phone", ["+1555", "+0123456789", "+1234567890123456", "15550100001",
                                   "+1 555 010 0001", "+15550100001\n"])
def test_numbers_in_neither_form_are_refused(phone: str) -> None:
    with pytest.raises(InvalidRequestError, match="must look like xxx-xxx-xxxx or \\+E.164"):
        validate_recipients([phone])


def test_an_idempotency_key_may_be_255_characters() -> None:
    assert IDEMPOTENCY_KEY_MAX_CHARS == 255
    _message(idempotency_key="k" * 255)
    with pytest.raises(InvalidRequestError, match="idempotency key must be 1-255"):
        _message(idempotency_key="k" * 256)
