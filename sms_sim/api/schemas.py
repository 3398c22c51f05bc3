"""The JSON bodies of the HTTP API, requests and responses, as pydantic models.

Request models check shape only (types exact: ``strict``; unknown fields refused, so a
misspelt ``sendAt`` is an error instead of a message sent now). Whether a value is
acceptable (content rules, phone formats, the past-time rule) is decided by the engine's
own checks in ``dispatch.validation``, with the words the CLI uses; the constraints below
that repeat those rules (``pattern``, ``maxLength``) are there for the OpenAPI document and
for clients that generate code from it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from sms_sim.api.times import EXAMPLE_TIME, RFC3339_PATTERN
from sms_sim.dispatch.contract import DeliveryStatus, MessageOutcome, MessageStatus
from sms_sim.dispatch.validation import (
    CONTENT_MAX_CHARS,
    RECIPIENTS_MAX,
    VALID_FOR_MAX_S,
)
from sms_sim.segments import Encoding

__all__ = [
    "PHONE_PATTERN",
    "PHONES_SCHEMA",
    "TIME_SCHEMA",
    "CONTENT_PATTERN",
    "PAGE_MAX",
    "JSON_INT_MAX",
    "NewMessageBody",
    "MessageEditBody",
    "RequeueBody",
    "DeliveryCounts",
    "ProgressOut",
    "MessageOut",
    "SubmittedMessageOut",
    "MessageListOut",
    "DeliveryOut",
    "DeliveryListOut",
    "CancelOut",
    "RequeueOut",
    "HealthOut",
    "FieldProblem",
    "Problem",
    "DIGITS",
]

# ``validation.validate_phone``'s two forms: xxx-xxx-xxxx, and E.164 without a leading 0.
PHONE_PATTERN = r"^([0-9]{3}-[0-9]{3}-[0-9]{4}|\+[1-9][0-9]{7,14})$"
# ``validation.validate_content``: something other than whitespace, and no control
# character but the line feed.
CONTENT_PATTERN = r"^(?=[\s\S]*\S)[^\x00-\x09\x0b-\x1f\x7f-\x9f]*$"
PAGE_MAX = 1000  # the largest page a listing returns
# The largest integer every JSON parser reads exactly (JavaScript's Number.MAX_SAFE_INTEGER):
# ids and priorities beyond it would change on their way through a browser or a JS portal.
JSON_INT_MAX = 2**53 - 1


def _integral(value: object) -> object:
    """JSON has one number type: ``5.0`` is the integer 5 (as JSON Schema says), ``5.5``
    stays a number and is refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _digits(value: object) -> object:
    """A path or query integer as digits only: "47.00" and "1e1" parse as integers, and
    ``POST /v1/messages/47.00/cancel`` cancelled message 47."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be a whole number written in digits")
    return value


# The metadata of every integer in a path or a query string.
DIGITS = BeforeValidator(_digits)
Id = Annotated[int, Field(ge=1, le=JSON_INT_MAX), BeforeValidator(_integral)]
Priority = Annotated[int, Field(ge=-JSON_INT_MAX, le=JSON_INT_MAX),
                     BeforeValidator(_integral)]
TIME_SCHEMA: JsonDict = {"format": "date-time", "examples": [EXAMPLE_TIME]}
_TIME_IN: JsonDict = {"format": "date-time", "pattern": RFC3339_PATTERN, "examples": [EXAMPLE_TIME]}
_CONTENT: JsonDict = {"minLength": 1, "maxLength": CONTENT_MAX_CHARS, "pattern": CONTENT_PATTERN}
_VALID_UNTIL = ("When the message stops being worth sending: RFC 3339 with its offset, after "
                "send_at. Deliveries not sent by then become `expired`; none is ever sent "
                "late. Give this or valid_for, not both; neither: no limit.")
_VALID_FOR = ("The same as a duration: seconds after send_at (0 < valid_for <= "
              f"{VALID_FOR_MAX_S:.0f}).")
ValidFor = Annotated[float, Field(gt=0, le=VALID_FOR_MAX_S), BeforeValidator(_integral)]
PHONES_SCHEMA: JsonDict = {
    "minItems": 1, "maxItems": RECIPIENTS_MAX,
    "items": {"type": "string", "pattern": PHONE_PATTERN,
              "examples": ["555-010-0001", "+15550100002", "+442071838750"]}}


def _one_validity(schema: dict[str, Any]) -> None:
    """valid_until and valid_for exclude each other (given both, not null, is refused)."""
    schema["not"] = {"required": ["valid_until", "valid_for"],
                     "properties": {"valid_until": {"type": "string"},
                                    "valid_for": {"type": "number"}}}


class NewMessageBody(BaseModel):
    """A message to send (``POST /v1/messages`` as JSON)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="NewMessage",
                              json_schema_extra=_one_validity)

    content: str = Field(description="The text: 1-1600 characters, line breaks allowed, no "
                                     "other control characters.", json_schema_extra=_CONTENT)
    recipients: list[str] = Field(
        description="Phone numbers, xxx-xxx-xxxx or E.164 (+ and 8-15 digits); +1 numbers "
                    "are stored as xxx-xxx-xxxx, and a number listed twice (in either form) "
                    "gets one delivery. At most 1,000,000.", json_schema_extra=PHONES_SCHEMA)
    send_at: str | None = Field(
        default=None, description="When to send: RFC 3339 with its offset. Left out or null: "
                                  "now. More than 60 s in the past is refused.",
        json_schema_extra=_TIME_IN)
    priority: Priority = Field(default=0, description="Higher classes of your messages go "
                                                      "first; waiting work ages, so nothing "
                                                      "starves.")
    valid_until: str | None = Field(default=None, description=_VALID_UNTIL,
                                    json_schema_extra=_TIME_IN)
    valid_for: ValidFor | None = Field(default=None, description=_VALID_FOR)


