"""Schemathesis against the app in process: every operation, positive and negative data,
every built-in check (no 5xx, status codes, content types, headers and bodies as the
OpenAPI document says), with a bounded number of examples.

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
from typing import Any

from hypothesis import HealthCheck, settings
import schemathesis
from schemathesis import Case

from sms_sim.api import create_app
from sms_sim.clock import VirtualClock
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.service import DispatchService
from sms_sim.dispatch.stores import MemoryStore
from sms_sim.dispatch.validation import PAST_GRACE_S, TIME_MIN_S
from tests.conftest import phones

CLOCK = VirtualClock(TIME_MIN_S + PAST_GRACE_S)  # year 1 00:00:00 is just not past
SERVICE = DispatchService(MemoryStore(), CLOCK)
APP = create_app("memory:", clock=CLOCK, service=SERVICE)
TOKEN = SERVICE.create_api_key("fuzz").token
PROVIDER_TOKEN = SERVICE.create_api_key("fuzz", provider=True).token  # receipts only
for _ in range(3):  # ids 1-3 exist, so generated ids sometimes name a real message
    SERVICE.for_tenant("fuzz").submit(NewMessage.validated(content="seed",
                                                           recipients=phones(2)))

KEYS = itertools.count()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
# The coverage phase builds boundary cases when tests are collected, among them a list of
# 1,000,001 recipients: minutes on these machines. Examples and fuzzing stay.
schema.config.phases.coverage.enabled = False
# Negative cases add parameters the schema does not name and expect a refusal. Unknown query
# parameters are refused (test_messages), but unknown headers are how HTTP works (proxies,
# tracing), and refusing them would break real clients.
schema.config.generation.allow_extra_parameters = False
# The same examples every run: CI must not pass or fail by the draw.
schema.config.generation.deterministic = True
# 412 is the answer to an If-Match naming another version: it depends on history, as the
# 404 and 409 the check already allows do.
schema.config.checks.positive_data_acceptance.expected_statuses = [
    *schema.config.checks.positive_data_acceptance.expected_statuses, "412"]
# 428 is the answer to a missing If-Match (RFC 6585), as 422 is to other missing headers.
schema.config.checks.missing_required_header.expected_statuses = [
    *schema.config.checks.missing_required_header.expected_statuses, "428"]


@schema.parametrize()
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.data_too_large])
def test_the_api_keeps_its_openapi_promises(case: Case[Any]) -> None:
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
    token = PROVIDER_TOKEN if case.path.startswith("/v1/provider/") else TOKEN
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"})


def _after(later: str, earlier: str) -> bool:
    """Whether RFC 3339 time ``later`` is after ``earlier`` (False if either is no time)."""
    try:
        times = [datetime.datetime.fromisoformat(t.upper().replace(" ", "T").replace(
            "Z", "+00:00")) for t in (later, earlier)]
    except ValueError:
        return False
    return times[0] > times[1]
