"""``/v1/messages``: submit, list, show, edit, cancel, and a message's deliveries.

Each route parses, calls ``DispatchService`` as the caller's tenant, and maps the result:
the service's typed errors become problem documents in ``problems``. Routes that only call
the service are plain functions (FastAPI runs them in its thread pool, since the store
blocks); submit reads its own body, so it is async and hands the blocking part to the pool.

A thread-pool trip costs more than most of what a small submit does (a hand-off to another
thread and back, on machines where the client may share the cores), so a small JSON submit
makes one: the key's lookup, the parse, the store's transaction and the answer together
(issue 12's benchmark). Anything larger looks the key up first, in a trip of its own, so a
caller without a valid key never makes the server read more than a small body. For the
same benchmark the submit's route reads its few parameters itself (``_SubmitRoute``) and
answers from the store's copy of the new message (``SubmitResult.view``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.routing import APIRoute
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from sms_sim.api.auth import (
    BearerToken,
    TenantService,
    app_clock,
    bearer_from_header,
    operator_service,
    query_names,
    refuse_unknown_query,
    tenant_view,
)
from sms_sim.api.idempotency import Answer, key_from_header, submit_once
from sms_sim.api.openapi import problem_responses, ref
from sms_sim.api.problems import (
    PRECONDITION_FAILED,
    PRECONDITION_REQUIRED,
    UNSUPPORTED_MEDIA_TYPE,
    ProblemError,
    json_body,
)
from sms_sim.api.schemas import (
    CONTENT_PATTERN,
    DIGITS,
    JSON_INT_MAX,
    PAGE_MAX,
    PHONE_PATTERN,
    CancelOut,
    DeliveryListOut,
    MessageEditBody,
    MessageListOut,
    MessageOut,
    SubmittedMessageOut,
)
from sms_sim.api.submission import (
    VALID_FOR_FORM_PATTERN,
    Submission,
    read_body,
    read_form,
    shape_error,
    submission_from_form,
    submission_from_json,
)
from sms_sim.api.times import RFC3339_PATTERN, parse_send_at
from sms_sim.api.views import delivery_out, etag, message_out
from sms_sim.clock import Clock
from sms_sim.dispatch.contract import DeliveryStatus, MessageStatus
from sms_sim.dispatch.errors import ConflictError
from sms_sim.dispatch.requests import MessageEdit
from sms_sim.dispatch.service import DispatchService
from sms_sim.dispatch.validation import (
    IDEMPOTENCY_KEY_MAX_CHARS,
    RECIPIENTS_MAX,
    validate_phone,
)

__all__ = ["router", "MessageId", "Limit"]

router = APIRouter(prefix="/v1/messages", tags=["messages"])

MessageId = Annotated[int, Path(ge=1, le=JSON_INT_MAX, description="The message's id."),
                      DIGITS]
Limit = Annotated[int, Query(ge=1, le=PAGE_MAX, description="Items per page."), DIGITS]
# A body up to this size is parsed and checked on the event loop (tens of microseconds);
# a larger one (up to a million numbers: a second) in the thread pool, so it never stalls
# the other requests.
_PARSE_INLINE_MAX_BYTES = 16 * 1024
_ETAG_RE = re.compile(r'(W/)?"([0-9]{1,19})"|([0-9]{1,19})')
_CSV_PATTERN = rf"^({PHONE_PATTERN[1:-1]})(\r?\n({PHONE_PATTERN[1:-1]}))*\r?\n?$"
_ETAG_HEADER = {"ETag": {"description": "The message's version, for If-Match.",
                         "required": True, "schema": {"type": "string"}}}


def _links(id_at: str, *, with_etag: bool = False, with_cancel: bool = True) -> dict[str, Any]:
    """OpenAPI links from an answer that names a message (its id at JSON pointer ``id_at``)
    to what a client does next: watch it, list its deliveries, cancel it, and (when the
    answer carries the ETag) change it. Clients generated from the document and stateful
    fuzzers (tests/api/test_schema_fuzz.py) follow them."""
    by_id = {"message_id": f"$response.body#{id_at}"}
    links: dict[str, Any] = {
        "GetMessage": {"operationId": "getMessage", "parameters": by_id,
                       "description": "The message and its progress."},
        "ListDeliveries": {"operationId": "listDeliveries", "parameters": by_id,
                           "description": "Its deliveries, recipient by recipient."},
    }
    if with_cancel:
        links["CancelMessage"] = {"operationId": "cancelMessage", "parameters": by_id,
                                  "description": "Stop it."}
    if with_etag:
        links["EditMessage"] = {
            "operationId": "editMessage",
            "parameters": {**by_id, "header.If-Match": "$response.header.ETag"},
            "description": "Change it while it is scheduled, at the version just read."}
    return links


_SUBMIT_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": ref("NewMessage")},
    "multipart/form-data": {
        "schema": {
            "type": "object", "required": ["content", "recipients"],
            "additionalProperties": False,
            "not": {"required": ["valid_until", "valid_for"]},
            "properties": {
                "content": {"type": "string", "minLength": 1, "maxLength": 1600,
                            "pattern": CONTENT_PATTERN},
                "recipients": {
                    "type": "string", "contentMediaType": "text/csv", "pattern": _CSV_PATTERN,
                    "description": "A CSV file: one number per row in the first cell (other "
                                   "cells ignored), blank rows and rows starting with # "
                                   "skipped, an optional header row (a first cell without "
                                   f"digits). At most {RECIPIENTS_MAX:,} numbers."},
                "send_at": {"type": "string", "format": "date-time",
                            "pattern": RFC3339_PATTERN},
                "priority": {"type": "string", "pattern": r"^-?[0-9]{1,15}$"},
                "valid_until": {"type": "string", "format": "date-time",
                                "pattern": RFC3339_PATTERN},
                "valid_for": {"type": "string", "pattern": VALID_FOR_FORM_PATTERN,
                              "description": "Seconds after send_at, more than 0 and at "
                                             "most 9,999,999 in a form."},
            }},
        "encoding": {"recipients": {"contentType": "text/csv"}}},
}}}
_JSON_TYPES = ("application/json",)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


class _SubmitRoute(APIRoute):
    """``submit_message``'s route, which reads its own parameters instead of having FastAPI
    solve them for every request.

    FastAPI's request handler (telemetry hooks, a body check, the dependency tree: the
    app's ``known_query``, ``BEARER`` and ``bearer_token``, the header) cost a submit
    0.06-0.1 ms of CPU time, about 5% of the server's per request in issue 12's benchmark,
    where the bare endpoint's tree is one body parameter. Here the same checks run in the
    same order, by hand: the bearer token as ``BEARER`` reads it (401 before anything
    else), the query (none is taken), ``Idempotency-Key``.
    The declaration stays what it was, so the OpenAPI document is built from it as before;
    ``tests/api/test_submit_path.py`` checks the two agree.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        known = query_names(self.dependant)

        async def handle(request: Request) -> Response:
            token = bearer_from_header(request.headers.get("authorization"))
            refuse_unknown_query(request, known)
            return await submit_message(request, token,
                                        request.headers.get("idempotency-key"))

        return handle


