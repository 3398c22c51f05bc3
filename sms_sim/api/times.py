"""Times on the wire: RFC 3339 in, RFC 3339 UTC out.

A requested time must carry its offset (``Z`` or ``+01:00``): unlike an operator at a
terminal, whose ``--at`` without an offset the CLI reads as UTC, a program that leaves the
offset out has almost always sent a local time by mistake. It is then held to the CLI's
past-time rule (``validation.validate_due``: more than ``PAST_GRACE_S`` in the past is a
typo, not a wish to send at once), with the CLI's words.
"""

from __future__ import annotations

import datetime
import re

from sms_sim.dispatch.validation import (
    InvalidRequestError,
    PastTimeError,
    format_utc,
    validate_due,
    validate_time,
)

__all__ = ["RFC3339_PATTERN", "EXAMPLE_TIME", "parse_send_at", "parse_receipt_at", "rfc3339",
           "rfc3339_or_none"]

EXAMPLE_TIME = "2026-11-24T15:00:00Z"
# RFC 3339 section 5.6 date-time; the offset is required, fractions of a second optional.
RFC3339_PATTERN = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
                   r"([Zz]|[+-][0-9]{2}:[0-9]{2})$")
_RFC3339_RE = re.compile(RFC3339_PATTERN)
_NAIVE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ][0-9:.]+)?$")


def parse_send_at(text: str, now: float | None, *, field: str = "send_at") -> float:
    """Epoch seconds of an RFC 3339 time with an offset, no more than ``PAST_GRACE_S``
    before ``now`` (None: any time). Raises ``InvalidRequestError`` naming ``field`` and
    the value (``PastTimeError`` for a time too far past)."""
    # What leaving the field out means: no limit, for a validity end.
    omitted = "to send now" if field == "send_at" else "for no limit"
    if _RFC3339_RE.fullmatch(text) is None:
        if _NAIVE_RE.fullmatch(text.strip()):
            raise InvalidRequestError(
                f"{field} must include its UTC offset, e.g. {EXAMPLE_TIME} or "
                f"2026-11-24T16:00:00+01:00 (got {text!r}); leave {field} out {omitted}")
        raise InvalidRequestError(
            f"{field} must be an RFC 3339 time such as {EXAMPLE_TIME} (got {text!r})")
    normal = text.upper().replace(" ", "T").replace("Z", "+00:00")
    try:
        moment = datetime.datetime.fromisoformat(normal)
    except ValueError:  # the right shape, but no such day or hour (2026-02-30, 25:00)
        raise InvalidRequestError(f"{field} is not a real time: {text!r}") from None
    try:
        moment_s = validate_time(moment.timestamp())
        return moment_s if now is None else validate_due(moment_s, now)
    except (InvalidRequestError, OverflowError) as exc:
        kind = PastTimeError if isinstance(exc, PastTimeError) else InvalidRequestError
        raise kind(f"{field} {text!r}: {exc}; leave {field} out {omitted}") from None


def parse_receipt_at(text: str, field: str) -> float:
    """Epoch seconds of an RFC 3339 time with an offset, any time (a receipt's time is the
    network's; it may be long past). Raises ``InvalidRequestError`` naming ``field``."""
    if _RFC3339_RE.fullmatch(text) is None:
        raise InvalidRequestError(
            f"{field} must be an RFC 3339 time such as {EXAMPLE_TIME} (got {text!r})")
    normal = text.upper().replace(" ", "T").replace("Z", "+00:00")
    try:
        return validate_time(datetime.datetime.fromisoformat(normal).timestamp())
    except (ValueError, OverflowError):
        raise InvalidRequestError(f"{field} is not a real time: {text!r}") from None


def rfc3339(epoch_s: float) -> str:
    """``2026-11-24T15:00:00.000Z``: UTC to the millisecond, as the CLI prints times."""
    return format_utc(epoch_s)


def rfc3339_or_none(epoch_s: float | None) -> str | None:
    return None if epoch_s is None else format_utc(epoch_s)
