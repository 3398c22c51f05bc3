"""The whole service as a newcomer runs it: ``serve --with-worker`` as a real process on
127.0.0.1, a key from ``apikey create``, a 2,000-recipient message over HTTP, watched until it
completes, then SIGTERM. The provider ledger (a file of its own, written by the worker)
is the independent witness that every recipient got exactly one delivery."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from sms_sim.clock import RealClock
from sms_sim.dispatch.ledger import LedgerProvider
from tests.api.live_server import eventually, live_server
from tests.conftest import START, phones

pytestmark = pytest.mark.slow

RECIPIENTS = 2000
COMPLETE_TIMEOUT_S = 180.0


def create_key(directory: Path, tenant: str) -> str:
    made = subprocess.run([*START, "apikey", "create", "--tenant", tenant, "--db", "d.db",
                           "--json"], capture_output=True, text=True, cwd=directory, timeout=60)
    assert made.returncode == 0, made.stderr
    token: str = json.loads(made.stdout)["token"]
    return token


def all_deliveries(http: httpx.Client, message_id: int) -> list[dict[str, object]]:
    """Every delivery of the message, following the cursor page by page."""
    found: list[dict[str, object]] = []
    after: int | None = None
    while True:
        params = {"limit": 1000} | ({} if after is None else {"after": after})
        page = http.get(f"/v1/messages/{message_id}/deliveries", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        found.extend(body["data"])
        if not body["has_more"]:
            return found
        after = body["next_after"]


def test_serve_with_worker_delivers_each_recipient_exactly_once_and_stops_on_sigterm(
        tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    with live_server(tmp_path, "--with-worker", "--quiet", "--ledger", str(ledger),
                     "--senders", "4", "--mean", "0.0005", "--deviation", "0.0005",
                     "--seed", "7") as server:
        token = create_key(tmp_path, "acme")
        with httpx.Client(base_url=server.url, timeout=60,
                          headers={"Authorization": f"Bearer {token}"}) as http:
            answer = http.post("/v1/messages", json={"content": "All hands at 10 in hall B",
                                                     "recipients": phones(RECIPIENTS)})
            assert answer.status_code == 201, answer.text
            message_id = answer.json()["id"]
            assert answer.headers["location"].endswith(f"/v1/messages/{message_id}")

            def completed() -> bool:
                shown = http.get(f"/v1/messages/{message_id}")
                assert shown.status_code == 200, shown.text
                return bool(shown.json()["status"] == "completed")

            eventually(completed, timeout_s=COMPLETE_TIMEOUT_S, what="the message completing",
                       detail=lambda: server.output[-3000:])
            final = http.get(f"/v1/messages/{message_id}").json()
            deliveries = all_deliveries(http, message_id)
        assert final["deliveries"]["sent"] == RECIPIENTS, final
        assert final["progress"]["percent_sent"] == 100
        assert len(deliveries) == RECIPIENTS
        assert {d["status"] for d in deliveries} == {"sent"}
        worker = server.worker_pid
        assert worker is not None
        assert server.stop() == 0, server.output[-3000:]
    assert "Traceback" not in server.output
    with pytest.raises(ProcessLookupError):  # serve waited for its worker
        os.kill(worker, 0)
    provider = LedgerProvider(ledger, clock=RealClock())
    try:
        summary = provider.summary()
        targets = provider.delivered_targets()
    finally:
        provider.close()
    assert summary.recipients_delivered == RECIPIENTS
    assert summary.effective_duplicates == 0
    assert summary.delivered == RECIPIENTS  # every first send new; any retry was absorbed
    recipients = {target.split(":", 1)[1] for target in targets}
    assert recipients == {str(d["recipient"]) for d in deliveries}
