"""What only a real process shows (issue 11, items 6, 13, 14 and 17): output that cannot be
written (a full disk, a reader gone), a database in a directory the reader cannot write,
the local time zone, and the worker's JSON report."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest

from tests.conftest import START

# Real processes (STYLE.md section 10).
pytestmark = pytest.mark.slow

TIMEOUT_S = 60


def cli(*args: str, cwd: Path, stdout: int | IO[str] | None = subprocess.PIPE,
        env: dict[str, str] | None = None, prefix: tuple[str, ...] = (),
        closed_stdout: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the CLI; ``closed_stdout``: with no standard output at all (``>&-``)."""
    return subprocess.run([*prefix, *START, *args], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=TIMEOUT_S, cwd=cwd,
                          env=None if env is None else {**os.environ, **env},
                          preexec_fn=(lambda: os.close(1)) if closed_stdout else None)


@contextmanager
def closed_pipe() -> Iterator[int]:
    """The write end of a pipe whose reader has already gone: like ``| head`` once head
    has exited, but every time, not only when the output outruns the pipe's buffer."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        yield write_end
    finally:
        os.close(write_end)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database holding message 1 (two recipients, scheduled far ahead)."""
    made = cli("submit", "hello", "--to", "555-010-0001,555-010-0002", "--at",
               "2099-11-24T15:00:00Z", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    return tmp_path / "sms_sim.db"


def messages_in(db: Path) -> int:
    listed = cli("list", "--json", cwd=db.parent)
    return len(json.loads(listed.stdout)["messages"])


# --- item 6: output that cannot be written --------------------------------------------------


@pytest.mark.parametrize("closed", [False, True], ids=["full disk", "closed"])
def test_a_submit_whose_answer_cannot_be_written_exits_141_and_says_the_id_on_stderr(
        db: Path, closed: bool) -> None:
    with open("/dev/full", "w") as full:
        ran = cli("submit", "again", "--to", "555-010-0003", stdout=full, cwd=db.parent,
                  closed_stdout=closed)
    assert ran.returncode == 141, ran.stderr
    assert len(ran.stderr.splitlines()) == 1 and "Traceback" not in ran.stderr
    assert ran.stderr.startswith("start.py submit: stdout could not be written (")
    assert "done anyway: submitted message 2: 1 recipient," in ran.stderr
    assert messages_in(db) == 2  # committed, and a retry can tell it is


@pytest.mark.parametrize("args", [
    ["list"], ["show", "1", "--json"], ["show", "1"], ["deliveries", "1", "--csv"], ["dead"],
    ["check"], ["--help"], ["submit", "--help"], ["--version"],
    ["worker", "--exit-when-idle", "--mean", "0", "--deviation", "0"],
    ["worker", "--exit-when-idle", "--json", "--quiet"],
    ["20", "1", "0", "0", "0", "--json", "--quiet", "--seed", "1"],
    ["20", "1", "0", "0", "0", "--seed", "1", "--virtual"],
    ["plan", "--messages", "50", "--mean", "0.01", "--deadline", "10", "--senders", "1,2",
     "--replications", "2", "--jobs", "1", "--quiet"],
    ["plan", "--messages", "50", "--mean", "0.01", "--deadline", "10", "--senders", "1,2",
     "--replications", "2", "--jobs", "1", "--quiet", "--json"],
])
# "closed": started with no stdout at all (``>&-``); every command ended on a traceback,
# exit 1, a submit having committed without saying its id.
@pytest.mark.parametrize("target", ["full disk", "closed pipe", "closed"])
def test_every_command_exits_141_without_a_traceback_when_output_is_lost(
        db: Path, args: list[str], target: str) -> None:
    if args[0] == "worker":  # nothing left scheduled, so --exit-when-idle exits
        assert cli("cancel", "1", cwd=db.parent).returncode == 0
    if target == "full disk":
        with open("/dev/full", "w") as full:
            ran = cli(*args, stdout=full, cwd=db.parent)
    elif target == "closed":
        ran = cli(*args, stdout=subprocess.DEVNULL, closed_stdout=True, cwd=db.parent)
    else:
        with closed_pipe() as write_end:
            ran = cli(*args, stdout=write_end, cwd=db.parent)
    assert ran.returncode == 141, ran.stderr
    assert "Traceback" not in ran.stderr and "Exception ignored" not in ran.stderr, ran.stderr
    # A reader gone from a pipe goes unsaid; a full disk (or no stdout) was silent too.
    said = "could not be written" in ran.stderr
    assert said == (target != "closed pipe"), ran.stderr


def test_sigterm_during_a_large_submit_leaves_nothing_and_frees_its_key(tmp_path: Path) -> None:
    # SIGTERM killed the loader outright: a hidden half-loaded message held its key, and
    # the retry was refused as "still being submitted" for ABANDONED_LOAD_S (10 min).
    numbers = tmp_path / "staff.txt"
    numbers.write_text("".join(f"555-{i // 10000:03d}-{i % 10000:04d}\n"
                               for i in range(60_000)))
    db = tmp_path / "sms_sim.db"
    command = [*START, "submit", "drill", "--recipients-file", str(numbers),
               "--idempotency-key", "k", "--db", str(db)]
    loader = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not _loading(db):
            assert loader.poll() is None and time.monotonic() < deadline, "never seen loading"
            time.sleep(0.005)
        loader.send_signal(signal.SIGTERM)
        out, err = loader.communicate(timeout=TIMEOUT_S)
    finally:
        if loader.poll() is None:
            loader.kill()
    assert loader.returncode == 143, err
    assert err.strip().endswith("stopped by SIGTERM") and "Traceback" not in err, err
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM deliveries").fetchone() == (0,)
    conn.close()
    again = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert again.returncode == 0 and "60000 recipients" in again.stdout, again.stderr


def _loading(db: Path) -> bool:
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            found = conn.execute("SELECT 1 FROM messages WHERE status = 'loading'").fetchone()
        conn.close()
    except sqlite3.OperationalError:  # the schema is still being made
        return False
    return found is not None


# --- item 13: read-only inspection ----------------------------------------------------------


def read_only_directory(directory: Path) -> tuple[str, ...]:
    """Make ``directory`` unwritable for the commands run with the prefix returned.

    Unprivileged, that is ``chmod``. Root ignores permission bits, so as root the child
    gets a private mount namespace in which the directory is a read-only bind mount
    (nothing outside the child sees it); without ``unshare`` rights the test is skipped.
    """
    if os.geteuid() != 0:
        for path in directory.iterdir():
            path.chmod(0o444)
        directory.chmod(0o555)
        return ()
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-m", "true"],
                                         capture_output=True).returncode != 0:
        pytest.skip("running as root, where chmod restricts nothing, and no private mount "
                    "namespace (unshare -m) is available to make a read-only directory")
    script = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
    return (unshare, "-m", "sh", "-c", script, "sh", str(directory))


