"""When a message is due, as an operator says it: ``--at`` an ISO-8601 time or ``now``, or
``--in`` a duration (``90s``, ``10m``, ``2h``, ``1d``, ``1h30m``).

Parsing is kept apart from the clock: argparse only checks the spelling, and ``due_at``
turns the words into epoch seconds against a ``now`` the caller passes in, so the rules
(a time in the past or a date without a time is refused) are tested on a fixed clock.
"""

from __future__ import annotations

import argparse
import datetime
import re

from sms_sim.dispatch.contract import InvalidRequestError
from sms_sim.dispatch.validation import PastTimeError, format_utc, validate_due, validate_time

__all__ = ["add_time_arguments", "due_at", "parse_duration", "duration_argument", "describe_due"]

_DURATION_RE = re.compile(r"(?:(\d+(?:\.\d+)?)([smhd]))")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_EXAMPLE = "2026-11-24T15:00:00Z"


def add_time_arguments(parser: argparse.ArgumentParser, *, default: str) -> None:
    """``--at`` and ``--in``, one or the other; ``default`` says what leaving both out means."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--at", metavar="TIME",
                       help=f"send at this ISO-8601 time, e.g. {_EXAMPLE} (no offset means "
                            "UTC), or 'now'; a time more than a minute in the past, or a date "
                            f"without a time, is refused ({default})")
    group.add_argument("--in", dest="in_", type=duration_argument, metavar="DURATION",
                       help="send this long from now: 90s, 10m, 2h, 1d or 1h30m")


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``10m``, ``2h``, ``1d`` or a sum such as ``1h30m``; a unit is
    required, since a bare ``10`` could mean seconds or minutes."""
    compact = text.strip().replace(" ", "")
    parts = _DURATION_RE.findall(compact)
    if not compact or "".join(number + unit for number, unit in parts) != compact:
        raise InvalidRequestError(f"not a duration: {text!r} (e.g. 90s, 10m, 2h, 1d, 1h30m)")
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def duration_argument(text: str) -> float:
    """The argparse type of a duration option (``parse_duration``; a usage error)."""
    try:
        return parse_duration(text)
    except InvalidRequestError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def due_at(at: str | None, in_s: float | None, now: float, *,
           past_ok: bool = False) -> float | None:
    """The due time ``--at``/``--in`` ask for at ``now``, or None for "now" (the store then
    uses its own now). Raises ``InvalidRequestError`` naming the option (``PastTimeError``
    for an ``--at`` too far past, unless ``past_ok``)."""
    if in_s is not None:
        try:
            return validate_time(now + in_s)
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"argument --in: {exc}") from None
    if at is None or at.strip().lower() == "now":
        return None
    try:
        moment = _parse_at(at)
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"argument --at: {exc}") from None
    if past_ok:
        return moment
    try:
        return validate_due(moment, now)
    except PastTimeError as exc:
        raise PastTimeError(f"argument --at: {exc}; to send now, leave --at out or "
                            "say --at now") from None


def _parse_at(text: str) -> float:
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        pass
    else:  # fromisoformat would read it as midnight UTC, rarely what was meant
        raise InvalidRequestError(
            f"{text!r} is a date without a time; give the time too, e.g. {text}T15:00:00Z, "
            "or use --in")
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequestError(
            f"not an ISO-8601 time: {text!r} (e.g. {_EXAMPLE}, or 'now')") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    try:
        return validate_time(moment.timestamp())
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"{exc} in {text!r}") from None


def describe_due(epoch_s: float) -> str:
    """``2026-11-24T15:00:00.000Z (local 2026-11-24 16:00:00 CET)``: UTC, which is what the
    store keeps and every other command prints, and the local time an operator thinks in."""
    try:
        local = datetime.datetime.fromtimestamp(epoch_s).astimezone()
    except (OverflowError, OSError, ValueError):  # beyond what the local calendar holds
        return format_utc(epoch_s)
    return f"{format_utc(epoch_s)} (local {local.strftime('%Y-%m-%d %H:%M:%S %Z')})"