def _no_nulls(schema: dict[str, Any]) -> None:
    """Document the optional fields of a change as "leave it out", never null (null has no
    meaning there: a message's time cannot be unset), and at least one field."""
    for prop in schema.get("properties", {}).values():
        options = prop.pop("anyOf", None)
        if options:
            for key, value in next(o for o in options if o.get("type") != "null").items():
                prop.setdefault(key, value)  # the field's own constraints stay
        prop.pop("default", None)
    schema["minProperties"] = 1


def _edit_schema(schema: dict[str, Any]) -> None:
    _no_nulls(schema)
    _one_validity(schema)


def _refuse_nulls(model: BaseModel) -> None:
    for name in model.model_fields_set:
        if getattr(model, name) is None:
            raise ValueError(f"{name} may not be null; leave it out instead")


class MessageEditBody(BaseModel):
    """Changes to a message that has not started dispatching; fields left out stay."""

    model_config = ConfigDict(extra="forbid", strict=True, title="MessageEdit",
                              json_schema_extra=_edit_schema)

    @model_validator(mode="after")
    def _nothing_null(self) -> MessageEditBody:
        _refuse_nulls(self)
        return self

    content: str | None = Field(default=None, json_schema_extra=_CONTENT)
    recipients: list[str] | None = Field(default=None, description="Replaces every recipient.",
                                         json_schema_extra=PHONES_SCHEMA)
    send_at: str | None = Field(default=None, description="RFC 3339 with its offset.",
                                json_schema_extra=_TIME_IN)
    valid_until: str | None = Field(default=None, description=_VALID_UNTIL,
                                    json_schema_extra=_TIME_IN)
    valid_for: ValidFor | None = Field(default=None, description=_VALID_FOR + " Counted from "
                                       "send_at after the change.")


def _one_selector(schema: dict[str, Any]) -> None:
    _no_nulls(schema)
    schema["maxProperties"] = 1
    schema["oneOf"] = [{"required": [name]} for name in schema.get("properties", {})]


def _only_true(value: object) -> object:
    """JSON's true itself: a literal is matched by equality, and ``1`` and ``1.0`` equal
    True in Python (``{"all": 1}`` requeued every dead delivery)."""
    if value is not None and not isinstance(value, bool):
        raise ValueError("must be true")
    return value


class RequeueBody(BaseModel):
    """Which dead deliveries to requeue: exactly one of the three, so that requeueing
    everything is never what an empty or mistyped body means."""

    model_config = ConfigDict(extra="forbid", strict=True, title="RequeueRequest",
                              json_schema_extra=_one_selector)

    @model_validator(mode="after")
    def _exactly_one(self) -> RequeueBody:
        _refuse_nulls(self)
        if len(self.model_fields_set) != 1:
            raise ValueError("say which dead deliveries to requeue with exactly one of "
                             "message_id, delivery_ids or \"all\": true")
        return self

    message_id: Id | None = Field(default=None,
                                  description="Every dead delivery of this message.")
    delivery_ids: list[Id] | None = Field(
        default=None, min_length=1, max_length=PAGE_MAX,
        description="These dead deliveries (ids from GET /v1/dead-letters); ids that are not "
                    "your dead deliveries are passed over.")
    all: Annotated[Literal[True] | None, BeforeValidator(_only_true)] = Field(
        default=None, description="true: every dead delivery you have.")


class DeliveryCounts(BaseModel):
    """A message's deliveries by status (every status present)."""

    pending: int
    leased: int
    sent: int
    retrying: int
    dead: int
    cancelled: int
    expired: int = Field(description="Not sent before the message's validity ended (never "
                                     "sent late), or sent and a receipt said expired.")
    suppressed: int = Field(description="The number opted out: never sent; not a failure.")
    delivered: int = Field(description="Sent, and a delivery receipt said delivered.")
    undelivered: int = Field(description="Sent, and a delivery receipt said undelivered.")


