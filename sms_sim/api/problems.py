"""Every error answer as RFC 9457 problem details (``application/problem+json``).

One table maps each refusal to a stable problem type, so a client branches on ``type``
(never on ``detail``, which is for people): the service's typed errors, the HTTP-level
refusals the routes raise as ``ProblemError``, FastAPI's own request validation and
Starlette's 404/405. A type is the relative URI ``/problems/<slug>``: it resolves against
the API's own address, where ``GET /problems/<slug>`` describes it, so it needs no
domain of ours. ``detail`` is one line naming the field and the value; no answer ever
carries a stack trace. An exception nobody expected is a bug: it is logged with its
traceback and answered 500 ``internal-error``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match

from sms_sim.api.dashboard import page_error, wants_page
from sms_sim.dispatch.errors import (
    ConflictError,
    KeyReusedError,
    LockedError,
    NotFoundError,
    StillSubmittingError,
    StoreBusyError,
    StoreDamagedError,
    StoreError,
)
from sms_sim.dispatch.keys import ForbiddenError, UnauthorizedError
from sms_sim.errors import SmsSimError

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "ProblemType",
    "ProblemError",
    "PROBLEM_TYPES",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "NOT_FOUND",
    "METHOD_NOT_ALLOWED",
    "MALFORMED",
    "INVALID",
    "KEY_REUSED",
    "IN_PROGRESS",
    "LOCKED",
    "CONFLICT",
    "PRECONDITION_FAILED",
    "PRECONDITION_REQUIRED",
    "TOO_LARGE",
    "UNSUPPORTED_MEDIA_TYPE",
    "STORE_UNAVAILABLE",
    "INTERNAL",
    "BEARER_CHALLENGE",
    "STORE_RETRY_AFTER_S",
    "BUSY_RETRY_AFTER_S",
    "one_line",
    "json_body",
    "problem_response",
    "validation_problem",
    "install_problem_handlers",
]

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
BEARER_CHALLENGE = 'Bearer realm="sms_sim"'
BUSY_RETRY_AFTER_S = 1  # the store's write lock was held: it is usually free again at once
STORE_RETRY_AFTER_S = 5  # the store failed or cannot be reached
_DETAIL_MAX_CHARS = 500
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProblemType:
    """One kind of refusal: its stable ``slug`` (the type URI is ``/problems/<slug>``), the
    HTTP status it is always answered with, a fixed title, and what it means (served at the
    type URI and in the OpenAPI description)."""

    slug: str
    status: int
    title: str
    meaning: str

    @property
    def uri(self) -> str:
        """``/problems/<slug>``; RFC 9457's ``about:blank`` for a bare HTTP status."""
        return f"/problems/{self.slug}" if self.slug else "about:blank"


UNAUTHORIZED = ProblemType(
    slug="unauthorized", status=401, title="Missing or invalid API key",
    meaning="Send Authorization: Bearer <API key>; the key may be malformed, unknown or "
            "revoked. Keys come from `sms_sim apikey create --tenant NAME`.")
FORBIDDEN = ProblemType(
    slug="forbidden", status=403, title="Wrong kind of API key",
    meaning="The key is valid but its role does not allow this: a provider key "
            "(`apikey create --provider`) may only post delivery receipts, and a tenant's "
            "key may not.")
NOT_FOUND = ProblemType(
    slug="not-found", status=404, title="Not found",
    meaning="No such resource for your tenant: another tenant's message is not found either.")
METHOD_NOT_ALLOWED = ProblemType(
    slug="method-not-allowed", status=405, title="Method not allowed",
    meaning="The resource exists but does not take this method; the Allow header lists "
            "those it takes.")
MALFORMED = ProblemType(
    slug="malformed-request", status=400, title="Malformed request",
    meaning="The body could not be parsed at all: not JSON, a broken multipart form, a "
            "CSV that is not UTF-8, or a body cut short (the client closed the connection).")