async def submit_message(
    request: Request,
    token: BearerToken,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", description="Makes retries safe: a repeat of the same "
        "request gets the first answer (per tenant; a quoted value is the same key).",
        json_schema_extra={"minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX_CHARS,
                           "pattern": "^[ -~]+$"})] = None,  # printable ASCII: key_from_header
) -> Response:
    """Queue a message for its recipients, now or at ``send_at``, valid until
    ``valid_until`` (or for ``valid_for`` seconds after it): what is not sent by then
    expires, never sent late.

    The body is JSON (`NewMessage`), or a multipart form whose `recipients` is a CSV file:
    `curl -F content=Hello -F recipients=@staff.csv;type=text/csv`. The answer says how
    many recipients were repeats (`duplicates_dropped`); the same phone written as
    xxx-xxx-xxxx and +1xxxxxxxxxx is one recipient. Recipients on your opt-out list get a
    `suppressed` delivery, never sent (`suppressed` counts them); `encoding` and
    `segments` say what each copy costs.
    """
    operator = operator_service(request)
    clock = app_clock(request)
    key = key_from_header(idempotency_key)
    media = _media_type(request)
    is_json = media in _JSON_TYPES or media.endswith("+json")
    answer: Answer
    if is_json and _declared_small(request):
        raw = await read_body(request)  # Content-Length bounds it, so a key is not needed yet
        answer = await run_in_threadpool(_submit_small_json, operator, token, raw, key, clock)
    else:
        service = await run_in_threadpool(tenant_view, operator, token)
        submission = await _submission(request, media, service, key, clock)
        answer = await run_in_threadpool(submit_once, service, submission, clock)
    headers = {"Location": f"{request.scope.get('root_path', '')}/v1/messages/"
                           f"{answer.message_id}"}
    if answer.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(answer.body, status_code=201, headers=headers,
                    media_type="application/json")


