"""What the PostgreSQL store's own tests share: a fresh, empty schema of the session's
server (``url``) and a store opened on it (``store``). The contract suite and the state
machine run on PostgreSQL too (``tests/contract``, ``tests/properties``); these modules
look at what only this store has."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sms_sim.dispatch.contract import DispatchStore
from sms_sim.dispatch.stores import open_store
from tests.pg_cluster import PgCluster


@pytest.fixture
def url(pg_cluster: PgCluster) -> str:
    """A fresh, empty schema."""
    return pg_cluster.fresh_url()


@pytest.fixture
def store(url: str) -> Iterator[DispatchStore]:
    opened = open_store(url, create=True)
    yield opened
    opened.close()
