"""What a message may say (issue 11, item 19): not only whitespace, no control character
but the line break; everything else (accents, emoji and their joiners) is kept as typed."""

from __future__ import annotations

import pytest

from sms_sim.dispatch.contract import InvalidRequestError
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.validation import validate_content


@pytest.mark.parametrize("text", [
    "Office closed today", "Line one\nLine two", "-5 degrees", " padded ",
    "caf\u00e9 \U0001f468\u200d\U0001f469",
])
def test_ordinary_text_is_kept_exactly(text: str) -> None:
    assert validate_content(text) == text


@pytest.mark.parametrize("text", [" ", "\n\n", " \u3000 "])
def test_whitespace_only_is_refused(text: str) -> None:
    with pytest.raises(InvalidRequestError, match="content must not be only whitespace"):
        validate_content(text)


@pytest.mark.parametrize(("text", "shown", "at"), [
    ("title\x1b]0;owned\x07", r"'\x1b'", 6),
    ("tab\there", r"'\t'", 4),
    ("windows\r\n", r"'\r'", 8),
    ("nul\x00", r"'\x00'", 4),
    ("del\x7f", r"'\x7f'", 4),
    ("c1\x9b2J", r"'\x9b'", 3),
])
def test_control_characters_are_refused_naming_the_first(text: str, shown: str,
                                                         at: int) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        NewMessage.validated(content=text, recipients=["555-010-0001"])
    assert str(caught.value) == (f"content must not contain control characters (got {shown} "
                                 f"at character {at}; only a line break is allowed)")
