"""The dispatch commands through real subprocesses: happy path, and every bad input is one
line on stderr with a non-zero exit and no change to the database."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.stores import open_store
from tests.conftest import ROOT, START, phones

# Real threads, processes or wall-clock waits (STYLE.md section 10).
pytestmark = pytest.mark.slow

TIMEOUT_S = 60


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*START, *args], capture_output=True, text=True, timeout=TIMEOUT_S,
                          cwd=cwd)


def snapshot(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return [*conn.execute("SELECT * FROM messages ORDER BY id"),
                *conn.execute("SELECT * FROM deliveries ORDER BY id")]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with message 1 scheduled far ahead and message 2 dispatching."""
    root = tmp_path_factory.mktemp("cli")
    path = root / "sms_sim.db"
    first = cli("submit", "far ahead", "--to", "555-000-0001,555-000-0002",
                "--at", "2100-01-01T00:00:00Z", cwd=root)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("submitted message 1: 2 recipients, due 2100-01-01T00:00:00")
    second = cli("submit", "now", "--to", "555-000-0003", "--idempotency-key", "k", cwd=root)
    assert second.returncode == 0, second.stderr
    with sqlite3.connect(path) as conn:  # as a worker's claim would: dispatch has begun
        conn.execute("UPDATE messages SET status = 'dispatching', dispatch_started_at = 0 "
                     "WHERE id = 2")
    return path


@pytest.mark.parametrize(("args", "code", "fragment"), [
    (["submit", "", "--to", "555-000-0001"], 2, "content must be 1-1600 characters (got 0)"),
    (["submit", "x", "--to", "555-0000-001"], 2, "--to number 1 must look like xxx-xxx-xxxx"),
    (["submit", "x"], 2, "at least 1 recipient"),
    (["submit", "x", "--to", "555-000-0001", "--at", "soon"], 2, "not an ISO-8601 time"),
    (["submit", "x", "--recipients-file", "/no/such"], 2, "cannot read recipients file"),
    (["submit", "x", "--recipients-file", ""], 2, "the recipients file name is empty"),
    (["edit", "1", "--content", "y"], 2, "the following arguments are required: --version"),
    (["edit", "1", "--version", "1"], 2, "an edit must change content, schedule, recipients"),
    (["edit", "99", "--version", "1", "--content", "y"], 1, "no message with id 99"),
    (["edit", "1", "--version", "7", "--content", "y"], 1, "is at version 1, not 7"),
    (["edit", "2", "--version", "1", "--content", "y"], 1, "locked: dispatching since 1970"),
    (["edit", "x", "--version", "1"], 2, "argument id: not an integer: 'x'"),
    (["cancel", "99"], 1, "no message with id 99"),
    (["show", "99"], 1, "no message with id 99"),
    (["dead", "--message", "99"], 1, "no message with id 99"),
    (["list", "--status", "done"], 2, "invalid choice: 'done'"),
    (["worker", "--senders", "0"], 2, "senders must be >= 1 (got 0)"),
    (["worker", "--lease", "0"], 2, "argument --lease: must be > 0"),
    (["worker", "--mean", "0.01", "--deviation", "0.02"], 2, "--deviation must be <= --mean"),
    (["worker", "--ledger", "/no/such/dir/ledger.db"], 1, "cannot open provider ledger"),
    (["worker", "--lease", "1e308"], 2, "lease must be > 0 and at most 86,400 seconds"),
    # Sends that end after their lease are sent again and recorded dead (22 of 2,000).
    (["worker", "--lease", "0.02", "--mean", "0.01"], 2,
     "--lease 0.02 s is shorter than twice the slowest send (0.011 s) plus a claim round"),
    (["show", "99999999999999999999"], 2, "must be <= 9223372036854775807"),
    (["list", "--limit", "99999999999999999999"], 2, "must be <= 9223372036854775807"),
    # Bytes that are not UTF-8 in an argument reach Python as lone surrogates.
    (["submit", "caf\udce9", "--to", "555-000-0001"], 2, "content is not valid UTF-8 text"),
    (["submit", "x", "--to", "555-000-0001", "--idempotency-key", "k\udcff"], 2,
     "idempotency key is not valid UTF-8 text"),
    (["edit", "1", "--version", "1", "--content", "\udcff"], 2, "content is not valid UTF-8"),
])
def test_bad_input_is_one_line_nonzero_and_changes_nothing(
        db: Path, args: list[str], code: int, fragment: str) -> None:
    before = snapshot(db)
    result = cli(*args, cwd=db.parent)
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"start.py {args[0]}: error: ")
    assert fragment in result.stderr
    assert snapshot(db) == before


