"""Product output at the edge: strict JSON (no ``Infinity``), terminal-safe text, and a
write that fails is one typed error (issue 11, items 6 and 19)."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence

import pytest

from sms_sim.cli import inspection, main
from sms_sim.cli.common import OutputClosedError, Terminated, emit, json_text
from sms_sim.cli.views import printable


def test_json_text_maps_non_finite_numbers_to_null_everywhere() -> None:
    value = {"a": math.inf, "b": [-math.inf, 1.5, {"c": math.nan}], "d": (2, math.nan)}
    text = json_text(value)
    assert text == '{"a": null, "b": [null, 1.5, {"c": null}], "d": [2, null]}'
    json.loads(text, parse_constant=lambda name: pytest.fail(f"not JSON: {name}"))


@pytest.mark.parametrize(("text", "shown"), [
    ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),
    ("two\nlines\tand\r", "two\\nlines\\tand\\r"),
    ("c1 \x9b csi", "c1 \\x9b csi"),
    ("right\u202eleft", "right\\u202eleft"),
    ("caf\u00e9 \U0001f600", "caf\u00e9 \U0001f600"),
])
def test_printable_escapes_what_could_act_on_a_terminal(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert printable(None) == "-"


class _Full(io.StringIO):
    def flush(self) -> None:
        raise OSError(28, "No space left on device")


def test_emit_turns_a_failed_write_into_output_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdout", _Full())
    with pytest.raises(OutputClosedError, match="No space left on device"):
        emit("hello")
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr("sys.stdout", closed)
    with pytest.raises(OutputClosedError):
        emit("hello")


@pytest.mark.parametrize(("stop", "code", "name"), [
    (KeyboardInterrupt, 130, "SIGINT"), (Terminated, 143, "SIGTERM")])
def test_a_signal_in_a_command_is_one_line_and_its_exit_code(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        stop: type[BaseException], code: int, name: str) -> None:
    # Ctrl-C in a submit, a cancel's wait or a prune printed a KeyboardInterrupt traceback.
    def interrupted(argv: Sequence[str], *, prog: str) -> int:
        raise stop

    monkeypatch.setattr(inspection, "main", interrupted)
    assert main(["list"], prog="sms-sim") == code
    assert capsys.readouterr().err == f"sms-sim: stopped by {name}\n"
