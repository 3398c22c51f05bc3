"""Recipients as operators write them (issue 11, item 19): a file exported with a byte-order
mark, comments anywhere, stdin, and refusals that name the file and line to fix."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from sms_sim.cli.recipients import parse_recipients, recipients_from
from sms_sim.dispatch.contract import InvalidRequestError

NO_STDIN = io.BytesIO(b"")


def test_a_byte_order_mark_indented_and_inline_comments_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "staff.txt"
    path.write_bytes("\ufeff555-010-0001\n  # the night shift\n\n555-010-0002  # Ana\n"
                     "\t555-010-0003\r\n".encode())
    assert recipients_from([], str(path), NO_STDIN) == \
        ["555-010-0001", "555-010-0002", "555-010-0003"]


def test_a_bad_number_is_refused_naming_the_file_and_its_line(tmp_path: Path) -> None:
    path = tmp_path / "staff.txt"
    path.write_text("# header\n555-010-0001\n\n555-010-0002\n# more\n\n555-0100-03\n")
    with pytest.raises(InvalidRequestError,
                       match=r"^recipients file '.*staff.txt' line 7 must look like "
                             r"xxx-xxx-xxxx or \+E.164 \(\+ and 8-15 digits; got '555-0100-03'\)$"):
        recipients_from([], str(path), NO_STDIN)


def test_dash_reads_stdin_and_to_numbers_are_named_by_their_place() -> None:
    stdin = io.BytesIO("\ufeff555-010-0001\n555-010-0002 # x\n".encode())
    assert recipients_from(["555-010-0009"], "-", stdin) == \
        ["555-010-0009", "555-010-0001", "555-010-0002"]
    with pytest.raises(InvalidRequestError, match="^stdin line 2 must look like"):
        parse_recipients(["555-010-0001", "oops"], "stdin")
    with pytest.raises(InvalidRequestError, match=r"^--to number 3 must look like .*'55'"):
        recipients_from(["555-010-0001,555-010-0002", " 55 "], None, NO_STDIN)


def test_no_recipient_option_means_none_and_an_unreadable_file_is_one_line(
        tmp_path: Path) -> None:
    assert recipients_from([], None, NO_STDIN) is None
    (tmp_path / "latin1.txt").write_bytes(b"555-010-0001 # caf\xe9\n")
    for name in ("missing.txt", "latin1.txt"):
        with pytest.raises(InvalidRequestError, match="^cannot read recipients file "):
            recipients_from([], str(tmp_path / name), NO_STDIN)
