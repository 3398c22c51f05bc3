"""Delivery receipts end to end, as a real deployment wires them: the API serves, a worker
sends over HTTP to the (fake) provider, and the provider posts its receipts back to
``POST /v1/provider/receipts`` with a provider key. Every recipient ends ``delivered``,
receipts that overtake the worker's own record of the send are held and then applied, and
the provider posting a batch again changes nothing.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.api.live_server import eventually, live_server
from tests.conftest import START, phones
from tests.fake_provider import FakeProvider, Faults, ReceiptCallback, write_token

pytestmark = pytest.mark.slow

RECIPIENTS = 200
TIMEOUT_S = 60.0


def _key(directory: Path, *role: str) -> str:
    made = subprocess.run([*START, "apikey", "create", *role, "--db", str(directory / "d.db"),
                           "--json"], capture_output=True, text=True, check=True, timeout=60)
    return str(json.loads(made.stdout)["token"])


def test_receipts_posted_by_the_provider_mark_every_delivery_delivered(
        tmp_path: Path) -> None:
    with live_server(tmp_path) as server:
        tenant = {"Authorization": f"Bearer {_key(tmp_path, '--tenant', 'acme')}"}
        provider_key = _key(tmp_path, "--provider")
        callback = ReceiptCallback(url=f"{server.url}/v1/provider/receipts",
                                   token=provider_key, batch_max=25)
        created = httpx.post(f"{server.url}/v1/messages", headers=tenant, timeout=30, json={
            "content": "Shelter in place", "recipients": phones(RECIPIENTS)})
        assert created.status_code == 201, created.text
        message = created.json()["id"]
        # ambiguous_every: the provider takes a message, then its answer is lost; the
        # worker's retry is absorbed by the key and gets no second receipt.
        with FakeProvider(receipts=callback, faults=Faults(ambiguous_every=11)) as fake:
            worker = subprocess.run(
                [*START, "worker", "--db", str(tmp_path / "d.db"), "--provider", fake.url,
                 "--provider-token-file", str(write_token(tmp_path / "provider.token")),
                 "--retry-base", "0.01", "--exit-when-idle", "--quiet"],
                capture_output=True, text=True, timeout=TIMEOUT_S)
            assert worker.returncode == 0, worker.stderr
        # Leaving the block posted every receipt still queued; all were answered.
        assert fake.summary().effective_duplicates == 0
        assert {status for status, _ in fake.receipt_posts} == {200}, fake.receipt_posts

        def progress() -> dict[str, int]:
            found = httpx.get(f"{server.url}/v1/messages/{message}", headers=tenant,
                              timeout=30)
            assert found.status_code == 200, found.text
            return dict(found.json()["progress"])

        eventually(lambda: progress()["delivered"] == RECIPIENTS, timeout_s=TIMEOUT_S,
                   what="every delivery delivered", detail=lambda: str(progress()))

        # The provider posting a receipt again changes nothing (a repeat), and a later
        # contrary one cannot undo delivered.
        key = fake.attempts[0].key
        for status, outcome in (("delivered", "repeat"), ("undelivered", "ignored")):
            again = httpx.post(f"{server.url}/v1/provider/receipts", timeout=30,
                               headers={"Authorization": f"Bearer {provider_key}"},
                               json={"receipts": [{"key": key, "status": status,
                                                   "at": "2026-01-01T00:00:00Z"}]})
            assert again.status_code == 200, again.text
            assert [r["outcome"] for r in again.json()["results"]] == [outcome], again.text
        assert progress()["delivered"] == RECIPIENTS
