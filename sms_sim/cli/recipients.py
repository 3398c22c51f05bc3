"""Who a message goes to, from ``--to`` and ``--recipients-file`` (``-`` for stdin).

A recipients file is what an operator exports from a spreadsheet or writes by hand: one
number per line, blank lines and ``#`` comments (whole-line, indented or after a number)
ignored, a UTF-8 byte-order mark accepted. A bad number is refused naming its line in the
file ("staff.txt line 7"), which is where the operator has to look, not its position
among the recipients.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from sms_sim.dispatch.contract import InvalidRequestError
from sms_sim.dispatch.validation import validate_phone

__all__ = ["add_recipient_arguments", "recipients_from", "parse_recipients"]

STDIN = "-"


def add_recipient_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", action="append", default=[], metavar="NUMBERS",
                        help="recipient numbers xxx-xxx-xxxx, comma-separated (repeatable)")
    parser.add_argument("--recipients-file", metavar="FILE",
                        help="one number per line; blank lines and # comments ignored; "
                             "'-' reads stdin")


def recipients_from(to: list[str], file: str | None, stdin: BinaryIO) -> list[str] | None:
    """Every number ``--to`` and ``--recipients-file`` name, in order, each checked; None
    when neither was given (an edit that keeps the recipients). Raises
    ``InvalidRequestError`` naming the option, or the file and line, of a bad one."""
    if not to and file is None:
        return None
    numbers: list[str] = []
    position = 0
    for group in to:
        for part in group.split(","):
            if part.strip():
                position += 1
                numbers.append(validate_phone(part.strip(), position,
                                              where=f"--to number {position}"))
    if file is not None:
        numbers.extend(parse_recipients(_read(file, stdin), _source(file)))
    return numbers


def parse_recipients(lines: Iterable[str], source: str) -> list[str]:
    """The numbers in ``lines`` of a recipients file called ``source`` in refusals."""
    numbers: list[str] = []
    for number, line in enumerate(lines, start=1):
        text = line.partition("#")[0].strip()
        if text:
            numbers.append(validate_phone(text, number, where=f"{source} line {number}"))
    return numbers


def _source(file: str) -> str:
    return "stdin" if file == STDIN else f"recipients file {file!r}"


def _read(file: str, stdin: BinaryIO) -> list[str]:
    """The file's lines, decoded as UTF-8 with or without a byte-order mark."""
    if not file.strip():  # Path("") is the working directory: "Is a directory: '.'"
        raise InvalidRequestError("the recipients file name is empty")
    try:
        data = stdin.read() if file == STDIN else Path(file).read_bytes()
        return data.decode("utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"cannot read {_source(file)}: {exc}") from exc
