"""Every check on what callers ask of the dispatch engine, in one place.

The request types' builders (``NewMessage.validated``, ``MessageEdit.validated``) are made
of these checks, and the edges (CLI, HTTP API) call them before they touch a store, so a bad
request never opens, creates or changes a database; ``DispatchService`` checks its scalar
arguments here; and the stores check the arguments of their own operations here, so every
backend refuses the same inputs with the same words. Each refusal is an
``InvalidRequestError`` (a ``ValueError``) whose one-line message names the field and the
bad value.

This module knows no dispatch type: ``contract`` builds on it, so it imports nothing from
``contract`` (that would be an import cycle). The recipient format is decided by
``validate_phone`` alone: accepting E.164 numbers changes that one function.
"""

from __future__ import annotations

import csv
import datetime
import enum
import math
import re
from collections.abc import Iterable, Sequence
from typing import TypeAlias, TypeVar

from sms_sim.errors import SmsSimError

__all__ = [
    "InvalidRequestError",
    "CsvFormatError",
    "first_column_numbers",
    "CONTENT_MAX_CHARS",
    "IDEMPOTENCY_KEY_MAX_CHARS",
    "INT64_MAX",
    "PRIORITY_MIN",
    "PRIORITY_MAX",
    "RECIPIENTS_MAX",
    "TIME_MIN_S",
    "TIME_MAX_S",
    "validate_content",
    "validate_storable",
    "validate_phone",
    "validate_recipients",
    "validate_time",
    "validate_due",
    "PastTimeError",
    "PAST_GRACE_S",
    "format_utc",
    "validate_idempotency_key",
    "validate_priority",
    "validate_edit",
    "validate_validity",
    "validity_end",
    "VALID_FOR_MAX_S",
    "validate_message_id",
    "validate_version",
    "validate_limit",
    "parse_status",
    "could_be_an_id",
    "check_listing",
    "cursor_bounds",
    "check_claim",
    "check_settlements",
]

INT64_MAX = 2**63 - 1  # SQLite's largest integer, so no id, priority or limit can be larger
CONTENT_MAX_CHARS = 1600
IDEMPOTENCY_KEY_MAX_CHARS = 255  # as the IETF httpapi idempotency-key draft and Stripe
PRIORITY_MIN, PRIORITY_MAX = -(2**63), INT64_MAX
TIME_MIN_S, TIME_MAX_S = -62135596800.0, 253402300799.0  # 0001-01-01, 9999-12-31T23:59:59Z
RECIPIENTS_MAX = 1_000_000
VALID_FOR_MAX_S = 366 * 86400.0  # a validity longer than a year is a mistake, not a plan
PAST_GRACE_S = 60.0  # how far in the past a requested send time may be (clock skew, typing)
_PHONE_RE = re.compile(r"[0-9]{3}-[0-9]{3}-[0-9]{4}")
_E164_RE = re.compile(r"\+[1-9][0-9]{7,14}")
# C0 controls but the line feed, DEL, and C1 controls (see ``validate_content``).
_CONTROL_RE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")
_S = TypeVar("_S", bound=enum.StrEnum)


class InvalidRequestError(SmsSimError, ValueError):
    """A request to the engine is malformed; the message names the field and the value."""


class PastTimeError(InvalidRequestError):
    """A requested time too far in the past (``validate_due``): refused for a new request,
    but not for a repeat of an earlier one under its idempotency key, sent before that
    time passed (``DispatchService.is_repeat``)."""


# --- fields of requests ------------------------------------------------------------------


def validate_content(content: object) -> str:
    """The text as it is stored and sent: 1-1600 characters, not only whitespace, and no
    control characters but the line break.

    C0 and C1 controls (tab and carriage return included: an SMS has line breaks, not
    tabs, and a stray CR from a Windows file would reach the handset) are refused because
    they print as nothing on a phone and, echoed on an operator's terminal, can rewrite
    the screen or its title. Every other character, emoji and joiners included, is kept.
    """
    if not isinstance(content, str):
        raise InvalidRequestError(f"content must be text (got {content!r})")
    if not 1 <= len(content) <= CONTENT_MAX_CHARS:
        raise InvalidRequestError(
            f"content must be 1-{CONTENT_MAX_CHARS} characters (got {len(content)})"
        )
    if content.isspace():
        raise InvalidRequestError("content must not be only whitespace")
    control = _CONTROL_RE.search(content)
    if control is not None:
        raise InvalidRequestError(
            f"content must not contain control characters (got {control.group()!r} at "
            f"character {control.start() + 1}; only a line break is allowed)")
    return validate_storable(content, "content")


