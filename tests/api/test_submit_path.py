"""The submit's short path (issue 12's benchmark): the answer comes from the store's own copy
of the new message.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from sms_sim.dispatch.contract import MessageView, SubmitResult
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.stores import MemoryStore, SqliteStore
from tests.api.conftest import ApiHarness


class CountingMemoryStore(MemoryStore):
    """Counts the reads of messages (``messages``), the read-back an answer would need."""

    reads = 0

    def messages(self, **kwargs: Any) -> list[MessageView]:
        self.reads += 1
        return super().messages(**kwargs)


class CountingSqliteStore(SqliteStore):
    reads = 0

    def messages(self, **kwargs: Any) -> list[MessageView]:
        self.reads += 1
        return super().messages(**kwargs)


class ViewlessStore(CountingMemoryStore):
    """A store that keeps no copy of the new message (``SubmitResult.view`` None)."""

    def submit(self, message: NewMessage, now: float) -> SubmitResult:
        return dataclasses.replace(super().submit(message, now), view=None)


def _opened(kind: str, tmp_path: Path) -> CountingMemoryStore | CountingSqliteStore:
    if kind == "sqlite":
        return CountingSqliteStore(tmp_path / "x.db")
    return ViewlessStore() if kind == "viewless" else CountingMemoryStore()


@pytest.mark.parametrize(("kind", "reads"), [("memory", 0), ("sqlite", 0), ("viewless", 1)])
def test_a_submit_is_answered_from_the_stores_copy_of_the_new_message(
        tmp_path: Path, kind: str, reads: int) -> None:
    """Memory and SQLite give the message as their transaction left it, so the answer needs
    no read-back; a store that does not (PostgreSQL today) is read once, as before."""
    store = _opened(kind, tmp_path)
    api = ApiHarness(store)
    acme = api.headers()
    with api.client:
        response = api.submit(acme, 3, priority=2, valid_for=60)
        assert response.status_code == 201, response.text
        assert store.reads == reads
        body = response.json()
        shown = api.client.get(f"/v1/messages/{body['id']}", headers=acme).json()
        assert {**shown, "duplicates_dropped": 0, "suppressed": 0} == body
    store.close()


def test_an_answer_from_the_stores_copy_counts_opted_out_recipients(tmp_path: Path) -> None:
    store = CountingSqliteStore(tmp_path / "x.db")
    api = ApiHarness(store)
    acme = api.headers()
    with api.client:
        api.service.add_opt_outs(["555-010-0001", "555-010-0002"], tenant="acme")
        some = api.submit(acme, recipients=["555-010-0001", "555-010-0003"]).json()
        assert (some["status"], some["suppressed"]) == ("scheduled", 1)
        assert some["deliveries"]["pending"] == 1
        every = api.submit(acme, recipients=["555-010-0001", "555-010-0002"]).json()
        assert (every["status"], every["outcome"], every["suppressed"]) == (
            "completed", "all suppressed", 2)
        assert every["completed_at"] is not None and store.reads == 0
    store.close()
