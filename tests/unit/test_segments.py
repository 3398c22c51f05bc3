"""Segment counting per GSM 03.38: the boundaries carriers bill at, and properties over any text."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sms_sim.segments import Encoding, _BASIC, _EXTENSION, segments

GSM = Encoding.GSM7
UCS = Encoding.UCS2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", (GSM, 1)),
        ("a" * 160, (GSM, 1)),
        ("a" * 161, (GSM, 2)),
        ("a" * 153 * 2, (GSM, 2)),
        ("a" * (153 * 2 + 1), (GSM, 3)),
        ("a" * 153 * 7, (GSM, 7)),
        ("é" * 160, (GSM, 1)),  # Latin letters of the basic table stay GSM-7
        ("€" * 80, (GSM, 1)),  # extension characters count twice
        ("€" * 81, (GSM, 2)),
        ("[" * 80, (GSM, 1)),
        ("a" * 159 + "^", (GSM, 2)),
        # An escape sequence never straddles two parts: 152 + 2 would end part one at 154.
        ("a" * 152 + "{" + "a" * 152, (GSM, 3)),
        ("`", (UCS, 1)),  # the backtick is not in GSM-7: the whole text goes UCS-2
        ("a" * 70 + "`", (UCS, 2)),
        ("ж" * 70, (UCS, 1)),
        ("ж" * 71, (UCS, 2)),
        ("ж" * 67 * 3, (UCS, 3)),
        ("ж" * (67 * 3 + 1), (UCS, 4)),
        ("ж" * 200, (UCS, 3)),
        ("😀" * 35, (UCS, 1)),  # a surrogate pair is two code units
        ("😀" * 36, (UCS, 2)),
        ("a" * 66 + "😀" + "a" * 66, (UCS, 3)),  # a pair never straddles two parts
        ("\t", (UCS, 1)),  # controls other than LF, CR and FF are not GSM-7
        ("line\nbreak\r\f", (GSM, 1)),
    ],
)
def test_boundaries(text: str, expected: tuple[Encoding, int]) -> None:
    assert (segments(text).encoding, segments(text).count) == expected


def test_the_alphabet_tables_have_their_sizes() -> None:
    # 128 basic positions, one of them the escape; ten extension characters in use.
    assert len(_BASIC) == 127
    assert len(_EXTENSION) == 10
    assert _BASIC.isdisjoint(_EXTENSION)


def _units(text: str) -> tuple[Encoding, int]:
    if all(char in _BASIC or char in _EXTENSION for char in text):
        return GSM, sum(2 if char in _EXTENSION else 1 for char in text)
    return UCS, len(text.encode("utf-16-le")) // 2


@given(st.text(max_size=700))
def test_count_is_between_the_plain_division_and_one_part_per_pair(text: str) -> None:
    """The packed count is at least the units divided evenly and at most what packing loses
    (one unit per part), and the encoding is GSM-7 exactly when every character is in it."""
    result = segments(text)
    encoding, count = result.encoding, result.count
    expected_encoding, units = _units(text)
    assert encoding is expected_encoding
    single, part = (160, 153) if encoding is GSM else (70, 67)
    if units <= single:
        assert count == 1
    else:
        assert math.ceil(units / part) <= count <= math.ceil(units / (part - 1))


gsm_text = st.text(alphabet=sorted(_BASIC | _EXTENSION), max_size=500)


@given(gsm_text, st.integers(min_value=0, max_value=500), st.sampled_from("`жあ😀\t"))
def test_adding_a_non_gsm_character_never_decreases_the_count(
    text: str, where: int, char: str
) -> None:
    where = min(where, len(text))
    assert segments(text[:where] + char + text[where:]).count >= segments(text).count


@given(st.text(max_size=400), st.text(max_size=400))
def test_a_longer_text_never_costs_fewer_segments(head: str, tail: str) -> None:
    """Appending never decreases the count within one encoding (a switch to UCS-2 only adds)."""
    before, after = segments(head), segments(head + tail)
    if before.encoding is after.encoding:
        assert after.count >= before.count