def test_text_in_the_database_that_is_not_utf8_is_one_line_everywhere(tmp_path: Path) -> None:
    assert cli("submit", "hi", "--to", "555-000-0001", cwd=tmp_path).returncode == 0
    with sqlite3.connect(tmp_path / "sms_sim.db") as conn:
        conn.execute("UPDATE messages SET content = CAST(x'ff' AS TEXT)")
    for command in (["show", "1"], ["list"], ["worker", "--exit-when-idle"]):
        result = cli(*command, cwd=tmp_path)
        assert result.returncode == 1, command
        assert "Traceback" not in result.stderr
        assert "Could not decode to UTF-8 column 'content'" in result.stderr
        assert len([line for line in result.stderr.splitlines() if "decode" in line]) == 1


@pytest.mark.parametrize(("content", "fragment"), [
    (b"not a database at all, just text\n" * 100, "is not an SQLite database"),
    (None, "is an SQLite database but not an sms_sim one (tables: other)"),
    # A database cut short was "not an SQLite database", and a directory "disk I/O error".
    (b"truncated", "is damaged (database disk image is malformed)"),
    (b"directory", "is a directory, not a database file"),
])
def test_a_corrupt_or_foreign_database_is_a_clear_one_line_error(
        tmp_path: Path, content: bytes | None, fragment: str) -> None:
    path = tmp_path / "foreign.db"
    if content is None:
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE other (x)")
    elif content == b"truncated":
        whole = tmp_path / "whole.db"
        assert cli("init", "--db", str(whole), cwd=tmp_path).returncode == 0
        path.write_bytes(whole.read_bytes()[:3000])
    elif content == b"directory":
        path.mkdir()
    else:
        path.write_bytes(content)
    before = b"" if path.is_dir() else path.read_bytes()
    for command in (["list"], ["submit", "x", "--to", "555-000-0001"], ["worker"]):
        result = cli(*command, "--db", str(path), cwd=tmp_path)
        assert result.returncode == 1
        assert len(result.stderr.splitlines()) == 1 and fragment in result.stderr, result.stderr
    assert (b"" if path.is_dir() else path.read_bytes()) == before
    assert not path.is_dir() or not list(path.iterdir())


def test_submit_show_edit_cancel_and_the_idempotency_key(db: Path) -> None:
    again = cli("submit", "now", "--to", "555-000-0003", "--idempotency-key", "k",
                cwd=db.parent)
    assert again.returncode == 0
    assert again.stdout.strip() == "already submitted: message 2 (idempotency key 'k'), " \
                                   "dispatching, 0 of 1 sent; nothing created"
    # Issue 11, item 3: another message under a used key is a conflict, not "submitted".
    other = cli("submit", "All clear", "--to", "555-000-0003", "--idempotency-key", "k",
                cwd=db.parent)
    assert other.returncode == 1 and other.stdout == ""
    assert other.stderr.count("\n") == 1 and "'k' was used for message 2" in other.stderr
    edited = cli("edit", "1", "--version", "1", "--content", "changed", cwd=db.parent)
    assert edited.stdout.strip() == "edited message 1: now version 2"
    shown = cli("show", "1", cwd=db.parent)
    assert "message 1: scheduled, version 2" in shown.stdout and "content: changed" in shown.stdout
    cancelled = cli("cancel", "2", cwd=db.parent)
    assert cancelled.stdout.strip() == (
        "cancelled message 2 (was dispatching): 1 deliveries cancelled, 0 already sent, "
        "none held by workers")
    listed = cli("list", "--status", "cancelled", cwd=db.parent)
    assert listed.stdout.startswith("2  cancelled")


