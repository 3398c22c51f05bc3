"""``/v1/opt-outs``: your suppression list, the numbers never to send to again.

A number on the list gets a ``suppressed`` delivery in every later message (counted in the
submit's answer), and adding one suppresses at once your deliveries to it that no worker
holds yet. Numbers are accepted as recipients are (xxx-xxx-xxxx or E.164) and listed in
their stored form, so ``DELETE /v1/opt-outs/+15550100001`` and ``.../555-010-0001`` name
one entry. ``POST`` takes JSON (``{"phones": [...]}``) or a CSV file (``text/csv``, the
first column; a header row and ``#`` rows skipped): a carrier's STOP export imports as it is.
"""

from __future__ import annotations

import codecs
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from sms_sim.api.auth import TenantService
from sms_sim.api.openapi import problem_responses, ref
from sms_sim.api.problems import MALFORMED, UNSUPPORTED_MEDIA_TYPE, ProblemError, validation_problem
from sms_sim.api.list_schemas import OptOutListOut, OptOutOut, OptOutsAddedOut, OptOutsBody
from sms_sim.api.schemas import DIGITS, PAGE_MAX, PHONE_PATTERN
from sms_sim.api.submission import read_body, shape_error
from sms_sim.api.times import rfc3339
from sms_sim.dispatch.errors import NotFoundError
from sms_sim.dispatch.optouts import validate_opt_out_phones
from sms_sim.dispatch.service import DispatchService
from sms_sim.dispatch.validation import first_column_numbers, validate_phone

__all__ = ["router"]

router = APIRouter(prefix="/v1/opt-outs", tags=["opt-outs"])

_PHONE = Annotated[str, Path(description="The number, xxx-xxx-xxxx or E.164.",
                             json_schema_extra={"pattern": PHONE_PATTERN})]
_CSV_LINE = PHONE_PATTERN[1:-1]
_ADD_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": ref("OptOuts")},
    "text/csv": {"schema": {
        "type": "string", "pattern": rf"^({_CSV_LINE})(\r?\n({_CSV_LINE}))*\r?\n?$",
        "description": "One number per row in the first cell; blank rows and rows starting "
                       "with # skipped; an optional header row (a first cell without "
                       "digits)."}},
}}}


@router.get("", response_model=OptOutListOut, summary="List your opt-outs",
            operation_id="listOptOuts", responses=problem_responses(401, 422, 503))
def list_opt_outs(
    service: TenantService,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX, description="Items per page."),
                     DIGITS] = 100,
    after: Annotated[str | None, Query(
        pattern=PHONE_PATTERN, description="next_after of the previous page.")] = None,
) -> OptOutListOut:
    """Your listed numbers in number order, with when each was added."""
    found = service.opt_outs(after=after, limit=limit + 1)
    page = found[:limit]
    more = len(found) > limit
    return OptOutListOut(
        data=[OptOutOut(phone=o.phone, created_at=rfc3339(o.created_at)) for o in page],
        has_more=more, next_after=page[-1].phone if more else None)


@router.post("", response_model=OptOutsAddedOut, summary="Add numbers to your opt-outs",
             operation_id="addOptOuts", openapi_extra=_ADD_BODY,
             responses=problem_responses(400, 401, 413, 415, 422, 503))
async def add_opt_outs(request: Request, service: TenantService) -> Response:
    """Never send to these numbers again: deliveries to them not yet handed to a worker are
    `suppressed` now (`suppressed` counts them), and later messages give them a
    `suppressed` delivery. Idempotent: numbers already listed keep their first time.
    JSON `{"phones": [...]}` or a `text/csv` file."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await read_body(request)
    if media == "application/json" or media.endswith("+json"):
        try:
            phones = OptOutsBody.model_validate_json(raw).phones
        except ValidationError as exc:
            return validation_problem(request, shape_error(exc))
    elif media == "text/csv":
        try:
            text = codecs.decode(raw, "utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ProblemError(MALFORMED, f"the CSV is not UTF-8 text ({exc.reason} near byte "
                                          f"{exc.start})") from None
        phones = first_column_numbers(text.splitlines(), "opt-out CSV")
    else:
        raise ProblemError(UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json or "
                                                   f"text/csv (got {media or 'none'!r})")
    result = await run_in_threadpool(_add, service, phones)
    return Response(result.model_dump_json(), media_type="application/json")


def _add(service: DispatchService, phones: list[str]) -> OptOutsAddedOut:
    numbers = validate_opt_out_phones(phones)
    result = service.add_opt_outs(numbers)
    return OptOutsAddedOut(given=len(numbers), added=result.added,
                           suppressed=result.suppressed)


@router.delete("/{phone}", status_code=204, summary="Take a number off your opt-outs",
               operation_id="removeOptOut", responses=problem_responses(401, 404, 422, 503))
def remove_opt_out(phone: _PHONE, service: TenantService) -> Response:
    """New messages reach the number again; deliveries already suppressed stay so. 404 if
    it is not on your list."""
    number = validate_phone(phone, 1, where="phone")
    if not service.remove_opt_out(number):
        raise NotFoundError(f"{number} is not on your opt-out list")
    return Response(status_code=204)
