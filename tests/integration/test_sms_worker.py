"""The worker's simulated provider with the SMS model (issue 14), end to end on SQLite:
``init``, ``submit`` and ``worker`` run in process, and the store is then read back.

Tiny latencies and receipt delays; every thread the worker starts is joined inside its run
(the report's ``threads_alive`` is checked).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sms_sim.dispatch.contract import DeliveryStatus
from sms_sim.dispatch.stores import SqliteStore
from tests.conftest import phones
from tests.integration.conftest import Cli

# Real threads and a real SQLite file (STYLE.md section 10).
pytestmark = pytest.mark.slow

RECIPIENTS = 300
FAST = ["--exit-when-idle", "--quiet", "--json", "--mean", "0.002", "--deviation", "0.001",
        "--retry-base", "0.01", "--retry-cap", "0.05"]


def _submit(cli: Cli, tmp_path: Path, content: str = "Storm warning: stay indoors.") -> None:
    assert cli("init").code == 0
    (tmp_path / "to.txt").write_text("\n".join(phones(RECIPIENTS)) + "\n", encoding="utf-8")
    assert cli("submit", "--content", content, "--recipients-file", "to.txt").code == 0


def _worker(cli: Cli, *flags: str) -> dict[str, object]:
    ran = cli("worker", *FAST, *flags)
    assert ran.code == 0, ran.err
    report: dict[str, object] = json.loads(ran.out)
    assert report["stopped_by"] == "completed" and report["threads_alive"] == []
    assert report["accounted"] is True
    return report


def _deliveries(tmp_path: Path) -> list[tuple[DeliveryStatus, int]]:
    store = SqliteStore(tmp_path / "sms_sim.db")
    try:
        return [(d.status, d.attempts) for d in store.deliveries(limit=10_000)]
    finally:
        store.close()


def test_simulated_receipts_end_every_delivery_as_show_counts_them(
        cli: Cli, tmp_path: Path) -> None:
    """Every accepted send draws a receipt: delivered, undelivered, expired (none here: no
    validity) or never (lost, so the delivery stays sent); the worker's counts are
    ``show``'s, and what was not due yet at the stop is outstanding, still sent."""
    _submit(cli, tmp_path)
    report = _worker(cli, "--receipts", "--receipt-median", "0.01", "--undelivered-rate",
                     "0.1", "--lost-rate", "0.1", "--seed", "7")
    receipts = report["receipts"]
    assert isinstance(receipts, dict)
    assert report["sent"] == RECIPIENTS
    shown = json.loads(cli("show", "1", "--json").out)["deliveries"]
    assert shown["delivered"] == receipts["delivered"] > 0
    assert shown["undelivered"] == receipts["undelivered"] > 0
    assert shown["expired"] == receipts["expired"] == 0
    assert shown["sent"] == receipts["unknown"] + receipts["outstanding"]
    assert receipts["unknown"] > 0 and receipts["not_applied"] == 0
    assert (shown["delivered"] + shown["undelivered"] + shown["sent"]) == RECIPIENTS
    statuses = {status for status, _ in _deliveries(tmp_path)}
    assert statuses <= {DeliveryStatus.DELIVERED, DeliveryStatus.UNDELIVERED,
                        DeliveryStatus.SENT}


def test_receipts_after_the_validity_say_expired(cli: Cli, tmp_path: Path) -> None:
    """Receipts take 60 s (sigma 0). Message 1 is valid for 2 s: its receipts say expired
    at the end of its validity, recorded while the worker waits for message 2 (due in
    3 s); message 2 has no validity end, so its receipts are outstanding at the stop."""
    assert cli("init").code == 0
    assert cli("submit", "now", "--to", ",".join(phones(3)), "--valid-for", "2s").code == 0
    assert cli("submit", "later", "--to", ",".join(phones(2)), "--in", "3s").code == 0
    report = _worker(cli, "--receipt-median", "60", "--receipt-sigma", "0", "--lost-rate",
                     "0", "--undelivered-rate", "0", "--idle-recheck", "0.05")
    assert report["sent"] == 5
    assert report["receipts"] == {"delivered": 0, "undelivered": 0, "expired": 3,
                                  "unknown": 0, "outstanding": 2, "not_applied": 0}
    shown = json.loads(cli("show", "1", "--json").out)["deliveries"]
    assert (shown["expired"], shown["sent"]) == (3, 0)