def validate_storable(text: str, what: str) -> str:
    """Refuse text no store can keep: lone surrogates, which is what Python makes of bytes
    that are not UTF-8 in a command-line argument."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(f"{what} is not valid UTF-8 text (at character "
                                  f"{exc.start + 1})") from None
    return text


def validate_phone(phone: object, position: int, *, where: str | None = None) -> str:
    """The number as it is stored and sent; ``position`` (from 1) names it in the refusal,
    or ``where`` does when the caller knows better (a file's line: "staff.txt line 7").

    Two forms are accepted: xxx-xxx-xxxx, and E.164 ("+" and 8-15 digits, no leading 0).
    Each number has one stored form, so the same phone written both ways gets one
    delivery: a North American E.164 number (+1 and ten digits) is stored as
    xxx-xxx-xxxx, the form stores and provider keys have always used (storing +1... instead
    would change the idempotency key of deliveries already in flight in existing
    databases, and a changed key can be sent twice); every other E.164 number is stored
    as written. This is the only place that knows the formats.
    """
    if isinstance(phone, str):
        if _PHONE_RE.fullmatch(phone) is not None:
            return phone
        if _E164_RE.fullmatch(phone) is not None:
            if len(phone) == 12 and phone.startswith("+1"):
                return f"{phone[2:5]}-{phone[5:8]}-{phone[8:]}"
            return phone
    raise InvalidRequestError(
        f"{where or f'recipient {position}'} must look like xxx-xxx-xxxx or +E.164 "
        f"(+ and 8-15 digits; got {phone!r})"
    )


def validate_recipients(recipients: Iterable[str]) -> tuple[str, ...]:
    """Every number valid (``validate_phone``); order kept, repeats dropped; 1 to 1,000,000."""
    if isinstance(recipients, str):
        raise InvalidRequestError("recipients must be a list of numbers, not one string")
    unique: dict[str, None] = {}
    for position, phone in enumerate(recipients, start=1):
        unique[validate_phone(phone, position)] = None
        if len(unique) > RECIPIENTS_MAX:
            raise InvalidRequestError(f"at most {RECIPIENTS_MAX} recipients per message")
    if not unique:
        raise InvalidRequestError("a message needs at least 1 recipient (got 0)")
    return tuple(unique)


def validate_time(value: float) -> float:
    """Epoch seconds within 0001-9999 UTC: every stored time must also be printable."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRequestError(f"time must be finite epoch seconds (got {value!r})")
    if not TIME_MIN_S <= value <= TIME_MAX_S:
        raise InvalidRequestError(
            f"time must be between years 1 and 9999 UTC (got {value!r} epoch seconds)")
    return float(value)


def validate_due(due_at: float, now: float) -> float:
    """A requested send time, refused when it is more than ``PAST_GRACE_S`` before ``now``:
    a time in the past is almost always a typo (last year, a date without its time) and
    would go out at once. The grace lets a time typed "now" survive the seconds it took to
    submit. Checked by the edges, which know the time a person meant; the stores accept
    any time."""
    validate_time(due_at)
    if due_at < now - PAST_GRACE_S:
        raise PastTimeError(f"{format_utc(due_at)} is in the past (now {format_utc(now)})")
    return due_at


def format_utc(epoch_s: float | None) -> str:
    """ISO-8601 UTC to the millisecond, or "-" for None (for messages and the edges).

    It lives beside ``validate_time`` because that range is what makes every stored time
    printable here; the stores' refusals and the CLI both print times with it. A time
    outside it (an ETA of a stalled dispatch, a damaged row) prints as the range's edge
    ("after 9999-12-31T23:59:59.000Z") rather than ending a command on a traceback.
    """
    if epoch_s is None:
        return "-"
    if not TIME_MIN_S <= epoch_s <= TIME_MAX_S:  # NaN included
        return (f"after {format_utc(TIME_MAX_S)}" if epoch_s > TIME_MIN_S
                else f"before {format_utc(TIME_MIN_S)}")
    moment = datetime.datetime.fromtimestamp(epoch_s, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def validate_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not (isinstance(key, str) and 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_CHARS):
        raise InvalidRequestError(
            f"idempotency key must be 1-{IDEMPOTENCY_KEY_MAX_CHARS} characters (got {key!r})"
        )
    return validate_storable(key, "idempotency key")


def validate_edit(content: object, scheduled_at: object, recipients: object) -> None:
    """An edit must change something: refusing an empty one keeps a no-op from bumping the
    version and so failing every other editor's next attempt."""
    if content is None and scheduled_at is None and recipients is None:
        raise InvalidRequestError("an edit must change content, schedule, recipients or "
                                  "validity")


def validate_validity(valid_until: float | None, valid_for_s: float | None,
                      due_at: float | None) -> tuple[float | None, float | None]:
    """A validity as asked: an end (epoch seconds, after ``due_at`` when that is known) or a
    duration (0 < seconds <= ``VALID_FOR_MAX_S``), not both. Checked against the real now
    by the edges only; a store accepts any end (a message already past it expires)."""
    if valid_until is not None and valid_for_s is not None:
        raise InvalidRequestError("give valid_until or valid_for, not both")
    if valid_for_s is not None:
        if isinstance(valid_for_s, bool) or not isinstance(valid_for_s, (int, float)) \
                or not math.isfinite(valid_for_s) or not 0 < valid_for_s <= VALID_FOR_MAX_S:
            raise InvalidRequestError(f"valid_for must be more than 0 and at most "
                                      f"{VALID_FOR_MAX_S:.0f} seconds (got {valid_for_s!r})")
        if due_at is not None:
            validity_end(due_at, valid_for_s)
        return None, float(valid_for_s)
    if valid_until is not None:
        valid_until = validate_time(valid_until)
        if due_at is not None and valid_until <= due_at:
            raise InvalidRequestError(f"valid_until {format_utc(valid_until)} must be after "
                                      f"the send time {format_utc(due_at)}")
    return valid_until, None


def validity_end(due_at: float, valid_for_s: float) -> float:
    """When a validity of ``valid_for_s`` from ``due_at`` ends; ``InvalidRequestError`` when
    that is past the last storable time (a message due late in 9999 was saved, then its
    confirmation ended on a traceback and a retry saved it again)."""
    end = due_at + valid_for_s
    if end > TIME_MAX_S:
        raise InvalidRequestError(f"valid_for {valid_for_s:g} s from the send time "
                                  f"{format_utc(due_at)} ends after the year 9999")
    return end


def validate_priority(priority: int) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidRequestError(f"priority must be an integer (got {priority!r})")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:  # SQLite integers are 64-bit
        raise InvalidRequestError(
            f"priority must be between {PRIORITY_MIN} and {PRIORITY_MAX} (got {priority})")
    return priority


# --- arguments of lookups and listings ---------------------------------------------------


def validate_message_id(message_id: int) -> int:
    """Any integer: one no store hands out (0, negative, huge) is simply not found later."""
    if isinstance(message_id, bool) or not isinstance(message_id, int):
        raise InvalidRequestError(f"message id must be an integer (got {message_id!r})")
    return message_id


def validate_version(version: int) -> int:
    """Versions start at 1; a version that exists but is not current is a conflict, not
    invalid, and only the store can tell."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidRequestError(f"version must be an integer >= 1 (got {version!r})")
    return version


def validate_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidRequestError(f"limit must be an integer >= 0 (got {limit!r})")
    return limit


def parse_status(kind: type[_S], value: _S | str) -> _S:
    """A status filter given as the enum member or its text (as an HTTP query brings it)."""
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise InvalidRequestError(f"status must be one of {choices} (got {value!r})") from None


def could_be_an_id(message_id: int) -> bool:
    """False for an id no store hands out (negative, or beyond SQLite's integers), so a
    lookup can answer "not found" without asking the database (which would overflow)."""
    return 0 <= message_id <= INT64_MAX


def check_listing(message_id: int | None, limit: int, *, before: int | None = None,
                  after: int | None = None) -> bool:
    """Validate a listing's ``limit`` and cursors; False when nothing can match (an id no
    store hands out, a cursor that excludes every id), so the listing is empty without
    asking the database."""
    validate_limit(limit)
    for name, cursor in (("before", before), ("after", after)):
        if cursor is not None and (isinstance(cursor, bool) or not isinstance(cursor, int)):
            raise InvalidRequestError(f"{name} must be an id (got {cursor!r})")
    if before is not None and before <= 0 or after is not None and after >= INT64_MAX:
        return False
    return message_id is None or could_be_an_id(message_id)


def cursor_bounds(before: int | None, after: int | None) -> tuple[int | None, int | None]:
    """The cursors as a store can pass them on: one beyond every id an int64 holds is no
    bound at all (a database would overflow on it). Call after ``check_listing``."""
    return (None if before is None or before > INT64_MAX else before,
            None if after is None or after < 0 else after)


# --- arguments of the worker's operations ------------------------------------------------


def _check_now(now: float, what: str = "now") -> None:
    if not isinstance(now, (int, float)) or not math.isfinite(now):
        raise InvalidRequestError(f"{what} must be a finite time in seconds (got {now!r})")


def check_claim(limit: int, lease_s: float, now: float) -> None:
    """Refuse arguments that would lease work no one could ever settle or rescue (a NaN
    lease end is stored as NULL: never expired, never current)."""
    _check_now(now)
    if not isinstance(lease_s, (int, float)) or not math.isfinite(lease_s) or lease_s <= 0:
        raise InvalidRequestError(f"lease must be > 0 seconds (got {lease_s!r})")
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidRequestError(f"limit must be an integer (got {limit!r})")


# A ``contract.Settlement``, described by its shape: naming it would be an import cycle.
_SettlementFields: TypeAlias = tuple[int, int, object, str | None, float | None,
                                     float | None]


_INF = math.inf


def check_settlements(settlements: Sequence[_SettlementFields], now: float) -> None:
    """One report per attempt per call: two of one attempt (say RETRY then SENT) have no
    agreed order. Two attempts of one delivery may come together (a worker paused past its
    lease re-claims a delivery whose first claim it still holds): the fence takes at most
    one of them, in any order."""
    _check_now(now)
    # Written for the hot path (a whole batch per call): the common SENT report (no error,
    # no retry time) costs two type checks, two range checks, two None checks, the send
    # time's check and a set insertion.
    seen: set[tuple[int, int]] = set()
    for delivery_id, attempts, _, error, next_attempt_at, sent_at in settlements:
        if type(delivery_id) is not int or type(attempts) is not int \
                or not (0 <= delivery_id <= INT64_MAX and 0 <= attempts <= INT64_MAX):
            raise InvalidRequestError(f"delivery_id and attempts must be integers from 0 to "
                                      f"{INT64_MAX} (got {delivery_id!r}, {attempts!r})")
        if next_attempt_at is not None:
            _check_now(next_attempt_at, "next_attempt_at")
        if sent_at is not None and not (type(sent_at) is float and -_INF < sent_at < _INF):
            _check_now(sent_at, "sent_at")  # refuses all but an int
        if error is not None:
            validate_storable(error, "error")
        attempt = (delivery_id, attempts)
        if attempt in seen:
            raise InvalidRequestError(f"delivery {delivery_id} attempt {attempts} is reported "
                                      "twice in one settle")
        seen.add(attempt)


class CsvFormatError(InvalidRequestError):
    """A CSV that is not CSV (an unterminated quote, a NUL byte): the file, not a number in
    it, is at fault, which an HTTP API answers differently (malformed body, not a bad field)."""


def first_column_numbers(lines: Iterable[str], source: str) -> list[str]:
    """The numbers in the first column of a CSV called ``source`` in refusals (a recipients
    upload, a carrier's STOP export, a spreadsheet column): blank rows and ``#`` rows
    skipped, a first row with no digit taken for a header ("phone", "number", ...); each
    number checked (``validate_phone``), a bad one refused naming its line; a CSV that does
    not parse is ``CsvFormatError``."""
    numbers: list[str] = []
    reader = csv.reader(lines)
    first = True
    try:
        for row in reader:
            cell = row[0].strip() if row else ""
            if not cell or cell.startswith("#"):
                continue
            if first and not any(char.isdigit() for char in cell):
                first = False
                continue
            first = False
            numbers.append(validate_phone(cell, len(numbers) + 1,
                                          where=f"{source} line {reader.line_num}"))
    except csv.Error as exc:
        raise CsvFormatError(f"{source} line {reader.line_num}: {exc}") from None
    return numbers
