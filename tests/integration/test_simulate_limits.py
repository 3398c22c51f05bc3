"""Issue 11 item 19 (the simulator's part): values that used to end in a traceback are
refused in one line with exit 2: a mean of 1e308 anywhere, sender counts beyond the cap
(the total of every source, in every mode; the threaded mode's lower, host-tied cap) and a
thread the OS will not start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sms_sim.config import SENDERS_MAX
from tests.conftest import ROOT, START

pytestmark = pytest.mark.slow  # subprocesses

TIMEOUT_S = 60


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*START, *args], capture_output=True, text=True, timeout=TIMEOUT_S,
                          cwd=ROOT)


def assert_one_line_exit_2(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert fragment in result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["10", "1", "1e308", "0", "0", "--virtual"], "mean must be <= 1e+09 (got 1e+308)"),
        (["10", "1", "1e308", "0", "0"], "mean must be <= 1e+09"),
        (["10", "1", "0.01", "0", "0", "--sender", "1e308,0,0", "--virtual"],
         "mean must be <= 1e+09"),
        (["10", "1", "0.01", "0", "0", "--backoff-cap", "1e308", "--virtual"],
         "--backoff-cap must be <= 1e+09"),
        (["10", "1", "0.01", "0", "0", "--duration", "1e308", "--virtual"],
         "--duration must be <= 1e+09"),
        # The refusals named the model's fields ("monitor_interval", "cap ... >= base").
        (["10", "1", "0.01", "0", "0", "--interval", "1e308"], "--interval must be <= 1e+09"),
        (["10", "1", "0.01", "0", "0", "--max-attempts", "2", "--backoff-cap", "0"],
         "--backoff-cap must be >= --backoff-base"),
        (["10", "1", "0.01", "0", "0", "--valid-for", "99999999999h"],
         "--valid-for must be <= 1e+09"),
        (["10", "100000000000", "0.01", "0", "0", "--virtual"],
         f"argument num_senders: must be <= {SENDERS_MAX}"),
        (["10", str(SENDERS_MAX), "0.01", "0", "0", "--sender", "0.01,0,0", "--virtual"],
         f"senders must be <= {SENDERS_MAX} in all (got {SENDERS_MAX + 1})"),
        (["10", "20000", "0.01", "0", "0"], "for real threads on this host"),
    ],
)
def test_out_of_range_values_are_one_line_and_exit_2(args: list[str], fragment: str) -> None:
    assert_one_line_exit_2(run_cli(*args), fragment)


def test_a_senders_file_counts_towards_the_one_cap(tmp_path: Path) -> None:
    """Two tables of 60,000 are each under the per-table limit; together they are not, and
    the file is refused before 120,000 senders are built."""
    table = "[[sender]]\nmean = 0.01\ndeviation = 0.0\nfailure_rate = 0.0\ncount = 60000\n"
    path = tmp_path / "many.toml"
    path.write_text(table * 2, encoding="utf-8")
    result = run_cli("--senders-file", str(path), "10", "0", "0.01", "0", "0", "--virtual")
    assert_one_line_exit_2(result, f"holds more than {SENDERS_MAX} senders in all")


def run_refusing_threads(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """The CLI with ``argv`` in a child whose fourth and later threads the "OS" refuses;
    the child also checks that no thread is left running when the command returns."""
    code = (
        "import sys, threading\n"
        "original = threading.Thread.start\n"
        "calls = []\n"
        "def start(self):\n"
        "    calls.append(self.name)\n"
        "    if len(calls) > 3:\n"
        "        raise RuntimeError(\"can't start new thread\")\n"
        "    original(self)\n"
        "threading.Thread.start = start\n"
        "from sms_sim.cli import main\n"
        f"code = main({argv!r}, prog='start.py')\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "sys.exit(code)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=TIMEOUT_S, cwd=ROOT)


def test_a_thread_the_os_refuses_is_one_line_and_exit_2() -> None:
    """The OS may refuse a thread under the cap (other processes share its limits): the
    threads already started are stopped and the refusal is one line. Thread creation is made
    to fail from the fourth thread on, inside the child only."""
    result = run_refusing_threads(["100", "8", "0.001", "0", "0", "-q"])
    assert_one_line_exit_2(result, "refused to start thread sender-2")
    assert "can't start new thread" in result.stderr


def test_the_worker_refuses_sender_counts_the_host_cannot_run(tmp_path: Path) -> None:
    """The worker runs one thread per sender too: 1e11 senders was a MemoryError traceback,
    and a thread the OS refuses stops the started ones, one line, exit 2, nothing claimed."""
    db = tmp_path / "w.db"
    assert run_cli("submit", "x", "--to", "555-000-0001", "--db", str(db)).returncode == 0
    huge = run_cli("worker", "--db", str(db), "--senders", "100000000000")
    assert_one_line_exit_2(huge, "must be <= 100000")
    result = run_refusing_threads(["worker", "--db", str(db), "--senders", "8", "-q",
                                   "--exit-when-idle"])
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and "can't start new thread" in result.stderr
    assert "Traceback" not in result.stderr
    check = run_cli("show", "1", "--db", str(db))
    assert "pending 1" in check.stdout or "1 pending" in check.stdout, check.stdout