def test_a_permanent_rate_of_one_makes_everything_dead_after_one_attempt(
        cli: Cli, tmp_path: Path) -> None:
    _submit(cli, tmp_path)
    report = _worker(cli, "--permanent-rate", "1", "--max-attempts", "5", "--receipts")
    assert (report["sent"], report["retried"], report["dead"]) == (0, 0, RECIPIENTS)
    assert _deliveries(tmp_path) == [(DeliveryStatus.DEAD, 1)] * RECIPIENTS
    assert report["receipts"] == {"delivered": 0, "undelivered": 0, "expired": 0,
                                  "unknown": 0, "outstanding": 0, "not_applied": 0}


def test_throttled_sends_are_retried_after_the_pause_and_end_sent(
        cli: Cli, tmp_path: Path) -> None:
    _submit(cli, tmp_path)
    report = _worker(cli, "--throttle-rate", "0.1", "--retry-after", "0.02",
                     "--max-attempts", "50", "--seed", "3")
    assert report["throttles"] and report["retried"]
    assert report["dead"] == 0 and report["sent"] == RECIPIENTS
    assert {status for status, _ in _deliveries(tmp_path)} == {DeliveryStatus.SENT}


def test_segments_are_counted_sent_and_rate_limited_per_segment(
        cli: Cli, tmp_path: Path) -> None:
    """200 Cyrillic letters are three UCS-2 segments: the report counts three per send,
    as ``show`` does."""
    _submit(cli, tmp_path, content="ж" * 200)
    report = _worker(cli, "--senders", "8", "--rate-limit", "3000", "--per-segment",
                     "0.0005")
    assert report["sent"] == RECIPIENTS and report["segments_sent"] == 3 * RECIPIENTS
    shown = json.loads(cli("show", "1", "--json").out)
    assert shown["segments"] == 3 and shown["progress"]["segments_sent"] == 3 * RECIPIENTS


def test_wait_for_receipts_exits_only_once_every_receipt_is_recorded(
        cli: Cli, tmp_path: Path) -> None:
    """With ``--wait-for-receipts`` nothing is left outstanding: every delivery ends as its
    receipt says, or stays sent for a receipt that never comes (lost)."""
    _submit(cli, tmp_path)
    report = _worker(cli, "--receipts", "--receipt-median", "0.05", "--receipt-sigma", "1",
                     "--lost-rate", "0.1", "--seed", "3", "--wait-for-receipts")
    receipts = report["receipts"]
    assert isinstance(receipts, dict)
    assert receipts["outstanding"] == 0
    statuses = [status for status, _ in _deliveries(tmp_path)]
    assert statuses.count(DeliveryStatus.SENT) == receipts["unknown"]
    assert statuses.count(DeliveryStatus.DELIVERED) == receipts["delivered"] > 0
    assert len(statuses) == RECIPIENTS


@pytest.mark.parametrize("flags", [["--wait-for-receipts", "--receipts"],
                                   ["--wait-for-receipts", "--exit-when-idle"]])
def test_wait_for_receipts_without_what_it_waits_for_is_refused(
        cli: Cli, tmp_path: Path, flags: list[str]) -> None:
    assert cli("init").code == 0
    ran = cli("worker", *flags)
    assert ran.code == 2 and len(ran.err.splitlines()) == 1, ran.err
    assert "--wait-for-receipts needs --exit-when-idle and --receipts" in ran.err