INVALID = ProblemType(
    slug="invalid-request", status=422, title="Invalid request",
    meaning="A field or parameter was refused; detail names it and the value. Nothing was "
            "read or changed.")
KEY_REUSED = ProblemType(
    slug="idempotency-key-reused", status=422, title="Idempotency key reused",
    meaning="This Idempotency-Key was used for a different request (content, recipients, "
            "send_at, priority or validity). Use a new key for a new message.")
IN_PROGRESS = ProblemType(
    slug="request-in-progress", status=409, title="Request still in progress",
    meaning="The first request with this Idempotency-Key has not finished yet; send the "
            "same request again after Retry-After seconds to get its answer.")
LOCKED = ProblemType(
    slug="locked", status=409, title="Message is locked",
    meaning="The message is past the state the operation needs: it is dispatching or "
            "finished (cancel it instead of editing it), or already cancelled.")
CONFLICT = ProblemType(
    slug="conflict", status=409, title="Conflict",
    meaning="The request contradicts what is stored.")
PRECONDITION_FAILED = ProblemType(
    slug="precondition-failed", status=412, title="Version mismatch",
    meaning="If-Match named a version that is no longer current: someone changed the "
            "message since you read it. GET it again and retry with its ETag.")
PRECONDITION_REQUIRED = ProblemType(
    slug="precondition-required", status=428, title="If-Match required",
    meaning="Changing a message needs If-Match with the ETag of the version you read, so "
            "two editors cannot overwrite each other unknowingly.")
TOO_LARGE = ProblemType(
    slug="content-too-large", status=413, title="Request body too large",
    meaning="The body is larger than this API takes; a message has at most 1,000,000 "
            "recipients.")
UNSUPPORTED_MEDIA_TYPE = ProblemType(
    slug="unsupported-media-type", status=415, title="Unsupported media type",
    meaning="The Content-Type is not one this operation takes.")
STORE_UNAVAILABLE = ProblemType(
    slug="store-unavailable", status=503, title="Store unavailable",
    meaning="The message store is busy, unreachable or not writable. Nothing was changed "
            "unless detail says so; retry after Retry-After seconds.")
INTERNAL = ProblemType(
    slug="internal-error", status=500, title="Internal error",
    meaning="A bug: the server logged it. Nothing in the request is at fault.")

PROBLEM_TYPES: tuple[ProblemType, ...] = (
    UNAUTHORIZED, FORBIDDEN, NOT_FOUND, METHOD_NOT_ALLOWED, MALFORMED, INVALID, KEY_REUSED,
    IN_PROGRESS, LOCKED, CONFLICT, PRECONDITION_FAILED, PRECONDITION_REQUIRED, TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE, STORE_UNAVAILABLE, INTERNAL,
)
_BY_STATUS = {kind.status: kind for kind in PROBLEM_TYPES if kind.status not in (409, 422)}


