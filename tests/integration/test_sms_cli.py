"""Issue 14 on the command line: segments and validity shown by ``submit``/``show``/``list``,
``optout add|remove|list|import``, and ``apikey create --provider``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sms_sim.clock import RealClock
from sms_sim.dispatch.keys import ForbiddenError, KeyRole
from sms_sim.dispatch.service import DispatchService
from sms_sim.dispatch.stores import open_store
from tests.integration.conftest import Cli, Ran


def one_line_error(ran: Ran, code: int, text: str) -> None:
    assert ran.code == code and ran.out == "", ran
    assert ran.err.count("\n") == 1 and text in ran.err, ran.err


def test_submit_shows_segments_validity_and_suppressed_recipients(cli: Cli) -> None:
    assert cli("init").code == 0
    assert cli("optout", "add", "+15550100002").code == 0
    ran = cli("submit", "ж" * 71, "--to", "555-010-0001,555-010-0002", "--valid-for", "2h")
    assert ran.code == 0, ran.err
    assert re.fullmatch(r"submitted message 1: 2 recipients, due .*, version 1; 2 segments "
                        r"\(UCS-2\) each, valid until \S+Z, 1 suppressed \(opted out\)\n",
                        ran.out), ran.out
    shown = json.loads(cli("show", "1", "--json").out)
    assert (shown["encoding"], shown["segments"]) == ("UCS-2", 2)
    assert shown["valid_until"] == pytest.approx(shown["scheduled_at"] + 7200)
    assert shown["deliveries"]["suppressed"] == 1
    text = cli("show", "1").out
    assert "2 segments (UCS-2) per recipient; valid until " in text and "1 suppressed" in text
    assert "2 recipients: 0 sent, 0 dead, 2 seg each" in cli("list").out
    as_json = json.loads(cli("submit", "hi", "--to", "555-010-0002", "--json").out)
    assert as_json["suppressed"] == 1 and as_json["outcome"] == "all suppressed"
    assert (as_json["encoding"], as_json["segments"], as_json["valid_until"]) == (
        "GSM-7", 1, None)
    one_line_error(cli("submit", "x", "--to", "555-010-0001", "--valid-for", "soon"), 2,
                   "not a duration: 'soon'")
    # In the option's words; it was "valid_for must be ... at most 31622400 seconds".
    one_line_error(cli("submit", "x", "--to", "555-010-0001", "--valid-for", "367d"), 2,
                   "argument --valid-for: at most 366d (got '367d')")
    one_line_error(cli("submit", "x", "--to", "555-010-0001", "--valid-for", "0s"), 2,
                   "argument --valid-for: must be a positive duration")


def test_edit_moves_the_validity(cli: Cli) -> None:
    cli("submit", "later", "--to", "555-010-0001", "--in", "1h")
    edited = cli("edit", "1", "--version", "1", "--valid-for", "30m")
    shown = json.loads(cli("show", "1", "--json").out)
    assert shown["valid_until"] == pytest.approx(shown["scheduled_at"] + 1800)
    assert edited.code == 0 and ", valid until " in edited.out  # it said only the version


def test_optout_add_list_remove_and_import(cli: Cli, tmp_path: Path) -> None:
    cli("submit", "hi", "--to", "555-010-0001,555-010-0002", "--in", "1h")
    ran = cli("optout", "add", "555-010-0001", "+15550100009", "555-010-0001")
    assert ran.out == ("opted out 2 new numbers for tenant 'default' (0 already listed); 1 "
                       "pending delivery suppressed\n"), ran
    assert cli("optout", "add", "555-010-0001", "--json").out.strip() == json.dumps(
        {"tenant": "default", "given": 1, "added": 0, "suppressed": 0})
    (tmp_path / "stop.csv").write_text("phone,when\n+15550100003,2026-01-01\n# skip\n\n"
                                       "555-010-0004\n", encoding="utf-8")
    assert "opted out 2 new numbers for tenant 'acme'" in cli(
        "optout", "import", "stop.csv", "--tenant", "acme").out
    listed = cli("optout", "list", "--limit", "1").out.splitlines()
    assert [line.split()[0] for line in listed[:1]] == ["555-010-0001"]
    assert listed[1] == "... more after 555-010-0001 (--after 555-010-0001)"
    # A page exactly full is the last when nothing follows: it offered a cursor to nothing.
    whole = cli("optout", "list", "--limit", "2").out.splitlines()
    assert [line.split()[0] for line in whole] == ["555-010-0001", "555-010-0009"]
    assert json.loads(cli("optout", "list", "--limit", "2", "--json").out)["next_after"] is None
    one_line_error(cli("optout", "list", "--limit", "0"), 2, "argument --limit")
    page = json.loads(cli("optout", "list", "--tenant", "acme", "--json").out)
    assert [o["phone"] for o in page["opt_outs"]] == ["555-010-0003", "555-010-0004"]
    assert page["next_after"] is None
    assert cli("optout", "remove", "+15550100009").out == \
        "removed 555-010-0009 from tenant 'default''s opt-outs\n"
    assert "was not on" in cli("optout", "remove", "555-010-0009").out
    assert cli("optout", "list", "--after", "555-010-0001").out == \
        "no opt-outs for tenant 'default'\n"


def test_optout_refuses_bad_input_in_one_line(cli: Cli, tmp_path: Path) -> None:
    one_line_error(cli("optout", "add", "555-010-0001"), 1, "no database at")
    cli("init")
    one_line_error(cli("optout", "add", "12"), 2, "phone 1 must look like xxx-xxx-xxxx")
    (tmp_path / "bad.csv").write_text("555-010-0001\nnot a phone\n", encoding="utf-8")
    one_line_error(cli("optout", "import", "bad.csv"), 2, "'bad.csv' line 2 must look like")
    one_line_error(cli("optout", "import", "missing.csv"), 2, "cannot read 'missing.csv'")
    (tmp_path / "latin.csv").write_bytes(b"\xff\xfe")
    one_line_error(cli("optout", "import", "latin.csv"), 2, "is not UTF-8 text")
    one_line_error(cli("optout", "frob"), 2, "unknown subcommand 'frob'")
    one_line_error(cli("optout", "add", "555-010-0001", "--tenant", "Acme"), 2, "tenant")
    assert "import  every number of a CSV file" in cli("optout", "--help").out


def test_apikey_create_provider_makes_a_key_for_receipts_only(cli: Cli,
                                                              tmp_path: Path) -> None:
    cli("init")
    ran = cli("apikey", "create", "--provider", "--json")
    answer = json.loads(ran.out)
    assert answer["role"] == "provider"
    assert "provider" in cli("apikey", "list").out
    with DispatchService(open_store(str(tmp_path / "sms_sim.db")), RealClock()) as service:
        assert service.authenticate_provider(answer["token"]).role is KeyRole.PROVIDER
        with pytest.raises(ForbiddenError, match="provider key"):
            service.authenticate(answer["token"])
    one_line_error(cli("apikey", "create"), 2, "--tenant (or --provider)")
    one_line_error(cli("apikey", "create", "--provider", "--tenant", "acme"), 2,
                   "leave --tenant out")
