"""``/v1/dead-letters``: deliveries that ran out of attempts, and putting them back.

Requeueing needs to be told what: a message, some delivery ids, or ``"all": true``. An
empty body is refused, as the CLI refuses ``dead --requeue`` without ``--message`` or
``--all``: "everything" is never what a forgotten field means.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from sms_sim.api.auth import TenantService
from sms_sim.api.messages import Limit
from sms_sim.api.openapi import problem_responses
from sms_sim.api.problems import json_body
from sms_sim.api.schemas import DIGITS, JSON_INT_MAX, DeliveryListOut, RequeueBody, RequeueOut
from sms_sim.api.views import delivery_out

__all__ = ["router"]

router = APIRouter(prefix="/v1/dead-letters", tags=["dead letters"])


@router.get("", response_model=DeliveryListOut, summary="List dead deliveries",
            operation_id="listDeadLetters", responses=problem_responses(401, 404, 422, 503))
def list_dead_letters(
    service: TenantService,
    message_id: Annotated[int | None, Query(ge=1, le=JSON_INT_MAX,
                                            description="Only this message's."), DIGITS] = None,
    limit: Limit = 100,
    after: Annotated[int | None, Query(ge=0, le=JSON_INT_MAX,
                                       description="next_after of the previous page."),
                     DIGITS] = None,
) -> DeliveryListOut:
    """Deliveries that ran out of attempts (or of lease losses), by id, with their last
    error; 404 for an unknown message."""
    found = service.dead(message_id, limit=limit + 1, after=after)
    page = found[:limit]
    more = len(found) > limit
    return DeliveryListOut(data=[delivery_out(d) for d in page], has_more=more,
                           next_after=page[-1].id if more else None)


@router.post("/requeue", response_model=RequeueOut, summary="Requeue dead deliveries",
             operation_id="requeueDeadLetters",
             responses=problem_responses(400, 401, 404, 415, 422, 503))
def requeue_dead_letters(body: RequeueBody, service: TenantService,
                         _json: Annotated[None, Depends(json_body)]) -> RequeueOut:
    """Give dead deliveries a fresh start, due now (attempts back to 0, last error kept):
    those of `message_id`, the `delivery_ids` listed, or with `"all": true` every one you
    have. Deliveries of cancelled messages stay dead."""
    if body.delivery_ids is not None:
        return RequeueOut(requeued=service.requeue(delivery_ids=body.delivery_ids))
    return RequeueOut(requeued=service.requeue(body.message_id))