class ProblemError(Exception):
    """A refusal decided at the HTTP edge (a missing If-Match, an unsupported body type):
    raised by a route, answered as ``kind`` with ``detail`` and any extra ``headers``."""

    def __init__(self, kind: ProblemType, detail: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(kind, detail, headers)
        self.kind = kind
        self.detail = detail
        self.headers = dict(headers or {})


def json_body(request: Request) -> None:
    """A dependency of the routes whose body is a JSON object: another Content-Type, or
    none with a body, is 415, as for a submit, rather than a 422 that quoted the body back
    (no body and no Content-Type: 422 "body is required"). Declared after the route's
    authentication, so a request without a key is 401 first."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not media:
        if request.headers.get("content-length", "0").strip() in ("", "0") and \
                "transfer-encoding" not in request.headers:
            return
        raise ProblemError(UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json "
                                                   "(got none)")
    if media != "application/json" and not (media.startswith("application/")
                                            and media.endswith("+json")):
        raise ProblemError(UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json "
                                                   f"(got {media!r})")


def one_line(text: str) -> str:
    """``text`` as one line of bounded length: a detail is read in logs and terminals."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _DETAIL_MAX_CHARS else flat[:_DETAIL_MAX_CHARS - 3] + "..."


def problem_response(request: Request, kind: ProblemType, detail: str, *,
                     headers: Mapping[str, str] | None = None,
                     errors: Sequence[Mapping[str, str]] | None = None) -> Response:
    """The problem document for ``kind``; ``instance`` is the request's path."""
    body: dict[str, Any] = {"type": kind.uri, "title": kind.title, "status": kind.status,
                            "detail": one_line(detail), "instance": request.url.path}
    if errors:
        body["errors"] = list(errors)
    # nosniff: the detail and instance quote what the client sent, which must stay text.
    return JSONResponse(body, status_code=kind.status,
                        headers={"X-Content-Type-Options": "nosniff", **(headers or {})},
                        media_type=PROBLEM_MEDIA_TYPE)


def _for_service_error(exc: SmsSimError) -> tuple[ProblemType, dict[str, str]]:
    """The problem type (and headers) of a service refusal. Subclasses come before their
    bases: a reused key is a ``ConflictError`` too, but a 422."""
    if isinstance(exc, ForbiddenError):
        return FORBIDDEN, {}
    if isinstance(exc, UnauthorizedError):
        return UNAUTHORIZED, {"WWW-Authenticate": f'{BEARER_CHALLENGE}, error="invalid_token"'}
    if isinstance(exc, NotFoundError):
        return NOT_FOUND, {}
    if isinstance(exc, KeyReusedError):
        return KEY_REUSED, {}
    if isinstance(exc, StillSubmittingError):
        return IN_PROGRESS, {"Retry-After": str(BUSY_RETRY_AFTER_S)}
    if isinstance(exc, LockedError):
        return LOCKED, {}
    if isinstance(exc, ConflictError):
        return CONFLICT, {}
    if isinstance(exc, StoreBusyError):
        return STORE_UNAVAILABLE, {"Retry-After": str(BUSY_RETRY_AFTER_S)}
    if isinstance(exc, StoreError):
        return STORE_UNAVAILABLE, {"Retry-After": str(STORE_RETRY_AFTER_S)}
    if isinstance(exc, ValueError):  # InvalidRequestError, ConfigError, InvalidMessageError
        return INVALID, {}
    return INTERNAL, {}


async def _on_service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SmsSimError)
    kind, headers = _for_service_error(exc)
    if kind is INTERNAL:
        log.error("unexpected refusal on %s %s", request.method, request.url.path,
                  exc_info=exc)
        return problem_response(request, INTERNAL, "an unexpected error; it was logged")
    if kind is not STORE_UNAVAILABLE:
        return problem_response(request, kind, str(exc), headers=headers)
    # The store's own words name its file or server: the log has them, a client gets why
    # in general.
    if isinstance(exc, StoreDamagedError):
        log.error("store damaged: %s", exc)
    else:
        log.warning("store unavailable on %s %s: %s", request.method, request.url.path, exc)
    return problem_response(request, kind, _store_detail(exc), headers=headers)


def _store_detail(exc: SmsSimError) -> str:
    if isinstance(exc, StoreBusyError):
        return ("the store is busy: another writer held it longer than this server waits; "
                "nothing was changed")
    if isinstance(exc, StoreDamagedError):
        return "the store is damaged; its operator must check it (the server log says more)"
    return "the store cannot be used now (the server log says why)"


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(request, exc.kind, exc.detail, headers=exc.headers)


def _field(location: Sequence[int | str]) -> str:
    """``('query', 'limit')`` -> "query parameter limit"; ``('body', 'recipients', 3)`` ->
    "recipients[3]"; a JSON decode position is left out."""
    if not location:
        return "request"
    where, *path = location
    if where == "body":
        name = ""
        for part in path:
            name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else part)
        return name or "body"
    kind = {"query": "query parameter", "path": "path parameter", "header": "header",
            "cookie": "cookie"}.get(str(where), str(where))
    return f"{kind} {'.'.join(str(p) for p in path)}".strip()