def test_a_retried_submit_whose_time_has_passed_is_a_repeat_not_a_past_time(
        tmp_path: Path) -> None:
    # Submitted under a key for 10:00 at 09:59; retried at 10:05, the same request was
    # refused as "in the past" (exit 2), and a script would send it again under a new key.
    path = tmp_path / "alerts.db"
    at = "2026-01-05T10:00:00Z"
    store = open_store(str(path), create=True)
    store.submit(NewMessage.validated(content="Doors open", recipients=["555-000-0001"],
                                      scheduled_at=1_767_607_200.0,
                                      idempotency_key="doors"), 1_767_607_140.0)
    retry = cli("submit", "Doors open", "--to", "555-000-0001", "--at", at,
                "--idempotency-key", "doors", "--db", str(path), cwd=tmp_path)
    assert retry.returncode == 0, retry.stderr
    assert retry.stdout.startswith("already submitted: message 1 (idempotency key 'doors')")
    piped = subprocess.run([*START, "submit", "Doors open", "--recipients-file", "-", "--at", at,
                            "--idempotency-key", "doors", "--db", str(path)],
                           input="+15550000001\n", capture_output=True, text=True,
                           timeout=TIMEOUT_S, cwd=tmp_path)  # stdin read once, not twice
    assert piped.returncode == 0 and piped.stdout.startswith("already submitted"), piped.stderr
    changed = cli("submit", "Doors shut", "--to", "555-000-0001", "--at", at,
                  "--idempotency-key", "doors", "--db", str(path), cwd=tmp_path)
    assert changed.returncode == 1 and "'doors' was used for message 1" in changed.stderr
    for key in (["--idempotency-key", "new"], []):  # a new request for that time: refused
        late = cli("submit", "Doors open", "--to", "555-000-0001", "--at", at, *key,
                   "--db", str(path), cwd=tmp_path)
        assert late.returncode == 2 and "is in the past" in late.stderr
    missing = tmp_path / "typo.db"
    late = cli("submit", "Doors open", "--to", "555-000-0001", "--at", at,
               "--idempotency-key", "doors", "--db", str(missing), cwd=tmp_path)
    assert late.returncode == 2 and "is in the past" in late.stderr and not missing.exists()
    (tmp_path / "adir").mkdir()  # a store that fails is no "not a repeat": it says why
    failed = cli("submit", "Doors open", "--to", "555-000-0001", "--at", at,
                 "--idempotency-key", "doors", "--db", str(tmp_path / "adir"), cwd=tmp_path)
    assert failed.returncode == 1 and "is a directory" in failed.stderr, failed.stderr
    assert store.count_messages() == 1
    store.close()


def test_worker_dispatches_retries_to_dead_and_dead_can_be_requeued(tmp_path: Path) -> None:
    submitted = cli("submit", "hi", "--to", "555-000-0001,555-000-0002", cwd=tmp_path)
    assert submitted.returncode == 0
    worker = cli("worker", "--exit-when-idle", "--failure-rate", "1", "--max-attempts", "2",
                 "--retry-base", "0", "--mean", "0", "--deviation", "0", "--seed", "1",
                 "--quiet", cwd=tmp_path)
    assert worker.returncode == 0, worker.stderr
    assert "claimed 4 in " in worker.stdout
    assert "0 sent, 2 retried, 2 dead, 0 released, 0 expired" in worker.stdout
    dead = cli("dead", cwd=tmp_path)
    assert dead.stdout.count("last error: simulated send failure") == 2
    requeued = cli("dead", "--requeue", "--all", cwd=tmp_path)
    assert requeued.stdout.strip() == "requeued 2 dead deliveries"
    finish = cli("worker", "--exit-when-idle", "--mean", "0", "--deviation", "0", "--quiet",
                 cwd=tmp_path)
    assert "2 sent" in finish.stdout
    assert "2 recipients: 2 sent, 0 dead" in cli("list", cwd=tmp_path).stdout


def test_sigterm_stops_the_worker_and_gives_unstarted_claims_back(tmp_path: Path) -> None:
    numbers = ",".join(phones(400))
    assert cli("submit", "hi", "--to", numbers, cwd=tmp_path).returncode == 0
    proc = subprocess.Popen([*START, "worker", "--senders", "1", "--mean", "0.05",
                             "--deviation", "0", "--batch", "50", "--interval", "0.05"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    started = proc.stdout.readline()
    assert started.startswith("worker-") and "dispatching from sms_sim.db" in started
    progress = proc.stdout.readline()  # a progress line: the worker is dispatching
    assert progress.startswith("[")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 143, err
    assert "accounting:" in out and out.count(": ok") >= 1
    with sqlite3.connect(tmp_path / "sms_sim.db") as conn:
        statuses = dict(conn.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status"))
    assert "leased" not in statuses  # unstarted claims went back to pending
    assert statuses.get("sent", 0) + statuses.get("pending", 0) == 400


def test_the_dispatch_commands_and_sqlite_store_need_only_the_standard_library() -> None:
    probe = ("import sys; import sms_sim.cli.messages, sms_sim.dispatch.stores.sqlite.store; "
             "print(sorted(n for n in sys.modules if n.split('.')[0] not in "
             "sys.stdlib_module_names and n.split('.')[0] not in {'sms_sim', '__main__'}))")
    result = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True,
                            text=True, cwd=ROOT, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
