"""Helpers shared by the test modules (STYLE.md section 10).

Plain names, imported explicitly (``from tests.conftest import T0, phones``) so a reader
sees where each comes from; pytest loads this module as ``tests.conftest`` as well, so both
routes give the same objects.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest

from sms_sim.clock import RealClock
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.transport import MemoryProvider, TransportError

if TYPE_CHECKING:
    from tests.pg_cluster import PgCluster

# The repository root (where ``start.py`` lives) and the command that runs the CLI from it.
ROOT = Path(__file__).resolve().parents[1]
START = [sys.executable, str(ROOT / "start.py")]

# A fixed epoch for store and dispatcher tests: far from zero, with a fraction that floats
# represent exactly, so timestamps compare with ``==``.
T0 = 1_000_000_000.125


def phones(count: int, start: int = 0) -> list[str]:
    """``count`` distinct valid numbers: ``555-000-0000``, ``555-000-0001``, ... from ``start``.

    Past 10,000 the middle group counts up (``555-001-0000``), so any count stays distinct.
    """
    return [f"555-{(start + i) // 10000:03d}-{(start + i) % 10000:04d}" for i in range(count)]


def one_message() -> NewMessage:
    """A one-recipient message, for tests about the store rather than its content."""
    return NewMessage.validated(content="hi", recipients=phones(1, start=1))


def eventually(condition: Callable[[], bool], *, within_s: float,
               every_s: float = 0.05) -> bool:
    """Whether ``condition`` comes true within ``within_s`` of real time, looking every
    ``every_s``: for tests of processes and servers, where a bounded wait is the assertion
    (generous bounds; nothing asserts how fast)."""
    clock, never = RealClock(), threading.Event()
    deadline = clock.monotonic() + within_s
    while not condition():
        if clock.monotonic() >= deadline:
            return False
        clock.sleep(every_s, never)
    return True


class ReadsTime(Protocol):
    def now(self) -> float: ...


class RecordingProvider(MemoryProvider):
    """Records the clock's time and the key of every send; fails the first ``fail_first``."""

    def __init__(self, clock: ReadsTime, fail_first: int = 0) -> None:
        super().__init__()
        self.clock = clock
        self.fail_first = fail_first
        self.sent_at: list[float] = []
        self.keys: list[str] = []

    def send(self, key: str, recipient: str, content: str) -> None:
        self.sent_at.append(self.clock.now())
        self.keys.append(key)
        if self.fail_first > 0:
            self.fail_first -= 1
            raise TransportError("provider busy")
        super().send(key, recipient, content)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The PostgreSQL server of this session (``tests.pg_cluster``): started once, stopped
    at the end. Without psycopg the Postgres cases skip, unless ``SMS_SIM_PG_DSN`` asks for
    them; a server that cannot be started or reached fails them."""
    from tests.pg_cluster import DSN_VARIABLE, PgCluster

    if importlib.util.find_spec("psycopg") is None:
        if os.environ.get(DSN_VARIABLE):
            pytest.fail(f"{DSN_VARIABLE} is set but psycopg is not installed", pytrace=False)
        pytest.skip("psycopg is not installed (pip install 'sms_sim[postgres]')")
    try:
        cluster = PgCluster()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield cluster
    cluster.close()