def _value(error: Mapping[str, Any]) -> str:
    shown = repr(error.get("input"))
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _validation_line(error: Mapping[str, Any]) -> str:
    field = _field(error.get("loc", ()))
    if error.get("type") == "missing":
        return f"{field} is required"
    if error.get("type") == "extra_forbidden":
        return f"{field} is not a field of this request"
    message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
    if field == "body" and error.get("type") == "value_error":
        return message  # a check of the whole body, which says what it wants
    return f"{field}: {message[:1].lower() + message[1:]} (got {_value(error)})"


def validation_problem(request: Request, errors: Sequence[Mapping[str, Any]]) -> Response:
    """A 422 naming the first refused field and value in ``detail`` and every one in
    ``errors``; a body that is not JSON at all is a 400."""
    lines = [_validation_line(error) for error in errors] or ["the request is invalid"]
    if any(error.get("type") == "json_invalid" for error in errors):
        reason = next(str(e.get("ctx", {}).get("error", "")) for e in errors
                      if e.get("type") == "json_invalid")
        return problem_response(request, MALFORMED, f"the body is not valid JSON: {reason}")
    listed = [{"field": _field(error.get("loc", ())), "detail": one_line(line)}
              for error, line in zip(errors, lines, strict=True)]
    more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
    return problem_response(request, INVALID, lines[0] + more, errors=listed)


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return validation_problem(request, exc.errors())


async def _on_http(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals: no route (404), wrong method (405, with Allow), a body
    over the limit (413), an unparseable form (400)."""
    assert isinstance(exc, StarletteHTTPException)
    kind = _BY_STATUS.get(exc.status_code)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # Starlette names the first route's methods only
        headers["Allow"] = _allowed(request)
    if kind is None:  # no status of ours: RFC 9457's about:blank, titled by the status
        kind = ProblemType(slug="", status=exc.status_code,
                           title=HTTPStatus(exc.status_code).phrase, meaning="")
    if exc.status_code == 404:
        detail = f"no resource at {request.url.path}{_without_slash(request)}"
    elif exc.status_code == 405:
        detail = (f"{request.method} is not allowed on {request.url.path} (allowed: "
                  f"{headers['Allow']})")
    else:
        detail = str(exc.detail)
    if wants_page(request):  # a browser on a mistyped dashboard address
        return page_error(kind.title.lower(), one_line(detail), kind.status, headers)
    return problem_response(request, kind, detail, headers=headers)


def _without_slash(request: Request) -> str:
    """`` (did you mean /v1/messages?)`` when the path is a route's with a trailing slash
    (the app does not redirect: see ``create_app``), else nothing."""
    path = request.url.path
    if len(path) < 2 or not path.endswith("/"):
        return ""
    scope = {**request.scope, "path": path.rstrip("/") or "/"}
    if any(route.matches(scope)[0] is not Match.NONE for route in request.app.router.routes):
        return f" (did you mean {scope['path']}?)"
    return ""


def _allowed(request: Request) -> str:
    """Every method some route takes at the request's path (asked of the router, method by
    method, since included routers hide their routes' methods)."""
    routes = request.app.router.routes
    return ", ".join(method for method in _METHODS if any(
        route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes))


async def _on_disconnect(request: Request, exc: Exception) -> Response:
    """A client gone before its body ended: no one reads the answer, and it is no error of
    ours (a 500 and a traceback in the log would page someone for a dropped connection)."""
    log.info("%s %s: the client closed the connection before its body ended",
             request.method, request.url.path)
    return problem_response(request, MALFORMED, "the body was cut short: the client closed "
                                                "the connection before sending all of it")


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(request, INTERNAL, "an unexpected error; it was logged")


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as a problem document."""
    app.add_exception_handler(SmsSimError, _on_service_error)
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(ClientDisconnect, _on_disconnect)
    app.add_exception_handler(Exception, _on_unexpected)
