"""Value types shared by every mode: the message and the outcome of one send attempt.

``Message`` validates itself because it is the unit the whole system promises never to
lose or duplicate: an invalid one must not get past construction, whoever builds it.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

from sms_sim.errors import InvalidMessageError

__all__ = [
    "Message",
    "Outcome",
    "SIMULATED_FAILURE",
    "ErrorClass",
    "ReceiptStatus",
    "trusted_message",
    "PHONE_PATTERN",
    "TEXT_MIN_CHARS",
    "TEXT_MAX_CHARS",
]

PHONE_PATTERN = "xxx-xxx-xxxx"
TEXT_MIN_CHARS = 1
TEXT_MAX_CHARS = 100
# [0-9] rather than \d: \d also matches non-ASCII digits such as Arabic-Indic ones.
_PHONE_RE = re.compile(r"[0-9]{3}-[0-9]{3}-[0-9]{4}")


@dataclass(frozen=True, slots=True)
class Message:
    """One SMS: a phone number ``xxx-xxx-xxxx`` and 1-100 printable ASCII characters.

    Raises ``InvalidMessageError`` (a ``ValueError``) naming the field and the bad value.
    """

    id: int
    phone: str
    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.phone, str) or _PHONE_RE.fullmatch(self.phone) is None:
            raise InvalidMessageError(
                f"phone must look like {PHONE_PATTERN} with digits 0-9 (got {self.phone!r})"
            )
        text = self.text
        if not isinstance(text, str) or not TEXT_MIN_CHARS <= len(text) <= TEXT_MAX_CHARS:
            length = len(text) if isinstance(text, str) else "n/a"
            raise InvalidMessageError(
                f"text must be {TEXT_MIN_CHARS}-{TEXT_MAX_CHARS} characters (got {length}: "
                f"{_preview(text)})"
            )
        # For ASCII strings, isprintable() is exactly the range 32-126 (space included).
        if not (text.isascii() and text.isprintable()):
            bad = next(ch for ch in text if not 32 <= ord(ch) <= 126)
            raise InvalidMessageError(
                f"text must be printable ASCII, codes 32-126 (got {bad!r} in {_preview(text)})"
            )


_new = object.__new__
_set = object.__setattr__


def trusted_message(message_id: int, phone: str, text: str) -> Message:
    """Build a ``Message`` without validating it: for the generator only, whose output is
    valid by construction (the generator's tests check every field of every message).
    Validation is a third of the cost of generating a message."""
    message = _new(Message)
    _set(message, "id", message_id)
    _set(message, "phone", phone)
    _set(message, "text", text)
    return message


SIMULATED_FAILURE = "simulated send failure"


class ErrorClass(enum.StrEnum):
    """Why a send failed, which decides what happens next (``policy.retry_delay_after``).

    One backoff for every failure either wastes attempts on a number that will never work or
    hammers a route that asked for less traffic, so the provider's answer is classified once,
    where it is received, and every mode acts on the class.
    """

    PERMANENT = "permanent"  # an invalid or unreachable number, a rejected message: never retry
    TRANSIENT = "transient"  # a timeout, a 5xx, a dropped connection: retry with the backoff
    THROTTLED = "throttled"  # 429 or carrier throttling: retry no sooner than its retry-after


class ReceiptStatus(enum.StrEnum):
    """What the delivery receipt (DLR) that follows an accepted send said, if one came."""

    DELIVERED = "delivered"  # the handset has it
    UNDELIVERED = "undelivered"  # the network gave up on it (switched off for good, barred)
    EXPIRED = "expired"  # still undelivered when its validity period ended
    UNKNOWN = "unknown"  # no receipt ever arrived: a few percent of real sends


Item = TypeVar("Item")


class Outcome(NamedTuple, Generic[Item]):
    """The result of one send attempt by one sender.

    ``message`` is the work item sent: a ``Message`` in the simulator, a send job in the
    durable worker. ``duration_s`` is the measured time the send occupied the sender (in
    virtual mode, simulated seconds). ``ok`` is False for a failed send, which is a result,
    not an error; ``error`` then says why (``SIMULATED_FAILURE`` for a simulated draw).
    A NamedTuple rather than a frozen dataclass because one is built per send on the
    threaded hot path, where a frozen dataclass's ``__init__`` costs several times more.
    """

    message: Item
    sender: int
    duration_s: float
    ok: bool
    error: str | None = None


def _preview(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
