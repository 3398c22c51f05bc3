"""Schemathesis against the app in process: every operation, positive and negative data,
every built-in check (no 5xx, status codes, content types, headers and bodies as the
OpenAPI document says), with a bounded number of examples; then sequences of calls that
follow the document's links (the stateful phase), checked the same way.

The app's clock stands at the start of year 1 plus the past-time grace: every ``send_at`` a
generator can write is then within the grace, so a request the schema calls valid is one the
API accepts. The past-time rule is not in the schema (no schema can say "after now") and is
tested in ``test_messages``. Nor can a schema say that ``valid_until`` comes after
``send_at``: a case giving both has its ``valid_until`` dropped when it would not (that
rule is tested in ``test_sms_api``).
"""

from __future__ import annotations

import datetime
import itertools
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
import schemathesis
from schemathesis import Case, GenerationMode
from schemathesis.schemas import BaseSchema

from sms_sim.api import create_app
from sms_sim.clock import VirtualClock
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.service import DispatchService
from sms_sim.dispatch.stores import MemoryStore
from sms_sim.dispatch.validation import PAST_GRACE_S, TIME_MIN_S
from tests.conftest import phones

CLOCK = VirtualClock(TIME_MIN_S + PAST_GRACE_S)  # year 1 00:00:00 is just not past
TOKENS: dict[str, str] = {}  # "tenant" and "provider" (receipts only): the current store's


def _fresh_service() -> DispatchService:
    """An empty store with the fuzzing tenant's keys (in ``TOKENS``) and ids 1-3 taken, so
    generated ids sometimes name a real message."""
    service = DispatchService(MemoryStore(), CLOCK)
    TOKENS["tenant"] = service.create_api_key("fuzz").token
    TOKENS["provider"] = service.create_api_key("fuzz", provider=True).token
    for _ in range(3):
        service.for_tenant("fuzz").submit(NewMessage.validated(content="seed",
                                                               recipients=phones(2)))
    return service


APP = create_app("memory:", clock=CLOCK, service=_fresh_service())

KEYS = itertools.count()
Loaded = TypeVar("Loaded", bound=BaseSchema)


def _configured(loaded: Loaded) -> Loaded:
    """A loaded schema with the settings every fuzzing test here shares."""
    # The coverage phase builds boundary cases when tests are collected, among them a list
    # of 1,000,001 recipients: minutes on these machines. Examples and fuzzing stay.
    loaded.config.phases.coverage.enabled = False
    # Negative cases add parameters the schema does not name and expect a refusal. Unknown
    # query parameters are refused (test_messages), but unknown headers are how HTTP works
    # (proxies, tracing), and refusing them would break real clients.
    loaded.config.generation.allow_extra_parameters = False
    # The same examples every run: CI must not pass or fail by the draw.
    loaded.config.generation.deterministic = True
    checks = loaded.config.checks
    # 412 is the answer to an If-Match naming another version: it depends on history, as
    # the 404 and 409 the check already allows do.
    checks.positive_data_acceptance.expected_statuses = [
        *checks.positive_data_acceptance.expected_statuses, "412"]
    # 428 is the answer to a missing If-Match (RFC 6585), as 422 is to other missing headers.
    checks.missing_required_header.expected_statuses = [
        *checks.missing_required_header.expected_statuses, "428"]
    return loaded


schema = _configured(schemathesis.openapi.from_asgi("/openapi.json", APP))
# The sequences act as the tenant with valid data on every step, so that each step reaches
# what the one before made: refusals of bad data and of a bad or missing key are the single
# calls' checks above, not theirs.
sequences = _configured(schemathesis.openapi.from_asgi("/openapi.json", APP))
sequences.config.checks.ignored_auth.enabled = False
sequences.config.generation.modes = [GenerationMode.POSITIVE]


@schema.parametrize()
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.data_too_large])
def test_the_api_keeps_its_openapi_promises(case: Case[Any]) -> None:
    _prepare(case)
    case.call_and_validate(headers=_auth(case))


def _prepare(case: Case[Any]) -> None:
    """Make a generated case one the API can accept when its data is valid (see above)."""
    key = case.headers.get("Idempotency-Key") if case.headers else None
    if isinstance(key, str) and 1 <= len(key) <= 255:
        # A fresh key per case: the generator's keys repeat ("0") with different bodies,
        # which is a reused key (422), a refusal that depends on history like a 409.
        case.headers["Idempotency-Key"] = f"{next(KEYS)}:{key}"[:255]
    body = case.body
    if isinstance(body, dict):
        send_at, valid_until = body.get("send_at"), body.get("valid_until")
        if isinstance(send_at, str) and isinstance(valid_until, str) \
                and not _after(valid_until, send_at):
            del body["valid_until"]


def _auth(case: Case[Any]) -> dict[str, str]:
    token = TOKENS["provider" if case.path.startswith("/v1/provider/") else "tenant"]
    return {"Authorization": f"Bearer {token}"}


class Workflow(sequences.as_state_machine()):  # type: ignore[misc]
    """Sequences of calls that follow the document's links (submit -> get -> edit with the
    ETag just read -> cancel -> deliveries, and the links schemathesis infers from list
    answers), every answer checked as above. It counts what reached the messages it made,
    so the test can tell the links were walked rather than every call drawing an id."""

    submitted: set[int] = set()
    followed: dict[str, list[int]] = {}  # operation -> statuses, on messages made here

    def setup(self) -> None:
        # Each sequence starts from the same store: what a step can draw (the ids in a
        # listing) then depends on the sequence alone, as Hypothesis requires to replay one.
        APP.state.service = _fresh_service()
        Workflow.submitted = set()

    def before_call(self, case: Case[Any]) -> None:
        _prepare(case)
        # On the case itself: a bearer header the generator drew would win over the call's.
        case.headers.update(_auth(case))

    def after_call(self, response: Any, case: Case[Any]) -> None:
        label = case.operation.label
        if label == "POST /v1/messages" and response.status_code == 201:
            Workflow.submitted.add(response.json()["id"])
        message_id = (case.path_parameters or {}).get("message_id")
        if message_id in Workflow.submitted:
            Workflow.followed.setdefault(label, []).append(response.status_code)


def test_call_sequences_along_the_links_keep_the_openapi_promises() -> None:
    Workflow.run(settings=settings(
        max_examples=30, stateful_step_count=6, deadline=None, database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                               HealthCheck.data_too_large]))
    # Messages the sequences created were then reached, by the ids their own answers gave:
    # the sequences are not single calls that each drew an id of their own. (Which link a
    # sequence takes is the draw's; every link is followed step by step in test_operations.)
    followed = Workflow.followed
    assert any(200 in statuses for statuses in followed.values()), followed


def _after(later: str, earlier: str) -> bool:
    """Whether RFC 3339 time ``later`` is after ``earlier`` (False if either is no time)."""
    try:
        times = [datetime.datetime.fromisoformat(t.upper().replace(" ", "T").replace(
            "Z", "+00:00")) for t in (later, earlier)]
    except ValueError:
        return False
    return times[0] > times[1]
