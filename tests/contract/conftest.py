"""The stores every contract test runs against, and the helpers those tests share.

Backends are resolved lazily by name with ``request.getfixturevalue`` so a backend that
cannot run skips only its own cases. ``opener`` gives a fresh handle on the same store: for
SQLite a new connection to the same file (as another worker process would have), for memory
the same object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sms_sim.dispatch.contract import DispatchStore
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.stores import MemoryStore, SqliteStore
from sms_sim.dispatch.tenants import DEFAULT_TENANT
from tests.conftest import T0, phones

LEASE_S = 30.0
BACKENDS = ["memory", "sqlite"]

Opener = Callable[[], DispatchStore]


@pytest.fixture
def memory_opener() -> Iterator[Opener]:
    store = MemoryStore()
    yield lambda: store
    store.close()


@pytest.fixture
def sqlite_opener(tmp_path: Path) -> Iterator[Opener]:
    opened: list[SqliteStore] = []

    def open_store() -> DispatchStore:
        store = SqliteStore(tmp_path / "contract.db")
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


@pytest.fixture(params=BACKENDS)
def opener(request: pytest.FixtureRequest) -> Opener:
    resolved: Opener = request.getfixturevalue(f"{request.param}_opener")
    return resolved


@pytest.fixture
def store(opener: Opener) -> DispatchStore:
    return opener()


# Fresh stores for property tests: Hypothesis runs many examples in one test call, and each
# needs an empty store of its own (an SQLite in-memory database runs the same SQL as a file).
@pytest.fixture(scope="module")
def memory_factory() -> Opener:
    return MemoryStore


@pytest.fixture(scope="module")
def sqlite_factory() -> Opener:
    return lambda: SqliteStore(":memory:")


@pytest.fixture(scope="module", params=BACKENDS)
def new_store(request: pytest.FixtureRequest) -> Opener:
    resolved: Opener = request.getfixturevalue(f"{request.param}_factory")
    return resolved


def submit(store: DispatchStore, count: int = 1, *, at: float | None = None,
           key: str | None = None, priority: int = 0, now: float = T0, start: int = 0,
           tenant: str = DEFAULT_TENANT) -> int:
    message = NewMessage.validated(content="alert", recipients=phones(count, start),
                                   scheduled_at=at, idempotency_key=key, priority=priority,
                                   tenant=tenant)
    return store.submit(message, now).message_id
