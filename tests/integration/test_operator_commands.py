"""The dispatch commands as an operator uses them (issue 11, items 3-5, 12 and 14-19), run in
this process through ``cli.main`` on SQLite files: fast enough to run with every change.

Where a test needs a message part-way through dispatch it drives the store directly with
times in the past, never by waiting. Subprocess-only behaviour (a full disk, a closed pipe,
a read-only directory, the local time zone) is in ``test_operator_cli.py``.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from sms_sim.cli import COMMANDS, apikey, optout
from sms_sim.cli.common import OneLineParser
from sms_sim.clock import RealClock
from sms_sim.dispatch.contract import SettleKind, Settlement
from sms_sim.dispatch.stores import SqliteStore
from sms_sim.dispatch.validation import format_utc
from tests.conftest import phones
from tests.integration.conftest import Cli, Ran

LEASE_S = 30.0


def one_line_error(ran: Ran, code: int, fragment: str) -> None:
    assert ran.code == code, ran
    assert ran.out == ""
    assert len(ran.err.splitlines()) == 1, ran.err
    assert fragment in ran.err, ran.err
    assert "Traceback" not in ran.err


def submit(cli: Cli, *args: str) -> int:
    ran = cli("submit", *args)
    assert ran.code == 0, ran
    found = re.match(r"submitted message (\d+):", ran.out)
    assert found is not None, ran.out
    return int(found.group(1))


def seconds_ago(seconds: float) -> str:
    """An ``--at`` time a little in the past (within the minute of grace), so that work
    submitted now can have been claimed ``seconds`` ago."""
    return format_utc(RealClock().now() - seconds)


def dispatch(db: Path, *, sent: int = 0, dead: int = 0, started_s_ago: float = 10.0) -> None:
    """Claim every due delivery as a worker would have ``started_s_ago`` seconds ago, then
    report ``sent`` of them sent and the next ``dead`` dead (the rest stay leased). The
    messages must be due by then: submit them ``--at seconds_ago(30)``."""
    now = RealClock().now()
    store = SqliteStore(db, create=False)
    try:
        claims = store.claim("w", 1000, 3600.0, now - started_s_ago)
        kinds = [SettleKind.SENT] * sent + [SettleKind.DEAD] * dead
        store.settle("w", [Settlement(c.delivery_id, c.attempts, kind,
                                      "provider said no" if kind is SettleKind.DEAD else None)
                           for c, kind in zip(claims[:len(kinds)], kinds, strict=True)],
                     now - 1)
    finally:
        store.close()


# --- item 4: a store that would vanish ------------------------------------------------------


@pytest.mark.parametrize("db", ["", ":memory:", "memory:", "sqlite::memory:", "  "])
@pytest.mark.parametrize("command", [["submit", "hi", "--to", "555-010-0001"], ["init"],
                                     ["list"], ["worker", "--exit-when-idle"],
                                     ["cancel", "1"]])
def test_a_database_that_would_vanish_is_refused_in_one_line(
        cli: Cli, tmp_path: Path, db: str, command: list[str]) -> None:
    ran = cli(*command, "--db", db)
    one_line_error(ran, 2, f"argument --db: {db!r} keeps nothing after this command ends")
    assert list(tmp_path.iterdir()) == []


# A URL no store can serve is a usage error too (exit 2, as the README says), never a
# traceback: "postgresql://[::1" raised ValueError, a non-UTF-8 path UnicodeEncodeError,
# and an unknown scheme or a bad sqlite: URL was exit 1.
@pytest.mark.parametrize(("db", "fragment"), [
    ("postgresql://[::1", "not a valid postgresql:// URL"),
    ("foo://bar", "unknown store URL scheme 'foo'"),
    ("sqlite://", "a sqlite URL needs a file path"),
    ("sqlite:///x.db?mode=ro", "sqlite URLs take no options"),
    ("/tmp/\udcff.db", "the database path or URL is not valid UTF-8 text"),
])
@pytest.mark.parametrize("command", [["list"], ["submit", "hi", "--to", "555-010-0001"],
                                     ["migrate"]])
def test_a_database_url_no_store_serves_is_a_usage_error(
        cli: Cli, tmp_path: Path, db: str, fragment: str, command: list[str]) -> None:
    ran = cli(*command, "--db", db)
    one_line_error(ran, 2, f"argument --db: {fragment}")
    assert list(tmp_path.iterdir()) == []


# --- item 5: only submit and init create a database ---------------------------------------


@pytest.mark.parametrize("command", [
    ["list"], ["show", "1"], ["edit", "1", "--version", "1", "--content", "x"], ["cancel", "1"],
    ["dead"], ["dead", "--requeue", "--all"], ["deliveries", "1"], ["check"],
    ["worker", "--exit-when-idle", "--quiet"],
])
def test_every_command_but_submit_and_init_refuses_a_missing_database(
        cli: Cli, tmp_path: Path, command: list[str]) -> None:
    ran = cli(*command, "--db", "alert.db")
    one_line_error(ran, 1, "no database at 'alert.db'")
    assert list(tmp_path.iterdir()) == []


def test_init_creates_a_database_once_and_submit_creates_one_too(cli: Cli,
                                                                 tmp_path: Path) -> None:
    created = cli("init", "--db", "alert.db")
    assert (created.code, created.out) == (0, "created sms_sim database 'alert.db'\n")
    again = cli("init", "--db", "alert.db")
    assert again.out == "'alert.db' is already an sms_sim database; nothing changed\n"
    assert cli("list", "--db", "alert.db").out == "no messages\n"
    assert submit(cli, "hi", "--to", "555-010-0001", "--db", "other.db") == 1
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["alert.db", "other.db"]
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE other (x)")
    one_line_error(cli("init", "--db", str(foreign)), 1, "not an sms_sim one")


# --- item 12: check -----------------------------------------------------------------------


def test_check_passes_a_sound_file_and_fails_a_damaged_one_in_one_line(
        cli: Cli, tmp_path: Path) -> None:
    submit(cli, "hi", "--to", ",".join(phones(3)))
    ok = cli("check")
    assert (ok.code, ok.out) == (0, "'sms_sim.db': ok (integrity check passed)\n")
    with sqlite3.connect(tmp_path / "sms_sim.db", isolation_level=None) as conn:
        # Swap two indexes' pages: every row is then missing from one of them, which
        # PRAGMA integrity_check reports while the file still opens.
        first, second = conn.execute(
            "SELECT name, rootpage FROM sqlite_master WHERE type = 'index' AND "
            "tbl_name = 'deliveries' AND sql IS NOT NULL ORDER BY name LIMIT 2").fetchall()
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute("UPDATE sqlite_master SET rootpage = ? WHERE name = ?",
                     (second[1], first[0]))
        conn.execute("UPDATE sqlite_master SET rootpage = ? WHERE name = ?",
                     (first[1], second[0]))
    one_line_error(cli("check"), 1, "'sms_sim.db' is damaged: row 1 missing from index")
    damaged = tmp_path / "sms_sim.db"
    size = damaged.stat().st_size
    with damaged.open("r+b") as raw:  # a b-tree page overwritten: unreadable, not only wrong
        raw.seek(size - 4096)
        raw.write(b"\xff" * 4096)
    ran = cli("check")
    assert ran.code == 1 and len(ran.err.splitlines()) == 1 and "Traceback" not in ran.err


# --- item 14: newest first, pages, JSON -----------------------------------------------------


def _inspection_again(command: list[str], db: str, **options: object) -> str:
    from sms_sim.cli import inspection

    return inspection._again(command, argparse.Namespace(db=db), **options)


def test_list_shows_the_newest_first_says_how_many_more_and_pages_back(cli: Cli) -> None:
    for i in range(5):
        submit(cli, f"message {i + 1}", "--to", "555-010-0001")
    first = cli("list", "--limit", "2")
    lines = first.out.splitlines()
    assert [line.split()[0] for line in lines[:2]] == ["5", "4"]
    # The hint repeats the filters given (it dropped them: the next page was another list).
    assert lines[2] == "... 3 more (older: list --limit 2 --before 4)"
    second = cli("list", "--limit", "2", "--before", "4")
    assert [line.split()[0] for line in second.out.splitlines()[:2]] == ["3", "2"]
    assert second.out.splitlines()[2] == "... 1 more (older: list --limit 2 --before 2)"
    last = cli("list", "--limit", "2", "--before", "2").out.splitlines()
    assert [line.split()[0] for line in last] == ["1"]
    page = json.loads(cli("list", "--limit", "2", "--json").out)
    assert [m["id"] for m in page["messages"]] == [5, 4]
    assert (page["more"], page["next_before"]) == (3, 4)
    assert page["messages"][0]["content"] == "message 5"
    submit(cli, "theirs", "--to", "555-010-0001", "--tenant", "other")
    mine = cli("list", "--tenant", "default", "--limit", "1", "--db", "./sms_sim.db")
    assert mine.out.splitlines()[1] == ("... 4 more (older: list --tenant default --limit 1 "
                                        "--before 5 --db ./sms_sim.db)")
    # A URL output may not show whole (a password) is not rewritten into one that fails.
    url = "postgresql://sms:s3cret@127.0.0.1:9/sms"
    assert "on the same --db" in _inspection_again(["list"], url, before=5)
    assert "s3cret" not in _inspection_again(["list"], url, before=5)


def test_submit_and_dead_answer_in_json(cli: Cli, tmp_path: Path) -> None:
    made = json.loads(cli("submit", "hi", "--to", "555-010-0001,555-010-0002", "--json",
                          "--at", seconds_ago(30)).out)
    assert (made["created"], made["id"], made["recipients"], made["status"]) == \
        (True, 1, 2, "scheduled")
    dispatch(tmp_path / "sms_sim.db", dead=2)
    dead = json.loads(cli("dead", "--json").out)
    assert [(d["recipient"], d["status"], d["last_error"]) for d in dead["deliveries"]] == [
        ("555-010-0001", "dead", "provider said no"),
        ("555-010-0002", "dead", "provider said no"),
    ]
    assert dead["more"] is False
    assert json.loads(cli("dead", "--limit", "1", "--json").out)["more"] is True
    refused = cli("dead", "--requeue", "--message", "1", "--limit", "1")  # it requeued all
    assert refused.code == 2 and "--limit goes without --requeue" in refused.err
    assert json.loads(cli("dead", "--requeue", "--message", "1", "--json").out) == \
        {"requeued": 2}


# --- items 15 and 16: per-recipient status, progress, outcome -------------------------------


def test_deliveries_answers_whether_a_number_got_the_message(cli: Cli, tmp_path: Path) -> None:
    numbers = phones(4)
    submit(cli, "EVACUATE", "--to", ",".join(numbers), "--at", seconds_ago(30))
    dispatch(tmp_path / "sms_sim.db", sent=2, dead=1)
    one = cli("deliveries", "1", "--to", numbers[0])
    assert re.fullmatch(rf"delivery 1  {numbers[0]}  sent  attempts 1 \(leases lost 0\)  "
                        r"sent \d{4}-\d\d-\d\dT[\d:.]+Z  last error: -\n", one.out), one.out
    dead = cli("deliveries", "1", "--status", "dead").out
    assert dead.startswith(f"delivery 3  {numbers[2]}  dead  attempts 1") and \
        dead.rstrip().endswith("last error: provider said no")
    assert cli("deliveries", "1", "--to", "555-999-0000").out == \
        "no delivery to 555-999-0000 in message 1\n"
    # The same number in E.164 was "no delivery": --to is read as submit stores numbers.
    assert cli("deliveries", "1", "--to", "+1" + numbers[0].replace("-", "")).out == one.out
    paged = cli("deliveries", "1", "--limit", "3").out.splitlines()
    assert paged[-1] == "... more (next: deliveries 1 --limit 3 --after 3)"
    filtered = cli("deliveries", "1", "--status", "sent", "--limit", "1").out.splitlines()
    assert filtered[-1] == "... more (next: deliveries 1 --status sent --limit 1 --after 1)"
    after = cli("deliveries", "1", "--after", "3").out
    assert after.startswith(f"delivery 4  {numbers[3]}  leased")
    rows = cli("deliveries", "1", "--csv").out.splitlines()
    assert rows[0] == "id,recipient,status,attempts,lease_losses,last_error,sent_at," \
                      "next_attempt_at,dlr_at"
    assert rows[3].startswith(f"3,{numbers[2]},dead,1,0,provider said no,,")
    as_json = json.loads(cli("deliveries", "1", "--json", "--status", "sent").out)
    assert [d["recipient"] for d in as_json["deliveries"]] == numbers[:2]
    one_line_error(cli("deliveries", "1", "--to", "5550100001"), 2,
                   "--to must look like xxx-xxx-xxxx")
    one_line_error(cli("deliveries", "7"), 1, "no message with id 7")


def test_show_gives_the_share_sent_the_rate_and_an_eta_while_dispatching(
        cli: Cli, tmp_path: Path) -> None:
    submit(cli, "drill", "--to", ",".join(phones(4)), "--at", seconds_ago(30))
    dispatch(tmp_path / "sms_sim.db", sent=2, started_s_ago=10.0)
    shown = cli("show", "1").out
    assert re.search(r"^  progress: 2 of 4 sent \(50\.0%\), 0\.2/s, ETA \S+Z \(2 to go\)$",
                     shown, re.MULTILINE), shown
    progress = json.loads(cli("show", "1", "--json").out)["progress"]
    assert progress["sent_fraction"] == 0.5 and progress["open"] == 2
    assert 0.15 < progress["rate_per_s"] <= 0.2 and progress["eta_at"] is not None


@pytest.mark.parametrize(("sent", "dead", "outcome"), [
    (2, 0, "all sent"), (1, 1, "partly failed"), (0, 2, "all failed"),
])
def test_a_completed_message_says_whether_anyone_got_it(
        cli: Cli, tmp_path: Path, sent: int, dead: int, outcome: str) -> None:
    submit(cli, "hi", "--to", "555-010-0001,555-010-0002", "--at", seconds_ago(30))
    dispatch(tmp_path / "sms_sim.db", sent=sent, dead=dead)
    assert cli("show", "1").out.startswith(f"message 1: completed, {outcome}, version 1")
    assert f"1  completed ({outcome})  v1" in cli("list").out
    assert json.loads(cli("show", "1", "--json").out)["outcome"] == outcome


def test_a_repeated_idempotency_key_says_what_became_of_the_first(cli: Cli,
                                                                  tmp_path: Path) -> None:
    args = ("hi", "--to", "555-010-0001", "--idempotency-key", "drill-1", "--at",
            seconds_ago(30))
    submit(cli, *args)
    waiting = cli("submit", *args)
    assert re.fullmatch(r"already submitted: message 1 \(idempotency key 'drill-1'\), "
                        r"scheduled, due \S+Z; nothing created\n", waiting.out), waiting.out
    dispatch(tmp_path / "sms_sim.db", sent=1)
    again = cli("submit", *args)
    assert (again.code, again.out) == (0, "already submitted: message 1 (idempotency key "
                                          "'drill-1'), completed, all sent; nothing created\n")


def test_a_retried_relative_submit_is_the_same_request(cli: Cli) -> None:
    """``--in 10m`` asks for a time relative to each run: a retry of the same command is the
    same request, not a conflict (its absolute due time moved on; found in review)."""
    args = ("drill", "--to", "555-010-0001", "--idempotency-key", "drill-2", "--in", "10m")
    submit(cli, *args)
    again = cli("submit", *args)
    assert again.code == 0 and again.out.startswith("already submitted: message 1"), again
    other = cli("submit", *args[:-1], "20m")
    one_line_error(other, 1, "'drill-2' was used for message 1")


# --- item 17: when ----------------------------------------------------------------------


@pytest.mark.parametrize(("when", "fragment"), [
    (["--at", "2020-01-01T00:00:00Z"], "argument --at: 2020-01-01T00:00:00.000Z is in the past"),
    (["--at", "2099-11-24"], "argument --at: '2099-11-24' is a date without a time"),
    (["--in", "10"], "argument --in: not a duration: '10'"),
    (["--at", "2099-01-01T00:00:00Z", "--in", "5m"], "not allowed with argument"),
])
def test_a_time_in_the_past_or_without_a_time_is_refused(
        cli: Cli, tmp_path: Path, when: list[str], fragment: str) -> None:
    one_line_error(cli("submit", "hi", "--to", "555-010-0001", *when), 2, fragment)
    assert list(tmp_path.iterdir()) == []


def test_in_schedules_relative_to_now_and_edit_follows_the_same_rules(cli: Cli) -> None:
    before = RealClock().now()
    made = json.loads(cli("submit", "hi", "--to", "555-010-0001", "--in", "2h", "--json").out)
    assert before + 7200 <= made["scheduled_at"] <= RealClock().now() + 7200
    one_line_error(cli("edit", "1", "--version", "1", "--at", "2020-01-01T00:00:00Z"), 2,
                   "is in the past")
    edited = cli("edit", "1", "--version", "1", "--at", "2099-01-01T15:00:00Z")
    assert edited.out.startswith("edited message 1: now version 2, due "
                                 "2099-01-01T15:00:00.000Z (local ")
    # Found wrong only once the message was read, but a bad request all the same: exit 2,
    # as any bad flag (it was 1, as if the store had failed).
    cli("edit", "1", "--version", "2", "--valid-for", "1h")
    one_line_error(cli("edit", "1", "--version", "3", "--at", "2099-01-01T17:00:00Z"), 2,
                   "must be after the send time")


# --- item 18: discoverability -------------------------------------------------------------


def test_top_level_help_lists_every_command_and_the_simulation(cli: Cli) -> None:
    ran = cli("--help")
    assert ran.code == 0
    for name in ("plan", "init", "submit", "edit", "cancel", "show", "list", "deliveries",
                 "dead", "check", "worker", "migrate", "prune", "copy"):
        assert re.search(rf"^  {name} +\S", ran.out, re.MULTILINE), name
    assert "--senders-file" in ran.out  # the simulation's own options follow


@pytest.mark.parametrize(("word", "hint"), [("sumbit", "did you mean 'submit'? "),
                                            ("frobnicate", "")])
def test_an_unknown_command_is_one_line_naming_the_commands(cli: Cli, word: str,
                                                            hint: str) -> None:
    one_line_error(cli(word, "x"), 2,
                   f"sms_sim: error: unknown command {word!r} ({hint}commands: plan, init, "
                   "submit, edit, cancel, show, list, deliveries, dead, check, worker, migrate, "
                   "serve, apikey, optout, prune, copy;")


def test_version_is_printed(cli: Cli) -> None:
    ran = cli("--version")
    assert ran.code == 0 and re.fullmatch(r"sms_sim \d+\.\d+\.\d+\n", ran.out)


@pytest.mark.parametrize(("command", "expected"), [
    (["list"], ["--limit N", "(default 100)", "--status"]),
    (["dead"], ["(default 1000)", "--all"]),
    (["submit"], ["higher classes go first; waiting work ages so nothing starves",
                  "(default 0)", "(default ./sms_sim.db)"]),
    (["worker"], ["(default 4)", "--json"]),
    (["deliveries"], ["(default 1000)", "--to NUMBER"]),
])
def test_option_help_states_defaults(cli: Cli, command: list[str],
                                     expected: list[str]) -> None:
    text = " ".join(cli(*command, "--help").out.split())
    for fragment in expected:
        assert fragment in text, fragment


def test_requeueing_every_message_needs_all(cli: Cli, tmp_path: Path) -> None:
    submit(cli, "hi", "--to", "555-010-0001", "--at", seconds_ago(30))
    dispatch(tmp_path / "sms_sim.db", dead=1)
    one_line_error(cli("dead", "--requeue"), 2,
                   "--requeue needs --message ID, or --all to requeue every dead delivery")
    assert "1 dead" in cli("list").out
    assert cli("dead", "--requeue", "--all").out == "requeued 1 dead deliveries\n"


# --- item 19: what operators type ---------------------------------------------------------


def test_a_recipients_file_with_a_bom_and_comments_or_from_stdin(cli: Cli,
                                                                 tmp_path: Path) -> None:
    (tmp_path / "staff.txt").write_bytes(
        "\ufeff# staff\n555-010-0001\n   555-010-0002   # Ana\n\n".encode())
    assert submit(cli, "hi", "--recipients-file", "staff.txt") == 1
    assert submit(cli, "hi", "--recipients-file", "-", "--to", "555-010-0009") == 2
    ran = cli("submit", "hi", "--recipients-file", "-",
              stdin="555-010-0003\n#\n\n555-010-0004\n555-010-0005\n".encode())
    assert ran.code == 0, ran
    assert "3 recipients" in ran.out
    (tmp_path / "bad.txt").write_text("# a\n555-010-0001\n\n\n\n\n555-0100-007\n")
    one_line_error(cli("submit", "hi", "--recipients-file", "bad.txt"), 2,
                   "recipients file 'bad.txt' line 7 must look like xxx-xxx-xxxx "
                   "or +E.164 (+ and 8-15 digits; got '555-0100-007')")


@pytest.mark.parametrize(("content", "fragment"), [
    ("   ", "content must not be only whitespace"),
    ("\x1b]0;pwned\x07", "content must not contain control characters (got '\\x1b'"),
])
def test_blank_content_and_control_characters_are_refused(cli: Cli, content: str,
                                                          fragment: str) -> None:
    one_line_error(cli("submit", content, "--to", "555-010-0001"), 2, fragment)


def test_show_and_list_never_print_control_characters_from_the_database(
        cli: Cli, tmp_path: Path) -> None:
    """Content stored before the rule (or by another program) is escaped when shown."""
    submit(cli, "safe", "--to", "555-010-0001")
    with sqlite3.connect(tmp_path / "sms_sim.db") as conn:
        conn.execute("UPDATE messages SET content = ?", ("evil\x1b]0;pwned\x07\nnext",))
    shown = cli("show", "1").out
    assert "\x1b" not in shown and "\x07" not in shown
    assert "  content: evil\\x1b]0;pwned\\x07\\nnext\n" in shown
    listed = cli("list").out
    assert "\x1b" not in listed and "'evil\\x1b]0;pwned\\x07\\nnext'" in listed
    assert json.loads(cli("show", "1", "--json").out)["content"] == "evil\x1b]0;pwned\x07\nnext"
    with sqlite3.connect(tmp_path / "sms_sim.db") as conn:  # a provider's words, as kept
        conn.execute("UPDATE deliveries SET last_error = ?", ("no\x1b]0;pwned\x07\rpe",))
    for view in (cli("deliveries", "1").out, cli("deliveries", "1", "--csv").out):  # csv: raw
        assert "\x1b" not in view and "no\\x1b]0;pwned\\x07\\rpe" in view, view


def test_content_starting_with_a_dash_is_accepted(cli: Cli) -> None:
    submit(cli, "--content", "-urgent: leave now", "--to", "555-010-0001")
    submit(cli, "--to", "555-010-0001", "--", "-5 degrees")
    submit(cli, "--to", "555-010-0001", "--", "-urgent")
    contents = [m["content"] for m in json.loads(cli("list", "--json").out)["messages"]]
    assert contents == ["-urgent", "-5 degrees", "-urgent: leave now"]
    one_line_error(cli("submit", "a", "--content", "b", "--to", "555-010-0001"), 2,
                   "give the content once: as an argument or with --content")


def test_every_option_of_every_command_has_help_that_states_a_default_it_has(
        cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """No option is left for the reader to guess: each has a help text, and one with a
    default says what it is (in its own words, or through ``DefaultsHelpFormatter``)."""
    parsers: list[argparse.ArgumentParser] = []

    def capture(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        parsers.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(OneLineParser, "parse_args", capture)
    # A group's parsers are its subcommands'; "1": the simulation.
    invocations = [[name] for name in COMMANDS if name not in ("apikey", "optout")]
    invocations += [["apikey", sub] for sub in apikey.SUBCOMMANDS] + [["1"]]
    invocations += [["optout", sub] for sub in optout.SUBCOMMANDS]
    for words in invocations:
        cli(*words)
    assert len(parsers) == len(invocations)
    for parser in parsers:
        text = parser.format_help()
        for action in parser._actions:
            assert action.help, (parser.prog, action.dest)
            unstated = action.default is None or action.default is False \
                or action.default == [] or action.default == argparse.SUPPRESS
            if not unstated and action.option_strings:
                assert "default" in parser._get_formatter()._expand_help(action) \
                    or "default" in (action.help or ""), (parser.prog, action.dest)
        assert "%(default)" not in text


def test_submit_and_list_by_tenant(cli: Callable[..., Ran], tmp_path: Path) -> None:
    """The command line is the operator of every tenant: it submits into one with --tenant
    (the default tenant otherwise), lists all of them, and narrows a listing to one."""
    assert cli("submit", "ours", "--to", "555-010-0001").code == 0
    assert cli("submit", "theirs", "--to", "+15550100001", "--tenant", "acme").code == 0
    listed = cli("list")
    assert "[acme]" in listed.out.splitlines()[0] and "[" not in listed.out.splitlines()[1]
    only = cli("list", "--tenant", "acme", "--json")
    assert [m["tenant"] for m in json.loads(only.out)["messages"]] == ["acme"]
    assert "tenant acme" in cli("show", "2").out
    (delivery,) = json.loads(cli("deliveries", "2", "--json").out)["deliveries"]
    assert delivery["recipient"] == "555-010-0001"  # +1 and ten digits: one stored form
    one_line_error(cli("submit", "x", "--to", "555-010-0001", "--tenant", "Acme"), 2,
                   "--tenant: tenant must be 1-63 characters")
