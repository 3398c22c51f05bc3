"""Turning the body of ``POST /v1/messages`` into a ``NewMessage``: JSON, or a form with a
CSV file of recipients.

Two ways to send a message, one set of checks (``NewMessage.validated``, as the CLI):

- ``application/json``: ``{"content", "recipients": [...], "send_at", "priority",
  "valid_until" or "valid_for"}``.
- ``multipart/form-data``: the fields ``content``, ``send_at``, ``priority``,
  ``valid_until`` and ``valid_for`` as text, and
  ``recipients`` a CSV file (``curl -F content=Hi -F recipients=@staff.csv``): what a
  spreadsheet exports and a browser form sends, for lists too long to build as JSON. A row's
  first cell is the number (further cells, a name say, are ignored); blank rows and rows
  starting with ``#`` are skipped; a first row whose first cell has no digit is a header.
  The file is spooled to disk as it arrives and read back a line at a time, so a million
  numbers never sit in memory as one piece of text.

Either way the body may be at most ``BODY_MAX_BYTES``, counted as it arrives.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import AsyncGenerator, Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from sms_sim.api.problems import MALFORMED, TOO_LARGE, ProblemError
from sms_sim.api.schemas import NewMessageBody
from sms_sim.api.times import parse_send_at
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.validation import (
    CsvFormatError,
    InvalidRequestError,
    PastTimeError,
    first_column_numbers,
)

__all__ = [
    "BODY_MAX_BYTES",
    "Submission",
    "read_body",
    "submission_from_json",
    "read_form",
    "submission_from_form",
    "recipients_from_csv",
    "shape_error",
    "VALID_FOR_FORM_PATTERN",
]

# A million E.164 numbers as JSON is about 18 MB; room for whitespace and a long content.
BODY_MAX_BYTES = 64 * 1024 * 1024
_FORM_FIELDS = ("content", "recipients", "send_at", "priority", "valid_until", "valid_for")
# valid_for in a form: seconds, more than 0, below 10,000,000 (a regular expression cannot
# say "at most VALID_FOR_MAX_S"; JSON bodies take up to that).
VALID_FOR_FORM_PATTERN = r"^(?=[0-9.]*[1-9])[0-9]{1,7}(\.[0-9]{1,9})?$"
_NUMBER_RE = re.compile(VALID_FOR_FORM_PATTERN)
_INTEGER_RE = re.compile(r"-?[0-9]{1,15}")  # within JSON_INT_MAX, as in a JSON body


@dataclass(frozen=True, slots=True, kw_only=True)
class Submission:
    """A checked message, and how many of the recipients as sent were repeats."""

    message: NewMessage
    duplicates_dropped: int
    # Set when a time asked for is too far past: the refusal for a new request, which a
    # repeat of an earlier one under the same idempotency key does not get
    # (``idempotency.submit_once`` asks the store which it is).
    late: PastTimeError | None = None


async def _limited(request: Request) -> AsyncGenerator[bytes, None]:
    """The body's chunks, refusing it (413) as soon as it passes ``BODY_MAX_BYTES``, or at
    once when its Content-Length says it will."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > BODY_MAX_BYTES:
        raise _too_large()
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > BODY_MAX_BYTES:
            raise _too_large()
        yield chunk


def _too_large() -> ProblemError:
    return ProblemError(TOO_LARGE, f"the body is larger than {BODY_MAX_BYTES} bytes; for a "
                                   "long list send the recipients as a CSV file")


async def read_body(request: Request) -> bytes:
    """The whole body, within ``BODY_MAX_BYTES``."""
    return b"".join([chunk async for chunk in _limited(request)])


def submission_from_json(raw: bytes, *, tenant: str, idempotency_key: str | None,
                         now: float) -> Submission:
    """Parse and check a JSON body. Raises ``ValidationError`` (its shape) or
    ``InvalidRequestError`` (its values, in the engine's words)."""
    body = NewMessageBody.model_validate_json(raw)
    return _checked(content=body.content, recipients=body.recipients, send_at=body.send_at,
                    priority=body.priority, tenant=tenant, idempotency_key=idempotency_key,
                    now=now, valid_until=body.valid_until, valid_for=body.valid_for)


def _checked(*, content: str, recipients: list[str], send_at: str | None, priority: int,
             tenant: str, idempotency_key: str | None, now: float,
             valid_until: str | None = None, valid_for: float | None = None) -> Submission:
    late: PastTimeError | None = None
    try:
        due = None if send_at is None else parse_send_at(send_at, now)
        until = None if valid_until is None else parse_send_at(valid_until, now,
                                                               field="valid_until")
    except PastTimeError as exc:
        if idempotency_key is None:
            raise
        late = exc
        due = None if send_at is None else parse_send_at(send_at, None)
        until = None if valid_until is None else parse_send_at(valid_until, None,
                                                               field="valid_until")
    message = NewMessage.validated(
        content=content, recipients=recipients, scheduled_at=due,
        idempotency_key=idempotency_key, priority=priority, tenant=tenant,
        valid_until=until, valid_for_s=valid_for)
    return Submission(message=message,
                      duplicates_dropped=len(recipients) - len(message.recipients), late=late)