def test_inspection_works_on_a_copy_in_a_directory_the_reader_cannot_write(
        db: Path, tmp_path: Path) -> None:
    backup = tmp_path / "backup"
    backup.mkdir()
    shutil.copy(db, backup / "copy.db")
    prefix = read_only_directory(backup)
    try:
        copy = str(backup / "copy.db")
        for args, expected in [
            (["list"], "1  scheduled  v1  due 2099-11-24T15:00:00.000Z  2 recipients"),
            (["show", "1"], "message 1: scheduled, version 1, priority 0"),
            (["deliveries", "1"], "delivery 1  555-010-0001  pending"),
            (["dead"], "no dead deliveries"),
            (["check"], f"{copy!r}: ok (integrity check passed)"),
        ]:
            ran = cli(*args, "--db", copy, cwd=tmp_path, prefix=prefix)
            assert (ran.returncode, ran.stderr) == (0, ""), (args, ran.stderr)
            assert ran.stdout.startswith(expected), (args, ran.stdout)
        refused = cli("cancel", "1", "--db", copy, cwd=tmp_path, prefix=prefix)
        assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1
        assert f"cannot write database {copy!r}: the file or its directory is read-only" \
            in refused.stderr
        assert sorted(p.name for p in backup.iterdir()) == ["copy.db"]
    finally:
        backup.chmod(0o755)


# --- item 17: the due time in UTC and local time --------------------------------------------


def test_submit_echoes_the_due_time_in_utc_and_in_local_time(tmp_path: Path) -> None:
    ran = cli("submit", "drill", "--to", "555-010-0001", "--at", "2099-11-24T15:00:00Z",
              cwd=tmp_path, env={"TZ": "EST+5"})
    assert ran.stdout == ("submitted message 1: 1 recipient, due 2099-11-24T15:00:00.000Z "
                          "(local 2099-11-24 10:00:00 EST), version 1; 1 segment (GSM-7) each\n")


# --- item 14: the worker's report as JSON ---------------------------------------------------


def test_the_worker_prints_its_final_report_as_one_json_object(db: Path) -> None:
    assert cli("cancel", "1", cwd=db.parent).returncode == 0  # --exit-when-idle: not waiting
    assert cli("submit", "now", "--to", "555-010-0003,555-010-0004",
               cwd=db.parent).returncode == 0
    ran = cli("worker", "--exit-when-idle", "--json", "--mean", "0", "--deviation", "0",
              "--seed", "3", cwd=db.parent)
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert (report["sent"], report["claimed"], report["accounted"], report["seed"]) == \
        (2, 2, True, 3)
    assert report["stopped_by"] == "completed" and len(report["senders"]) == 4
    assert ran.stderr.startswith("worker-") and "accounting: claimed 2 = sent 2" in ran.stderr
