"""``/v1/provider/receipts``: delivery receipts (DLRs) from the SMS provider.

The provider calls this with a provider key (``sms_sim apikey create --provider``; a
tenant's key is 403), in batches. Each receipt names its delivery by the
``Idempotency-Key`` the worker sent it with, so the provider needs nothing of ours but
that. Recording is idempotent (a batch sent twice changes nothing the second time and
answers ``repeat``), tolerant of a receipt that overtakes the worker's own report of the
send (``held``, then applied when the send is recorded), and a key that names no delivery
is answered ``unknown``, not refused: a provider retrying a batch must not be stuck on one
stale key. A malformed batch (a bad status or time) is refused whole, 422, nothing changed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from sms_sim.api.auth import ProviderService
from sms_sim.api.openapi import problem_responses
from sms_sim.api.problems import json_body
from sms_sim.api.list_schemas import ReceiptResultOut, ReceiptsBody, ReceiptsOut
from sms_sim.api.times import parse_receipt_at
from sms_sim.dispatch.contract import DlrOutcome, DlrReport

__all__ = ["router"]

router = APIRouter(prefix="/v1/provider", tags=["provider"])


@router.post("/receipts", response_model=ReceiptsOut, summary="Record delivery receipts",
             operation_id="recordReceipts",
             responses=problem_responses(400, 401, 403, 415, 422, 503))
def record_receipts(body: ReceiptsBody, service: ProviderService,
                    _json: Annotated[None, Depends(json_body)]) -> ReceiptsOut:
    """Record what the network said of sent deliveries: `delivered`, `undelivered` or
    `expired`, with when. Needs a provider key. Each receipt's `outcome`: `applied`,
    `repeat`, `held` (the send is not recorded yet; applied when it is), `ignored` (the
    delivery is already past that: `delivered` is final) or `unknown`."""
    reports = [DlrReport(r.key, r.status, parse_receipt_at(r.at, f"receipts[{i}].at"))
               for i, r in enumerate(body.receipts)]
    result = service.record_dlrs(reports)
    return ReceiptsOut(
        results=[ReceiptResultOut(key=r.key, outcome=o)
                 for r, o in zip(reports, result.outcomes, strict=True)],
        applied=result.count(DlrOutcome.APPLIED), repeats=result.count(DlrOutcome.REPEAT),
        held=result.count(DlrOutcome.HELD), ignored=result.count(DlrOutcome.IGNORED),
        unknown=result.count(DlrOutcome.UNKNOWN))