router.add_api_route(
    "", submit_message, methods=["POST"], status_code=201, response_model=SubmittedMessageOut,
    openapi_extra=_SUBMIT_BODY, summary="Send a message", operation_id="submitMessage",
    route_class_override=_SubmitRoute,
    responses={**problem_responses(400, 401, 409, 413, 415, 422, 503),
               201: {"links": _links("/id"), "headers": {
                   "Location": {"description": "The new message.", "required": True,
                                "schema": {"type": "string"}},
                   "Idempotent-Replayed": {"description": "true when this answer is the "
                                                          "first request's, replayed.",
                                           "schema": {"type": "string"}}}}},
)


def _declared_small(request: Request) -> bool:
    """Whether the body's Content-Length is given and at most ``_PARSE_INLINE_MAX_BYTES``
    (the server reads no more than a declared length)."""
    declared = request.headers.get("content-length", "")
    return declared.isdigit() and int(declared) <= _PARSE_INLINE_MAX_BYTES


def _submit_small_json(operator: DispatchService, token: str, raw: bytes, key: str | None,
                       clock: Clock) -> Answer:
    """Check the key, parse, submit and answer, in this order (blocking; one pool trip).
    The order keeps every route's: a bad key is 401 whatever the body; a malformed body is
    FastAPI's 422 (or 400), before the store is written."""
    service = tenant_view(operator, token)
    tenant = service.tenant
    assert tenant is not None  # a tenant's view, from the bearer key
    try:
        submission = submission_from_json(raw, tenant=tenant, idempotency_key=key,
                                          now=clock.now())
    except ValidationError as exc:
        raise RequestValidationError(shape_error(exc)) from None
    return submit_once(service, submission, clock)


async def _submission(request: Request, media: str, service: DispatchService,
                      key: str | None, clock: Clock) -> Submission:
    """A submit's body, any size, checked for the tenant of ``service``; a malformed one
    raises as FastAPI's own validation does (422, or 400 for a body that is not JSON)."""
    tenant = service.tenant
    assert tenant is not None  # a tenant's view, from the bearer key
    submission: Submission
    if media in _JSON_TYPES or media.endswith("+json"):
        raw = await read_body(request)
        try:
            if len(raw) <= _PARSE_INLINE_MAX_BYTES:  # microseconds: no thread pool trip
                submission = submission_from_json(raw, tenant=tenant, idempotency_key=key,
                                                  now=clock.now())
            else:
                submission = await run_in_threadpool(
                    submission_from_json, raw, tenant=tenant, idempotency_key=key,
                    now=clock.now())
        except ValidationError as exc:
            raise RequestValidationError(shape_error(exc)) from None
    elif media == "multipart/form-data":
        fields = await read_form(request)
        try:
            submission = await run_in_threadpool(
                submission_from_form, fields, tenant=tenant, idempotency_key=key,
                now=clock.now())
        finally:
            for value in fields.values():
                if not isinstance(value, str):
                    await value.close()
    else:
        raise ProblemError(UNSUPPORTED_MEDIA_TYPE, f"Content-Type must be application/json or "
                                                   f"multipart/form-data (got {media or 'none'!r})")
    return submission


@router.get("", response_model=MessageListOut, summary="List messages, newest first",
            operation_id="listMessages", responses=problem_responses(401, 422, 503))
def list_messages(
    service: TenantService,
    status: Annotated[MessageStatus | None, Query(description="Only this status.")] = None,
    limit: Limit = 100,
    after: Annotated[int | None, Query(
        ge=1, le=JSON_INT_MAX,
        description="next_after of the previous page: only older messages."), DIGITS] = None,
) -> MessageListOut:
    page = service.message_page(status=status, limit=limit, before=after)
    return MessageListOut(data=[message_out(view, service.progress(view))
                                for view in page.messages],
                          has_more=page.more > 0, next_after=page.next_before)


@router.get("/{message_id}", response_model=MessageOut, summary="Show a message and its "
            "progress", operation_id="getMessage",
            responses={**problem_responses(401, 404, 422, 503),
                       200: {"headers": _ETAG_HEADER, "links": _links("/id", with_etag=True)}})
def get_message(message_id: MessageId, service: TenantService, response: Response) -> MessageOut:
    """The message with its deliveries counted by status and its progress (share sent,
    rate, ETA). `ETag` is its version, for `If-Match` on PATCH; it does not change as
    deliveries go out, so this answer is never 304."""
    view = service.get(message_id)
    response.headers["ETag"] = etag(view)
    return message_out(view, service.progress(view))


@router.patch(
    "/{message_id}", response_model=MessageOut, summary="Change a scheduled message",
    operation_id="editMessage",
    responses={**problem_responses(400, 401, 404, 409, 412, 415, 422, 428, 503),
               200: {"headers": _ETAG_HEADER, "links": _links("/id", with_etag=True)}})
