"""The JSON bodies of ``/v1/opt-outs`` and ``/v1/provider/receipts`` (issue 14), with the
conventions of ``schemas``: requests strict and closed, responses documented."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sms_sim.api.schemas import PHONES_SCHEMA, TIME_SCHEMA
from sms_sim.api.times import RFC3339_PATTERN
from sms_sim.dispatch.contract import DlrOutcome
from sms_sim.dispatch.dlrs import DLR_BATCH_MAX
from sms_sim.dispatch.optouts import OPT_OUTS_MAX_PER_CALL

__all__ = ["OptOutsBody", "OptOutOut", "OptOutListOut", "OptOutsAddedOut", "ReceiptIn",
           "ReceiptsBody", "ReceiptResultOut", "ReceiptsOut"]


class OptOutsBody(BaseModel):
    """Numbers to put on your opt-out list (``POST /v1/opt-outs`` as JSON)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="OptOuts")

    phones: list[str] = Field(
        description="xxx-xxx-xxxx or E.164; +1 numbers are stored as xxx-xxx-xxxx. At most "
                    f"{OPT_OUTS_MAX_PER_CALL:,}.",
        json_schema_extra={**PHONES_SCHEMA, "maxItems": OPT_OUTS_MAX_PER_CALL})


class OptOutOut(BaseModel):
    model_config = ConfigDict(title="OptOut")

    phone: str
    created_at: str = Field(json_schema_extra=TIME_SCHEMA)


class OptOutListOut(BaseModel):
    """One page of your opt-out list, in number order."""

    model_config = ConfigDict(title="OptOutList")

    data: list[OptOutOut]
    has_more: bool
    next_after: str | None = Field(description="Pass as ?after= for the next page; null on "
                                               "the last page.")


class OptOutsAddedOut(BaseModel):
    """What adding numbers did."""

    model_config = ConfigDict(title="OptOutsAdded")

    given: int = Field(description="Distinct numbers in the request.")
    added: int = Field(description="Of those, newly listed (the rest were listed already).")
    suppressed: int = Field(description="Deliveries to them not yet handed to a worker, "
                                        "suppressed now.")


class ReceiptIn(BaseModel):
    """One delivery receipt, as the provider reports it."""

    model_config = ConfigDict(extra="forbid", strict=True, title="Receipt")

    key: str = Field(min_length=1, max_length=300,
                     description="The Idempotency-Key the delivery was sent with "
                                 "(`<message uid>:<recipient>`).")
    status: Literal["delivered", "undelivered", "expired"] = Field(
        description="What the network said.")
    at: str = Field(description="When it happened (RFC 3339 with its offset).",
                    json_schema_extra={"format": "date-time", "pattern": RFC3339_PATTERN})


class ReceiptsBody(BaseModel):
    """A batch of receipts (``POST /v1/provider/receipts``)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="Receipts")

    receipts: list[ReceiptIn] = Field(min_length=1, max_length=DLR_BATCH_MAX)


class ReceiptResultOut(BaseModel):
    model_config = ConfigDict(title="ReceiptResult")

    key: str
    outcome: DlrOutcome = Field(description="applied; repeat (nothing changed); held (the "
                                            "send is not recorded yet: applied when it is); "
                                            "ignored (the delivery is past that); unknown "
                                            "(no delivery has this key).")


class ReceiptsOut(BaseModel):
    """What became of each receipt, in the order given; the same batch again answers
    ``repeat`` for each one applied or held the first time."""

    model_config = ConfigDict(title="ReceiptsResult")

    results: list[ReceiptResultOut]
    applied: int
    repeats: int
    held: int
    ignored: int
    unknown: int
