"""How many SMS segments a text costs, per GSM 03.38: the unit carriers bill and throttle.

A text is GSM-7 when every character is in the GSM default alphabet (the basic table costs one
septet, the extension table two: an escape and the character); otherwise the whole text is
UCS-2, where a character costs one 16-bit code unit, or two for a surrogate pair (most emoji).
One segment holds 160 septets or 70 code units; a longer text is split into parts of 153 or 67
(the rest of each part is the concatenation header). A part never ends in the middle of an
escape sequence or a surrogate pair, so the count is the greedy packing real encoders produce,
which can be one more than ``ceil(units / 153)``.

Counted from the text the system stores, which is what reaches the provider: a recipient's
handset sees the same parts.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "Encoding",
    "Segments",
    "segments",
    "GSM7_SINGLE",
    "GSM7_PART",
    "UCS2_SINGLE",
    "UCS2_PART",
]

GSM7_SINGLE = 160  # septets in a one-part message
GSM7_PART = 153  # septets per part of a concatenated message (7 go to the header)
UCS2_SINGLE = 70  # UTF-16 code units in a one-part message
UCS2_PART = 67

# The GSM 03.38 default alphabet, basic table (127 characters: position 0x1B is the escape).
_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each costs an escape septet plus its own.
_EXTENSION = frozenset("\f^{}\\[~]|€")
_GSM7 = _BASIC | _EXTENSION
# ASCII characters outside GSM-7: the backtick and the control characters but LF, CR and FF.
_ASCII_NOT_GSM7 = frozenset(chr(code) for code in range(128)) - _GSM7


class Encoding(enum.StrEnum):
    GSM7 = "GSM-7"
    UCS2 = "UCS-2"


@dataclass(frozen=True, slots=True)
class Segments:
    """The encoding a text needs and the number of segments it is sent as (at least 1: an
    empty text still takes one). Unpacks as ``encoding, count = segments(text)``."""

    encoding: Encoding
    count: int

    def __iter__(self) -> Iterator[Encoding | int]:
        return iter((self.encoding, self.count))


def segments(text: str) -> Segments:
    """The encoding and segment count of ``text`` (see the module docstring for the rules)."""
    if text.isascii():
        # The fast path for the simulator's own texts: a few C-level scans, no Python loop
        # unless an extension character makes the packing matter.
        if _ASCII_NOT_GSM7.isdisjoint(text):
            extension = sum(text.count(char) for char in "^{}\\[~]|\f")
            if not extension:
                return Segments(Encoding.GSM7, _parts(len(text), GSM7_SINGLE, GSM7_PART))
            return _gsm7(text)
        return Segments(Encoding.UCS2, _parts(len(text), UCS2_SINGLE, UCS2_PART))
    if _GSM7.issuperset(text):
        return _gsm7(text)
    return _ucs2(text)


def _parts(units: int, single: int, part: int) -> int:
    """Parts for ``units`` equal-sized units (nothing can straddle a part boundary)."""
    if units <= single:
        return 1
    return -(-units // part)


def _gsm7(text: str) -> Segments:
    sizes = [2 if char in _EXTENSION else 1 for char in text]
    return Segments(Encoding.GSM7, _packed(sizes, GSM7_SINGLE, GSM7_PART))


def _ucs2(text: str) -> Segments:
    sizes = [2 if ord(char) > 0xFFFF else 1 for char in text]
    return Segments(Encoding.UCS2, _packed(sizes, UCS2_SINGLE, UCS2_PART))


def _packed(sizes: list[int], single: int, part: int) -> int:
    """Parts when units of 1 or 2 are packed in order and a 2 never straddles two parts."""
    if sum(sizes) <= single:
        return 1
    count, used = 1, 0
    for size in sizes:
        if used + size > part:
            count += 1
            used = 0
        used += size
    return count
