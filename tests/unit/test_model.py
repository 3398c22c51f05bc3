"""Message validation: every field rule, and errors that name the field and the value."""

from __future__ import annotations

import pytest

from sms_sim import InvalidMessageError, Message
from sms_sim.errors import SmsSimError


def test_valid_message_is_frozen() -> None:
    message = Message(7, "012-345-6789", "hello ~ world")
    assert (message.id, message.phone, message.text) == (7, "012-345-6789", "hello ~ world")
    with pytest.raises(AttributeError):
        message.text = "changed"  # type: ignore[misc]


@pytest.mark.parametrize(
    "phone",
    [
        "",
        "0123456789",
        "012-345-678",
        "012-345-67890",
        "012 345 6789",
        "a12-345-6789",
        "012-345-6789\n",
        "\u0661\u0662\u0663-345-6789",  # Arabic-Indic digits match \d but are not 0-9
    ],
)
def test_bad_phone_is_rejected_naming_the_field_and_value(phone: str) -> None:
    with pytest.raises(InvalidMessageError) as caught:
        Message(1, phone, "hi")
    assert "phone" in str(caught.value)
    assert repr(phone) in str(caught.value)


@pytest.mark.parametrize("text", ["", "x" * 101])
def test_text_length_outside_1_to_100_is_rejected(text: str) -> None:
    expected = rf"text must be 1-100 characters \(got {len(text)}"
    with pytest.raises(InvalidMessageError, match=expected):
        Message(1, "000-000-0000", text)


@pytest.mark.parametrize("bad", ["\t", "\n", "\x1f", "\x7f", "é", "\u2603"])
def test_non_printable_ascii_is_rejected(bad: str) -> None:
    with pytest.raises(InvalidMessageError, match="printable ASCII") as caught:
        Message(1, "000-000-0000", f"ok{bad}ok")
    assert repr(bad) in str(caught.value)


@pytest.mark.parametrize(("phone", "text"), [
    ("999-999-9999", " "),
    ("000-000-0000", "~" * 100),
    ("000-000-0000", "".join(chr(c) for c in range(32, 127))),
])
def test_boundaries_are_accepted(phone: str, text: str) -> None:
    message = Message(0, phone, text)
    assert (message.phone, message.text) == (phone, text)


def test_validation_errors_are_value_errors_and_sms_sim_errors() -> None:
    with pytest.raises(ValueError):
        Message(1, "bad", "x")
    assert issubclass(InvalidMessageError, SmsSimError)