class ProgressOut(BaseModel):
    """How far a message has got."""

    model_config = ConfigDict(title="Progress")

    total: int
    sent: int = Field(description="Accepted by the provider: sent, delivered or undelivered.")
    dead: int
    open: int = Field(description="Pending, leased or retrying: still to be tried.")
    delivered: int = Field(description="Of those sent, receipted delivered.")
    expired: int
    suppressed: int
    segments_sent: int = Field(description="sent x the message's segments: what carriers "
                                           "count and bill.")
    percent_sent: float = Field(ge=0, le=100)
    rate_per_s: float | None = Field(description="Deliveries sent per second since dispatch "
                                                 "began; null until something was sent.")
    eta: str | None = Field(description="When the open deliveries would all be sent at that "
                                        "rate (a floor: retries take longer).",
                            json_schema_extra=TIME_SCHEMA)


class MessageOut(BaseModel):
    """A message as stored, with its progress. Its ``version`` is its ETag."""

    model_config = ConfigDict(title="Message")

    id: int
    content: str
    status: MessageStatus
    outcome: MessageOutcome | None = Field(description="Once completed: all sent, partly "
                                                       "failed or all failed.")
    version: int
    priority: int
    send_at: str = Field(json_schema_extra=TIME_SCHEMA)
    created_at: str = Field(json_schema_extra=TIME_SCHEMA)
    updated_at: str = Field(json_schema_extra=TIME_SCHEMA)
    dispatch_started_at: str | None = Field(json_schema_extra=TIME_SCHEMA)
    completed_at: str | None = Field(json_schema_extra=TIME_SCHEMA)
    idempotency_key: str | None
    recipient_count: int
    encoding: Encoding = Field(description="GSM-7, or UCS-2 when one character is outside "
                                           "it.")
    segments: int = Field(description="The SMS segments each recipient's copy is sent as.")
    valid_until: str | None = Field(description="Deliveries not sent by then expire; null: "
                                                "no limit.", json_schema_extra=TIME_SCHEMA)
    deliveries: DeliveryCounts
    progress: ProgressOut


class SubmittedMessageOut(MessageOut):
    """The answer to a submit; replayed, byte for byte, to a repeat with its key."""

    model_config = ConfigDict(title="SubmittedMessage")

    duplicates_dropped: int = Field(description="Recipients listed more than once (in any "
                                                "form) that got no second delivery.")
    suppressed: int = Field(description="Recipients on your opt-out list: their deliveries "
                                        "are `suppressed`, never sent.")


class MessageListOut(BaseModel):
    """One page of messages, newest first."""

    model_config = ConfigDict(title="MessageList")

    data: list[MessageOut]
    has_more: bool
    next_after: int | None = Field(description="Pass as ?after= for the next (older) page; "
                                               "null on the last page.")


class DeliveryOut(BaseModel):
    """One message to one recipient."""

    model_config = ConfigDict(title="Delivery")

    id: int
    message_id: int
    recipient: str
    status: DeliveryStatus
    attempts: int
    lease_losses: int = Field(description="Attempts whose worker went silent: whether they "
                                          "reached the provider is unknown.")
    last_error: str | None
    sent_at: str | None = Field(json_schema_extra=TIME_SCHEMA)
    next_attempt_at: str = Field(json_schema_extra=TIME_SCHEMA)
    dlr_at: str | None = Field(description="When the delivery receipt applied says it "
                                           "happened.", json_schema_extra=TIME_SCHEMA)


class DeliveryListOut(BaseModel):
    """One page of deliveries, by id ascending."""

    model_config = ConfigDict(title="DeliveryList")

    data: list[DeliveryOut]
    has_more: bool
    next_after: int | None = Field(description="Pass as ?after= for the next page; null on "
                                               "the last page.")


class CancelOut(BaseModel):
    """What a cancel did: deliveries cancelled now, already sent, and held by workers (those
    finish the attempt they started; none is retried)."""

    model_config = ConfigDict(title="CancelResult")

    message_id: int
    was_status: MessageStatus
    cancelled: int
    already_sent: int
    in_flight: int
    message: MessageOut


class RequeueOut(BaseModel):
    model_config = ConfigDict(title="RequeueResult")

    requeued: int


class HealthOut(BaseModel):
    """The store answers (``/readyz``: and takes writes)."""

    model_config = ConfigDict(title="Health")

    status: Literal["ok", "ready"]
    checked_at: str | None = Field(default=None, json_schema_extra=TIME_SCHEMA)
    next_due_at: str | None = Field(default=None, json_schema_extra=TIME_SCHEMA)
    behind_s: float | None = Field(default=None, description="How long the oldest due work "
                                                             "has waited.")


class FieldProblem(BaseModel):
    field: str
    detail: str


class Problem(BaseModel):
    """RFC 9457 problem details: branch on ``type``; ``detail`` is for people."""

    type: str = Field(description="A stable URI reference: /problems/<slug> (GET it for "
                                  "what it means), or about:blank.")
    title: str
    status: int
    detail: str = Field(description="One line naming the field and the value.")
    instance: str = Field(description="The path of the request.")
    errors: list[FieldProblem] | None = Field(default=None,
                                              description="Every refused field, when several.")
