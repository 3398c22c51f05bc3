"""The claim's split (``stores.fairness``) against an independent reference, and
PostgreSQL's statement of it (``postgres.split``) against the Python one.

The reference hands out one unit at a time to the demand with the smallest share so far
(the earliest on a tie): the plainest statement of max-min fairness with the units left
over going in order, with none of water filling's arithmetic. The PostgreSQL statement
must give the very same grants in the very same order: the memory and SQLite stores run
the Python split, and the state-machine test compares every store's claims with the
memory store's.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sms_sim.dispatch.stores.fairness import DueMessage, fair_split, water_fill
from tests.pg_cluster import PgCluster

demands = st.lists(st.integers(0, 40), max_size=12)


def _one_at_a_time(wanted: list[int], budget: int) -> list[int]:
    shares = [0] * len(wanted)
    for _ in range(budget):
        open_ = [i for i, want in enumerate(wanted) if shares[i] < want]
        if not open_:
            break
        shares[min(open_, key=lambda i: (shares[i], i))] += 1
    return shares


@given(wanted=demands, budget=st.integers(0, 200))
def test_water_filling_is_handing_out_units_one_at_a_time(wanted: list[int],
                                                          budget: int) -> None:
    filled = water_fill(wanted, budget)
    assert [share for share, _ in filled] == _one_at_a_time(wanted, budget)
    # A unit left over sits one above every share that still wants more and got none.
    tops = {share for share, extra in filled if extra}
    assert len(tops) <= 1
    for (share, extra), want in zip(filled, wanted, strict=True):
        if tops and not extra and share < want:
            assert share == min(tops) - 1


@st.composite
def due_sets(draw: st.DrawFn) -> tuple[list[DueMessage], int, dict[str, int]]:
    tenants = draw(st.lists(st.sampled_from("abcde"), min_size=1, max_size=10))
    due = [DueMessage(tenant, draw(st.integers(0, 2)), 100 + i, draw(st.integers(0, 30)))
           for i, tenant in enumerate(tenants)]
    served = draw(st.dictionaries(st.sampled_from("abcde"), st.integers(1, 50)))
    return due, draw(st.integers(1, 80)), served


def _by_tenant(grants: list[tuple[int, int]], due: list[DueMessage]) -> dict[str, int]:
    tenant_of = {m.message_id: m.tenant for m in due}
    totals = {m.tenant: 0 for m in due}
    for message_id, count in grants:
        totals[tenant_of[message_id]] += count
    return totals


@given(case=due_sets())
def test_the_split_is_fair_across_tenants_classes_and_messages(
        case: tuple[list[DueMessage], int, dict[str, int]]) -> None:
    due, limit, served = case
    grants = fair_split(due, limit, served)
    counts = dict(grants)
    assert len(counts) == len(grants)  # one grant per message
    assert all(0 < counts[m.message_id] <= m.ready for m in due if m.message_id in counts)
    assert sum(counts.values()) == min(limit, sum(m.ready for m in due))
    demand = {t: sum(min(m.ready, limit) for m in due if m.tenant == t)
              for t in {m.tenant for m in due}}
    totals = _by_tenant(grants, due)
    for tenant, total in totals.items():
        for other, other_total in totals.items():
            if total < demand[tenant]:  # still wanting: nobody is two ahead of it
                assert other_total <= total + 1, (tenant, other)
    for tenant in totals:
        mine = [m for m in due if m.tenant == tenant]
        for m in mine:  # a lower class only once every higher one has all it can take
            if counts.get(m.message_id, 0) and any(
                    h.rank > m.rank and counts.get(h.message_id, 0) < h.ready for h in mine):
                raise AssertionError(f"{m} served before a higher class ran out")


@pytest.fixture(scope="module")
def connection(pg_cluster: PgCluster) -> Iterator[object]:
    import psycopg

    with psycopg.connect(pg_cluster.url, autocommit=True) as conn:
        yield conn


_ASKED = """
SELECT a.message_id, a.tenant, a.rank, a.pos, LEAST(a.ready, %(limit)s) AS demand,
    CASE WHEN mod(a.pos, 2) = 0 THEN 1 END AS keep
FROM unnest(%(ids)s::bigint[], %(tenants)s::text[], %(ranks)s::bigint[], %(readies)s::bigint[])
    WITH ORDINALITY AS a(message_id, tenant, rank, ready, pos)
"""
_TENANTS = "(SELECT * FROM unnest(%(names)s::text[], %(seqs)s::bigint[]) AS s(name, served_seq))"


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=due_sets())
def test_the_postgres_statement_splits_as_the_python_split(
        connection: object, case: tuple[list[DueMessage], int, dict[str, int]]) -> None:
    from psycopg import Connection

    from sms_sim.dispatch.stores.postgres.split import split_sql

    assert isinstance(connection, Connection)
    due, limit, served = case
    rows = connection.execute(split_sql(_ASKED, _TENANTS, keep="keep"), {
        "limit": limit, "ids": [m.message_id for m in due], "tenants": [m.tenant for m in due],
        "ranks": [m.rank for m in due], "readies": [m.ready for m in due],
        "names": list(served), "seqs": list(served.values())}).fetchall()
    grants = fair_split(due, limit, served)
    assert [(row[0], row[-1]) for row in rows if row[-1] > 0] == grants
    # The rest come back only when the caller asked to keep them (even positions here).
    kept = {m.message_id for pos, m in enumerate(due, start=1) if pos % 2 == 0}
    assert {row[0] for row in rows} == {m for m, _ in grants} | kept
