"""The command line through real subprocesses: errors, signals, pipes, JSON, entry points."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, START

# Real threads, processes or wall-clock waits (STYLE.md section 10).
pytestmark = pytest.mark.slow

TIMEOUT_S = 60


def run_cli(*args: str, cmd: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(cmd or START), *args], capture_output=True, text=True,
                          timeout=TIMEOUT_S, cwd=ROOT)


def test_seed_example_runs_and_exits_zero() -> None:
    result = run_cli("400", "4", "0.001", "0.0005", "0.2", "--interval", "0.05", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith("[") and "sent" in lines[0] and "queued" in lines[0]
    assert any(line.startswith("completed: 400 produced") for line in lines)
    assert any(line.startswith("accounting:") and line.endswith(": ok") for line in lines)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["10", "4", "0.01"], "expected 5 positional arguments"),
        (["10", "4", "0.01", "0.001", "0.2", "9"], "unrecognized arguments: 9"),
        # A first word that is neither a command nor a number (issue 11, item 18).
        (["ten", "4", "0.01", "0.001", "0.2"], "unknown command 'ten' (commands: plan, "),
        (["4.5", "4", "0.01", "0.001", "0.2"], "argument num_messages: not an integer: '4.5'"),
        (["10", "4", "x", "0.001", "0.2"], "argument mean_processing_time: not a number: 'x'"),
        (["10", "4", "nan", "0.001", "0.2"], "mean_processing_time: must be a finite number"),
        (["10", "4", "inf", "0.001", "0.2"], "mean_processing_time: must be a finite number"),
        (["-5", "4", "0.01", "0.001", "0.2"], "argument num_messages: must be >= 0 (got '-5')"),
        # The model's own bound, not SQLite's (which the limit said before).
        (["99999999999999999999", "4", "0.01", "0.001", "0.2"],
         "argument num_messages: must be <= 1000000000000"),
        (["10", "4", "0.01", "-0.1", "0.2"], "argument max_deviation: must be >= 0"),
        (["10", "0", "0.01", "0.001", "0.2"], "num_senders must be >= 1 (got 0)"),
        (["10", "4", "0.01", "0.001", "1.2"], "argument failure_rate: must be in [0, 1]"),
        (["10", "4", "0.01", "0.02", "0.2"], "deviation must be <= mean"),
        (["--sender", "0.1,0.2", "1", "1", "0", "0", "0"], "expected MEAN,DEV,RATE"),
        (["--sender", "0.1,0.2,0", "1", "1", "0", "0", "0"], "deviation must be <= mean"),
        (["--interval", "0", "1", "1", "0", "0", "0"], "argument --interval: must be > 0"),
        (["--senders-file", "/no/such.toml", "1", "1", "0", "0", "0"], "cannot read senders file"),
        # Read whole, these ran out of memory with a MemoryError traceback.
        (["--senders-file", "/dev/zero", "1", "1", "0", "0", "0"],
         "senders file '/dev/zero' is over 33554432 bytes"),
        (["--arrivals", "schedule:/dev/zero", "1", "1", "0", "0", "0"],
         "schedule file '/dev/zero' has a line over 4096 characters"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], fragment: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("start.py: error: ")
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("[[sender]\nmean = 1", "is not valid TOML"),
        ("[[sender]]\nmean = 0.1\ndeviation = 0.0", "missing key 'failure_rate'"),
        ("[[sender]]\nmean = 0.1\ndeviation = 0.0\nfailure_rate = 2.0", "failure_rate must be"),
        ("[[sender]]\nmean = 0.1\ndeviation = 0\nfailure_rate = 0\nspeed = 3",
         "unknown key 'speed'"),
        ("[[sender]]\nmean = 0.1\ndeviation = 0\nfailure_rate = 0\ncount = 0", "count must be"),
        ("title = 'x'", "unknown key 'title'"),
        ("", "has no [[sender]] tables"),
        ("[[sender]]\nmean = 'fast'\ndeviation = 0\nfailure_rate = 0", "mean must be a number"),
    ],
)
def test_malformed_senders_file_is_one_line_and_exit_2(
    tmp_path: Path, content: str, fragment: str
) -> None:
    path = tmp_path / "senders.toml"
    path.write_text(content)
    result = run_cli("--senders-file", str(path), "1", "1", "0", "0", "0")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert fragment in result.stderr


def test_heterogeneous_senders_from_flags_and_file(tmp_path: Path) -> None:
    path = tmp_path / "senders.toml"
    path.write_text("[[sender]]\nmean = 0.0005\ndeviation = 0.0\nfailure_rate = 1.0\ncount = 2\n")
    result = run_cli("200", "1", "0.0005", "0", "0", "--sender", "0.0005,0,0",
                     "--senders-file", str(path), "--json", "--quiet", "--seed", "3")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    senders = report["senders"]
    assert len(senders) == 4
    assert senders[0]["failed"] == senders[1]["failed"] == 0
    assert senders[2]["sent"] == senders[3]["sent"] == 0
    assert report["produced"] == report["sent"] + report["failed"] + report["unsent"] == 200


def test_json_report_has_the_documented_keys_and_progress_goes_to_stderr() -> None:
    result = run_cli("100", "2", "0.001", "0", "0.5", "--json", "--seed", "4",
                     "--interval", "0.02")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    for key in ("produced", "sent", "failed", "unsent", "elapsed_s", "avg_send_ms",
                "throughput_per_s", "senders"):
        assert key in report
    assert report["seed"] == 4 and report["accounted"] is True
    assert "completed: 100 produced" in result.stderr


def test_quiet_prints_only_the_final_report() -> None:
    result = run_cli("50", "2", "0.001", "0", "0", "--quiet", "--interval", "0.001")
    assert result.returncode == 0
    assert result.stdout.startswith("completed: 50 produced")


@pytest.mark.parametrize("cmd", [[sys.executable, "-m", "sms_sim"]])
def test_module_entry_point_gives_the_same_cli(cmd: list[str]) -> None:
    result = run_cli("20", "1", "0", "0", "0", "--quiet", cmd=cmd)
    assert result.returncode == 0
    assert "completed: 20 produced" in result.stdout
    assert "--senders-file" in run_cli("--help", cmd=cmd).stdout


def _interrupt(signals: list[int]) -> tuple[int, str, str]:
    """Start a long run, wait for its first progress line, send the signals, collect."""
    proc = subprocess.Popen(
        [*START, "1000000", "4", "0.001", "0", "0.2", "--interval", "0.05", "--seed", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.startswith("["), first
    for signum in signals:
        os.kill(proc.pid, signum)
    out, err = proc.communicate(timeout=TIMEOUT_S)
    return proc.returncode, first + out, err


@pytest.mark.parametrize(
    ("signals", "code"),
    [
        ([signal.SIGINT], 130),
        ([signal.SIGTERM], 143),
        ([signal.SIGINT, signal.SIGINT], 130),  # the second skips the grace period
    ],
)
def test_signals_stop_with_a_report_and_the_documented_exit_code(
    signals: list[int], code: int
) -> None:
    returncode, out, err = _interrupt(signals)
    assert returncode == code, err
    assert "Traceback" not in err
    assert "signal: " in out
    accounting = [line for line in out.splitlines() if line.startswith("accounting:")]
    assert len(accounting) == 1 and accounting[0].endswith(": ok")


def test_piping_into_head_prints_no_traceback() -> None:
    result = subprocess.run(
        f"{sys.executable} start.py 1000000 2 0.001 0 0 --interval 0.02 | head -n 2",
        shell=True, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT,
    )
    assert len(result.stdout.splitlines()) == 2
    assert result.stderr == ""
