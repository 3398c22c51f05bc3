"""``apikey create / revoke / list`` on a real database file: the token is printed once and
works, listings never show a secret, and every bad input is one line and an exit code
(2 for usage, before the database is opened; 1 for a refusal of the store)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from sms_sim.cli import main
from sms_sim.clock import RealClock
from sms_sim.dispatch.keys import UnauthorizedError
from sms_sim.dispatch.service import DispatchService
from sms_sim.dispatch.stores import open_store
from tests.conftest import START

TOKEN_RE = re.compile(r"smsk_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")


@pytest.fixture
def db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    path = str(tmp_path / "d.db")
    assert main(["init", "--db", path], prog="sms-sim") == 0
    capsys.readouterr()
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``sms-sim ARGS`` in process: exit code, stdout, stderr (argparse's exit included)."""
    try:
        code = main(list(args), prog="sms-sim")
    except SystemExit as ended:
        assert isinstance(ended.code, int)
        code = ended.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tenant_of(db: str, token: str) -> str:
    with DispatchService(open_store(db), RealClock()) as service:
        return service.authenticate(token)


def test_create_prints_the_token_once_and_it_authenticates(
        capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, out, err = run(capsys, "apikey", "create", "--tenant", "acme", "--db", db)
    assert code == 0 and err == ""
    lines = out.splitlines()
    found = re.fullmatch(r"created API key ([0-9a-f]{12}) for tenant 'acme'", lines[0])
    assert found is not None, out
    token = lines[1].removeprefix("token: ")
    token_id = TOKEN_RE.fullmatch(token)
    assert token_id is not None and token_id.group(1) == found.group(1)
    assert "shown only this once" in lines[2]
    assert tenant_of(db, token) == "acme"


def test_create_json_for_scripts(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, out, _ = run(capsys, "apikey", "create", "--tenant", "globex", "--db", db, "--json")
    answer = json.loads(out)
    assert code == 0 and set(answer) == {"key_id", "tenant", "role", "created_at", "token"}
    assert answer["tenant"] == "globex" and tenant_of(db, answer["token"]) == "globex"
    assert answer["token"].startswith(f"smsk_{answer['key_id']}_")


def test_list_names_keys_and_never_prints_a_secret(capsys: pytest.CaptureFixture[str],
                                                   db: str) -> None:
    tokens = []
    for tenant in ("acme", "globex", "acme"):
        _, out, _ = run(capsys, "apikey", "create", "--tenant", tenant, "--db", db, "--json")
        tokens.append(json.loads(out)["token"])
    code, out, err = run(capsys, "apikey", "list", "--db", db)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 3
    for line, token, tenant in zip(lines, tokens, ("acme", "globex", "acme"), strict=True):
        key_id, secret = token.split("_")[1], token.split("_", 2)[2]
        assert line.startswith(f"{key_id}  tenant {tenant!r}  created ")
        assert line.endswith("  active") and secret not in out
    _, only, _ = run(capsys, "apikey", "list", "--db", db, "--tenant", "globex", "--json")
    keys = json.loads(only)["keys"]
    assert [key["tenant"] for key in keys] == ["globex"] and "token" not in keys[0]
    assert set(keys[0]) == {"key_id", "tenant", "role", "created_at", "revoked_at"}


def test_revoke_refuses_the_token_from_then_on_and_twice_is_harmless(
        capsys: pytest.CaptureFixture[str], db: str) -> None:
    _, out, _ = run(capsys, "apikey", "create", "--tenant", "acme", "--db", db, "--json")
    issued = json.loads(out)
    code, first, _ = run(capsys, "apikey", "revoke", issued["key_id"], "--db", db)
    assert code == 0
    assert re.fullmatch(rf"revoked API key {issued['key_id']} of tenant 'acme' at "
                        r"\S+Z\n", first), first
    with pytest.raises(UnauthorizedError):
        tenant_of(db, issued["token"])
    code, again, _ = run(capsys, "apikey", "revoke", issued["key_id"], "--db", db)
    assert code == 0 and again == first  # the first revocation time stands
    _, listed, _ = run(capsys, "apikey", "list", "--db", db)
    assert "  revoked " in listed and "active" not in listed


@pytest.mark.parametrize("args, says", [
    (["apikey"], "no subcommand (choose from create, revoke, list"),
    (["apikey", "make"], "unknown subcommand 'make' (choose from create, revoke, list"),
    (["apikey", "create"], "the following arguments are required: --tenant"),
    (["apikey", "create", "--tenant", "Acme"], "tenant must be 1-63 characters"),
    (["apikey", "create", "--tenant", ""], "tenant must be 1-63 characters"),
    (["apikey", "list", "--tenant", "a b"], "tenant must be 1-63 characters"),
    (["apikey", "revoke"], "the following arguments are required: KEY_ID"),
    (["apikey", "revoke", "smsk_0123456789ab_x"], "key id must be 12 hex digits"),
])
def test_bad_usage_is_one_line_and_exit_2_before_the_database_is_opened(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], says: str) -> None:
    missing = tmp_path / "none.db"
    code, out, err = run(capsys, *args, *(["--db", str(missing)] if len(args) > 1 else []))
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and says in err, err
    assert not missing.exists()


def test_store_refusals_are_one_line_and_exit_1(capsys: pytest.CaptureFixture[str],
                                                db: str, tmp_path: Path) -> None:
    code, _, err = run(capsys, "apikey", "revoke", "0123456789ab", "--db", db)
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith("sms-sim apikey revoke: error: ") and "0123456789ab" in err
    missing = tmp_path / "typo.db"
    for args in (["create", "--tenant", "acme"], ["list"], ["revoke", "0123456789ab"]):
        code, _, err = run(capsys, "apikey", *args, "--db", str(missing))
        assert code == 1 and "typo.db" in err and "init" in err, err
        assert len(err.splitlines()) == 1
    assert not missing.exists()  # a mistyped --db leaves no new file behind


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "apikey", "--help")
    assert code == 0 and out.startswith("usage: sms-sim apikey {create,revoke,list}")
    code, out, _ = run(capsys, "apikey", "create", "--help")
    assert code == 0 and "--tenant" in out


@pytest.mark.slow
def test_a_real_process_prints_the_token_on_stdout_and_nothing_on_stderr(
        db: str, tmp_path: Path) -> None:
    ran = subprocess.run([*START, "apikey", "create", "--tenant", "acme", "--db", db],
                         capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert ran.returncode == 0 and ran.stderr == ""
    (token,) = TOKEN_RE.finditer(ran.stdout)
    assert tenant_of(db, token.group()) == "acme"
