"""``--at`` and ``--in`` on a fixed clock: a time more than a minute in the past and a date
without a time are refused, relative times and "now" are understood (issue 11, item 17)."""

from __future__ import annotations

import pytest

from sms_sim.cli.when import due_at, parse_duration
from sms_sim.dispatch.contract import InvalidRequestError

NOW = 1_796_212_800.0  # 2026-12-02T12:00:00Z


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1h30m", 5400),
    ("1.5h", 5400), ("0s", 0), (" 2h 5m ", 7500),
])
def test_durations_take_a_unit_and_may_add_up(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10", "", "m", "10x", "-5m", "5m10", "1e3s", "in 5m"])
def test_a_duration_without_a_unit_or_with_junk_is_refused(text: str) -> None:
    with pytest.raises(InvalidRequestError, match="not a duration"):
        parse_duration(text)


def test_in_is_relative_to_now_and_now_or_nothing_means_due_now() -> None:
    assert due_at(None, 600.0, NOW) == NOW + 600
    assert due_at(None, None, NOW) is None
    assert due_at("now", None, NOW) is None
    assert due_at(" NOW ", None, NOW) is None


def test_a_time_in_the_past_is_refused_beyond_a_minute_of_grace() -> None:
    assert due_at("2026-12-02T11:59:20Z", None, NOW) is not None  # 40 s ago: allowed
    with pytest.raises(InvalidRequestError,
                       match=r"argument --at: 2026-11-24T15:00:00.000Z is in the past "
                             r"\(now 2026-12-02T12:00:00.000Z\); to send now, leave --at out "
                             r"or say --at now"):
        due_at("2026-11-24T15:00:00Z", None, NOW)
    with pytest.raises(InvalidRequestError, match="in the past"):
        due_at("2026-12-02T11:58:40Z", None, NOW)  # 80 s ago


def test_a_time_ahead_with_or_without_an_offset() -> None:
    assert due_at("2027-01-01T00:00:00Z", None, NOW) == 1_798_761_600.0
    assert due_at("2027-01-01T00:00:00", None, NOW) == 1_798_761_600.0  # no offset: UTC
    assert due_at("2027-01-01T01:00:00+01:00", None, NOW) == 1_798_761_600.0


@pytest.mark.parametrize("text", ["2027-01-01", "20270101"])
def test_a_date_without_a_time_is_refused_with_a_hint(text: str) -> None:
    with pytest.raises(InvalidRequestError,
                       match="is a date without a time; give the time too, e.g. "):
        due_at(text, None, NOW)


def test_a_malformed_time_names_the_option() -> None:
    with pytest.raises(InvalidRequestError, match="argument --at: not an ISO-8601 time: 'soon'"):
        due_at("soon", None, NOW)
    with pytest.raises(InvalidRequestError, match="argument --in: time must be between"):
        due_at(None, 1e12, NOW)
