"""The PostgreSQL claim with more due messages than a claim can give anything: it leases
exactly what the memory store (the reference) leases, claim after claim.

The state machine rarely has more messages in a tenant than its claim's limit; this drives
many small messages over three tenants, two priorities and aging (claims more than
``AGING_STEP_S`` apart), with settles and retries between claims, so some messages have
nothing ready and others are retried, while the split has more messages than deliveries
to give."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sms_sim.dispatch.contract import Claim, DispatchStore, SettleKind, Settlement
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.stores import open_store
from sms_sim.dispatch.stores.memory import MemoryStore
from tests.conftest import T0
from tests.pg_cluster import PgCluster

pytestmark = pytest.mark.slow

LEASE_S = 600.0

messages = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from([0, 1]),
                              st.integers(1, 3), st.sampled_from([0.0, 5.0, 70.0])),
                    min_size=6, max_size=24)
steps = st.lists(st.tuples(st.sampled_from([0.0, 1.0, 61.0, 130.0]), st.integers(1, 6),
                           st.sampled_from(["keep", "sent", "retry"])),
                 min_size=2, max_size=8)


def _seen(claims: list[Claim]) -> list[tuple[int, str, int, int]]:
    return [(c.message_id, c.recipient, c.attempts, c.priority) for c in claims]


def _report(store: DispatchStore, claims: list[Claim], how: str, now: float) -> None:
    if how == "keep" or not claims:
        return
    kind = SettleKind.SENT if how == "sent" else SettleKind.RETRY
    store.settle("w", [Settlement(c.delivery_id, c.attempts, kind, None if how == "sent"
                                  else "busy", None if how == "sent" else now + 1.0)
                       for c in claims[::2]], now)


def test_claims_among_many_small_messages_lease_what_the_reference_leases(
        pg_cluster: PgCluster) -> None:
    @settings(max_examples=40, deadline=None)
    @given(sent=messages, plan=steps)
    def run(sent: list[tuple[str, int, int, float]],
            plan: list[tuple[float, int, str]]) -> None:
        reference = MemoryStore()
        store = open_store(pg_cluster.fresh_url(), create=True)
        try:
            number = 0
            for tenant, priority, count, delay in sent:
                people = [f"555-{number + i:03d}-0000" for i in range(count)]
                number += count
                message = NewMessage.validated(content="m", recipients=people, tenant=tenant,
                                               priority=priority, scheduled_at=T0 + delay)
                reference.submit(message, T0)
                store.submit(message, T0)
            now = T0
            for advance, limit, how in plan:
                now += advance
                expected = reference.claim("w", limit, LEASE_S, now)
                got = store.claim("w", limit, LEASE_S, now)
                assert _seen(got) == _seen(expected)
                _report(reference, expected, how, now)
                _report(store, got, how, now)
        finally:
            store.close()

    run()