async def read_form(request: Request) -> dict[str, str | UploadFile]:
    """The multipart form's fields (a file part spooled to disk past 1 MiB). Raises
    ``ProblemError``: 400 for a broken form or an unknown or repeated field, 413 past the
    size limit."""
    parser = MultiPartParser(request.headers, _limited(request), max_files=1,
                             max_fields=len(_FORM_FIELDS), max_part_size=BODY_MAX_BYTES)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ProblemError(MALFORMED, f"the multipart form could not be read: {exc}") from None
    fields: dict[str, str | UploadFile] = {}
    try:
        for name, value in form.multi_items():
            if name not in _FORM_FIELDS:
                raise ProblemError(MALFORMED, f"{name!r} is not a field of this form "
                                              f"(fields: {', '.join(_FORM_FIELDS)})")
            if name in fields:
                raise ProblemError(MALFORMED, f"the form has the field {name!r} twice")
            fields[name] = value
    except ProblemError:
        await form.close()
        raise
    return fields


def submission_from_form(fields: dict[str, str | UploadFile], *, tenant: str,
                         idempotency_key: str | None, now: float) -> Submission:
    """Check a form from ``read_form`` (blocking: it reads the spooled file). Raises
    ``InvalidRequestError`` naming the field, or the CSV line, and the value."""
    content = _text(fields, "content")
    if content is None:
        raise InvalidRequestError("content is required")
    # A browser sends a textarea's line breaks as CRLF (the HTML form encoding), and a
    # CR is refused in content: a line break is LF.
    content = content.replace("\r\n", "\n")
    send_at = _text(fields, "send_at")
    priority_text = _text(fields, "priority")
    if priority_text is not None and _INTEGER_RE.fullmatch(priority_text) is None:
        raise InvalidRequestError(f"priority must be an integer (got {priority_text!r})")
    priority = 0 if priority_text is None else int(priority_text)
    valid_for_text = _text(fields, "valid_for")
    if valid_for_text is not None and _NUMBER_RE.fullmatch(valid_for_text) is None:
        raise InvalidRequestError(f"valid_for must be a number of seconds, more than 0 and "
                                  f"below 10000000 in a form (got {valid_for_text!r})")
    recipients = fields.get("recipients")
    if recipients is None:
        raise InvalidRequestError("recipients is required: a CSV file, one number per row")
    if isinstance(recipients, str):
        numbers = recipients_from_csv(io.StringIO(recipients, newline=""))
    else:
        numbers = recipients_from_csv(_decoded(recipients.file))
    return _checked(content=content, recipients=numbers, send_at=send_at,
                    priority=priority, tenant=tenant, idempotency_key=idempotency_key,
                    now=now, valid_until=_text(fields, "valid_until"),
                    valid_for=None if valid_for_text is None else float(valid_for_text))


def _text(fields: dict[str, str | UploadFile], name: str) -> str | None:
    value = fields.get(name)
    if isinstance(value, UploadFile):
        raise InvalidRequestError(f"{name} must be a text field, not a file")
    return value


def _decoded(binary: IO[bytes]) -> Iterator[str]:
    """The file's text, UTF-8 with or without a byte-order mark, as it is read."""
    binary.seek(0)
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    pending = ""
    try:
        while chunk := binary.read(256 * 1024):
            lines = (pending + decoder.decode(chunk)).splitlines(keepends=True)
            pending = lines.pop() if lines and not lines[-1].endswith(("\n", "\r")) else ""
            yield from lines
        rest = pending + decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise ProblemError(MALFORMED, f"the recipients file is not UTF-8 text ({exc.reason} "
                                      f"near byte {exc.start})") from None
    if rest:
        yield rest


def recipients_from_csv(lines: Iterable[str]) -> list[str]:
    """The numbers of a recipients CSV (see the module's docstring), as written; a bad one
    is refused naming its line, a file that is not CSV is a malformed body."""
    try:
        return first_column_numbers(lines, "recipients CSV")
    except CsvFormatError as exc:
        raise ProblemError(MALFORMED, str(exc)) from None


def shape_error(exc: ValidationError) -> list[dict[str, object]]:
    """A pydantic error list located in the body, as FastAPI's own validation reports it."""
    return [{**error, "loc": ("body", *error["loc"])}
            for error in exc.errors(include_url=False)]