def edit_message(
    request: Request,
    message_id: MessageId,
    changes: MessageEditBody,
    service: TenantService,
    _json: Annotated[None, Depends(json_body)],
    response: Response,
    if_match: Annotated[str | None, Header(
        alias="If-Match", description='The ETag you last read, e.g. "3" (or *).')] = None,
) -> MessageOut:
    """Change the content, the time, the recipients or the validity of a message that has
    not started dispatching. `If-Match` is required (428 without it) and must be the current version
    (412 otherwise); a message already dispatching is 409 `locked`: cancel it instead."""
    now = app_clock(request).now()
    edit = MessageEdit.validated(
        content=changes.content, recipients=changes.recipients,
        scheduled_at=None if changes.send_at is None else parse_send_at(changes.send_at, now),
        valid_until=None if changes.valid_until is None else parse_send_at(
            changes.valid_until, now, field="valid_until"),
        valid_for_s=changes.valid_for)
    if if_match is None:
        service.get(message_id)  # an unknown id is 404 first: nothing to precondition
        raise ProblemError(PRECONDITION_REQUIRED, 'changing a message needs If-Match: "<version>"'
                                                  " (its ETag, from GET)")
    version = _expected_version(service, message_id, if_match)
    try:
        view = service.edit(message_id, version, edit)
    except ConflictError as exc:
        if type(exc) is not ConflictError:
            raise
        raise ProblemError(PRECONDITION_FAILED, str(exc)) from None
    response.headers["ETag"] = etag(view)
    return message_out(view, service.progress(view))


def _expected_version(service: DispatchService, message_id: int, if_match: str) -> int:
    """The version an ``If-Match`` asks for: one strong tag, ``*`` (whatever is current),
    or a list (whichever of them is current). A weak or malformed tag matches nothing."""
    tags = [tag.strip() for tag in if_match.split(",") if tag.strip()]
    versions = []
    for tag in tags:
        if tag == "*":
            return service.get(message_id).version
        found = _ETAG_RE.fullmatch(tag)
        if found is None or found.group(1):
            raise ProblemError(PRECONDITION_FAILED, f'If-Match must be a strong ETag such as '
                                                    f'"3" (got {if_match!r})')
        versions.append(int(found.group(2) or found.group(3)))
    if len(versions) == 1 and versions[0] >= 1:  # "0" names no version: 412 below
        return versions[0]
    current = service.get(message_id).version
    if current not in versions:
        raise ProblemError(PRECONDITION_FAILED, f"message {message_id} is at version "
                                                f"{current}, not one of {versions}")
    return current


@router.post("/{message_id}/cancel", response_model=CancelOut, summary="Cancel a message",
             operation_id="cancelMessage",
             responses={**problem_responses(401, 404, 409, 422, 503),
                        200: {"links": _links("/message_id", with_cancel=False)}})
def cancel_message(message_id: MessageId, service: TenantService) -> CancelOut:
    """Stop a scheduled or dispatching message: deliveries not yet handed to a worker are
    cancelled, sent ones stay sent, and the `in_flight` ones finish the attempt they
    started without a retry. A completed or cancelled message is 409 `locked`."""
    result = service.cancel(message_id)
    view = service.get(message_id)
    return CancelOut(message_id=result.message_id, was_status=result.was_status,
                     cancelled=result.cancelled, already_sent=result.already_sent,
                     in_flight=result.in_flight, message=message_out(view, service.progress(view)))


@router.get("/{message_id}/deliveries", response_model=DeliveryListOut,
            summary="List a message's deliveries", operation_id="listDeliveries",
            responses=problem_responses(401, 404, 422, 503))
def list_deliveries(
    message_id: MessageId,
    service: TenantService,
    status: Annotated[DeliveryStatus | None, Query(description="Only this status.")] = None,
    recipient: Annotated[str | None, Query(
        description="Only the delivery to this number (either form).",
        json_schema_extra={"pattern": PHONE_PATTERN})] = None,
    limit: Limit = 100,
    after: Annotated[int | None, Query(
        ge=0, le=JSON_INT_MAX, description="next_after of the previous page."), DIGITS] = None,
) -> DeliveryListOut:
    """Per recipient: status, attempts, last error and sent time, in recipient order."""
    number = None if recipient is None else validate_phone(recipient, 1, where="recipient")
    found = service.deliveries(message_id, status=status, limit=limit + 1, recipient=number,
                               after=after)
    page = found[:limit]
    more = len(found) > limit
    return DeliveryListOut(data=[delivery_out(d) for d in page], has_more=more,
                           next_after=page[-1].id if more else None)
