"""The SMS flags of ``simulate`` and ``plan`` (issue 14) at the edge, in process: each bad
value is one ``prog: error:`` line on stderr and exit 2, never a traceback; good values
reach the configuration as documented."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from sms_sim.cli import main
from sms_sim.cli.model_args import sender_from_args, sms_from_args
from sms_sim.cli.simulate import build_parser
from sms_sim.config import Content, ReceiptModel

SIMULATE = ["20", "2", "0.001", "0", "0.1", "--virtual", "--quiet", "--seed", "1"]
PLAN = ["plan", "--messages", "100", "--mean", "0.01", "--deadline", "60", "--jobs", "1",
        "--replications", "2", "--quiet"]

BAD = [
    (["--sender-type", "landline"], "argument --sender-type: invalid choice"),
    (["--text", ""], "argument --text: text must be a non-empty string"),
    (["--text", "ж" * (67 * 255 + 1)], "text must fit in 255 segments"),
    (["--text", "a", "--text-file", "x"], "not allowed with argument --text"),
    (["--text-file", "/no/such/file"], "cannot read text file '/no/such/file'"),
    (["--per-segment", "-1"], "argument --per-segment"),
    (["--per-segment", "nan"], "argument --per-segment"),
    (["--permanent-rate", "1.5"], "argument --permanent-rate"),
    (["--throttle-rate", "x"], "argument --throttle-rate"),
    (["--retry-after", "-2"], "argument --retry-after"),
    (["--valid-for", "10"], "argument --valid-for: not a duration: '10'"),
    (["--valid-for", "0s"], "argument --valid-for: must be a positive duration"),
    (["--receipt-median", "0"], "argument --receipt-median"),
    (["--receipt-sigma", "-1"], "argument --receipt-sigma"),
    (["--undelivered-rate", "2"], "argument --undelivered-rate"),
    (["--lost-rate", "0.6", "--undelivered-rate", "0.6"],
     "--undelivered-rate + --lost-rate must be <= 1"),
    (["--permanent-rate", "0.6", "--throttle-rate", "0.6"],
     "+ --permanent-rate + --throttle-rate must be <= 1"),
]


def _one_error_line(capsys: pytest.CaptureFixture[str], fragment: str) -> None:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[-1].startswith(("sms-sim: error:", "sms-sim plan: error:")), err
    assert fragment in lines[-1], err
    assert "Traceback" not in err


@pytest.mark.parametrize(("flags", "fragment"), BAD)
def test_simulate_refuses_a_bad_sms_flag_in_one_line(
    flags: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*SIMULATE, *flags], prog="sms-sim")
    assert exit_info.value.code == 2
    _one_error_line(capsys, fragment)


@pytest.mark.parametrize(("flags", "fragment"), [
    *BAD,
    (["--target", "sent"], "argument --target: invalid choice"),
])
def test_plan_refuses_a_bad_sms_flag_in_one_line(
    flags: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*PLAN, "--deliver", "0.5", *flags], prog="sms-sim")
    assert exit_info.value.code == 2
    _one_error_line(capsys, fragment)


def test_a_text_file_that_is_not_utf8_is_refused(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "alert.txt"
    path.write_bytes(b"\xff\xfe bad")
    with pytest.raises(SystemExit) as exit_info:
        main([*SIMULATE, "--text-file", str(path)], prog="sms-sim")
    assert exit_info.value.code == 2
    _one_error_line(capsys, "is not UTF-8 text")


def test_plan_for_receipts_asks_for_a_fraction(capsys: pytest.CaptureFixture[str]) -> None:
    """Receipts never reach every recipient, so --deliver must be said (one line, exit 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main([*PLAN, "--target", "received"], prog="sms-sim")
    assert exit_info.value.code == 2
    _one_error_line(capsys, "messages are never delivered (receipts")


def _args(*flags: str) -> argparse.Namespace:
    return build_parser("sms-sim").parse_args(["1", "1", "0.01", "0", "0", *flags])


def test_flags_reach_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "alert.txt"
    path.write_text("ж" * 200 + "\n", encoding="utf-8")  # the trailing newline is dropped
    args = _args("--sender-type", "longcode", "--text-file", str(path), "--per-segment",
                 "0.01", "--permanent-rate", "0.01", "--throttle-rate", "0.02",
                 "--retry-after", "3", "--valid-for", "1h30m", "--receipt-median", "9")
    sms = sms_from_args(args)
    assert sms.content == Content(text="ж" * 200)
    assert sms.receipts == ReceiptModel(median_s=9.0)
    assert sms.valid_for_s == 5400.0
    sender = sender_from_args(args, 0.01, 0.0, 0.0)
    assert (sender.rate_limit_per_s, sender.per_segment_s, sender.permanent_rate,
            sender.throttle_rate, sender.retry_after_s) == (1.0, 0.01, 0.01, 0.02, 3.0)
    # --rate-limit wins over the preset; no SMS flag leaves the model off.
    assert sender_from_args(_args("--sender-type", "shortcode", "--rate-limit", "7"), 0.01,
                            0.0, 0.0).rate_limit_per_s == 7.0
    assert sms_from_args(_args("--sender-type", "tollfree")).content == Content()
    plain = sms_from_args(_args())
    assert (plain.content, plain.receipts, plain.valid_for_s) == (None, None, None)


def test_simulate_prints_the_sms_lines(capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*SIMULATE, "--sender-type", "shortcode", "--text", "ж" * 200, "--receipts"],
                prog="sms-sim")
    out = capsys.readouterr().out
    assert code == 0
    assert "sent (3.00 per message sent), 60 attempted" in out
    assert "receipts: delivered" in out
