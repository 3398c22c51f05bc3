"""The OpenAPI 3.1 document: every route's problem answers, and the schemas only routes
that read their own bodies name.

Routes declare the refusals they can give with ``problem_responses(404, 412, ...)``; each
becomes an ``application/problem+json`` response referring to the one ``Problem`` schema,
with the headers that come with it (``WWW-Authenticate`` on 401, ``Retry-After`` on 503).
FastAPI's own 422 schema is never used, since our 422 is a problem document too.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from sms_sim.api.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPES
from sms_sim.api.schemas import NewMessageBody, Problem

__all__ = ["problem_responses", "install_openapi", "DESCRIPTION", "ref", "REQUIRED_HEADERS"]

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
REQUIRED_HEADERS = frozenset({"If-Match"})
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer challenge.", "required": True,
                               "schema": {"type": "string"}}},
    405: {"Allow": {"description": "The methods the resource takes.",
                    "schema": {"type": "string"}}},
    409: {"Retry-After": {"description": "Seconds to wait before repeating a request whose "
                                         "first is still in progress.",
                          "schema": {"type": "string"}}},
    503: {"Retry-After": {"description": "Seconds to wait before retrying.", "required": True,
                          "schema": {"type": "string"}}},
}
_DESCRIPTIONS = {
    400: "Malformed body (not JSON, a broken form, a CSV that is not UTF-8).",
    401: "Missing, malformed, unknown or revoked API key.",
    403: "A valid key of the wrong kind (a provider key on a tenant's route, or the "
         "reverse).",
    404: "No such message for your tenant.",
    409: "Locked (dispatching or finished), or the first request with this "
         "Idempotency-Key is still in progress.",
    412: "If-Match names a version that is no longer current.",
    413: "Body too large.",
    415: "Unsupported Content-Type.",
    422: "A field or parameter was refused; `detail` names it and the value.",
    428: "If-Match is required.",
    500: "A bug; it was logged.",
    503: "The store is busy or unreachable; retry after Retry-After seconds.",
}

DESCRIPTION = """\
Send SMS messages to many recipients, watch them go out, and look after what failed.

**Authentication**: every `/v1` request carries `Authorization: Bearer <API key>`; a key
(`sms_sim apikey create --tenant NAME`) acts for one tenant, and another tenant's messages
do not exist for it. The SMS provider posts delivery receipts to `/v1/provider/receipts`
with a provider key (`sms_sim apikey create --provider`), which may do nothing else.

**SMS**: every message says its `encoding` (GSM-7 or UCS-2) and `segments` (what each
copy is billed and throttled as); `valid_until`/`valid_for` stop a stale message going
out late (what is not sent by then is `expired`); numbers on your opt-out list
(`/v1/opt-outs`) get `suppressed` deliveries, never sent; receipts move sent deliveries
to `delivered`, `undelivered` or `expired`.

**Idempotency**: send `Idempotency-Key` (1-255 characters) with `POST /v1/messages`; a repeat
of the same request gets the first answer again (201, same body, `Idempotent-Replayed:
true`), a different request under the same key 422, and a repeat while the first is still
running 409 with `Retry-After`. Keys are per tenant.

**Pagination**: listings return `data`, `has_more` and `next_after`; pass `?after=` with
that value for the next page. Messages list newest first, deliveries by id.

**Times** are RFC 3339; requests must give an offset (`Z` or `+01:00`), responses are UTC.

**Errors** are RFC 9457 `application/problem+json`. Branch on `type`:
""" + "\n".join(f"- `{kind.uri}` ({kind.status}): {kind.meaning}" for kind in PROBLEM_TYPES)


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route for these problem statuses (and 500, which any route
    can give; and 403 beside 401: a route that takes a key refuses a key of the other
    kind)."""
    found: dict[int | str, dict[str, Any]] = {}
    keyed = {403} if 401 in statuses else set()
    for status in sorted({*statuses, *keyed, 500}):
        response: dict[str, Any] = {"description": _DESCRIPTIONS[status],
                                    "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}}}
        if status in _HEADERS:
            response["headers"] = _HEADERS[status]
        found[status] = response
    return found


def _schemas() -> dict[str, Any]:
    """Components for the models no route declares as its body or response."""
    found: dict[str, Any] = {}
    for model in (Problem, NewMessageBody):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        found.update(schema.pop("$defs", {}))
        found[str(schema.get("title", model.__name__))] = schema
    return found


def _require_headers(document: dict[str, Any]) -> None:
    """Mark ``REQUIRED_HEADERS`` required where an operation takes them: the route reads
    them as optional only to answer their absence with its own status (428, not 422)."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "header" and parameter["name"] in REQUIRED_HEADERS:
                    parameter["required"] = True


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` the document above (built once, on first request)."""
    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version,
                                   description=app.description, routes=app.routes)
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            schemas.update(_schemas())
            _require_headers(document)
            app.openapi_schema = document
        return app.openapi_schema

    setattr(app, "openapi", build)  # noqa: B010  (FastAPI's documented override)
