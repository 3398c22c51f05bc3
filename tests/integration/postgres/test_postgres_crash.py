"""Crash and fault tests on PostgreSQL (issue 13): the SQLite crash test's chaos (worker
processes, each with its own pool, SIGKILLed and SIGSTOPped at random) plus the server
itself crashed and restarted mid-run (``pg_ctl restart -m immediate``); the server stopped
for 10 s under a running worker; a statement timeout.

The audit reads the provider's ledger (its own SQLite file), not the store. Crashing and
stopping a server needs one of our own: a private one for this module
(``PgCluster(private=True)``), so the session's server and its other tests never notice.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sms_sim.clock import RealClock
from sms_sim.dispatch.contract import DeliveryStatus, DispatchStore
from sms_sim.dispatch.ledger import LedgerProvider
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.stores import open_store
from tests.conftest import START, eventually, phones
from tests.integration.chaos_harness import run_chaos
from tests.pg_cluster import DSN_VARIABLE, PgCluster, with_settings

pytest.importorskip("psycopg")

from sms_sim.dispatch.stores.postgres.claim import CLAIM_IDLE_LIMIT_S  # noqa: E402

# Real processes, a real server and wall-clock waits (STYLE.md section 10).
pytestmark = pytest.mark.slow

LEASE_S = 1.0
# One claim round, budgeted for this shared 2-core machine: a worker's next claim after a
# lease ran out (its idle recheck, a claim, the hand-over to a sender; ~0.1 s unloaded).
ROUND_S = 0.5
# A lease runs out, then the next claim rescues it and a sender sends it: one lease and one
# round, plus, when a worker was paused inside its claim (which every claim waits for), up
# to the claim's idle limit, after which the server ends that claim.
REDELIVERY_BOUND_S = LEASE_S + CLAIM_IDLE_LIMIT_S + ROUND_S
# After a server crash, how long reconnecting may take (the pool's retries, the worker's
# patience): redeliveries that wait for it are not judged against one lease plus one round.
RECONNECT_S = 3.0
OUTAGE_S = 10.0


@pytest.fixture(scope="module")
def server() -> Iterator[PgCluster]:
    """A server of this module's own, to crash and stop."""
    try:
        cluster = PgCluster(private=True)
    except RuntimeError as exc:
        if os.environ.get(DSN_VARIABLE):  # pointed at another server, with no local one
            pytest.skip(f"needs a PostgreSQL server of its own to crash ({exc})")
        pytest.fail(str(exc), pytrace=False)
    yield cluster
    cluster.close()


def test_killed_paused_workers_and_a_crashed_server_never_deliver_twice_nor_lose_anything(
        server: PgCluster, tmp_path: Path) -> None:
    # A lost lease is sent again within one lease and one round (the crash's own outage
    # aside: those redeliveries wait for the server). Whether a run has such a redelivery
    # clear of the crash to judge is chance: the chaos's opening pause puts its resends
    # 1.7-2.0 s in, against the crash at 2 s, and a loaded machine pushed them past it (1
    # fresh-clone run of 2, 1 in 4 beside a CPU hog). So a run that judged none is followed
    # by one on the next seed, up to 3; every run's promises are checked all the same.
    judged: list[float] = []
    for attempt, seed in enumerate((21, 22, 23)):
        root = tmp_path / f"run-{attempt}"
        root.mkdir()
        result = run_chaos(root, messages=3, recipients=400, workers=3, lease_s=LEASE_S,
                           seed=seed, chaos_for_s=3.0, mean_s=0.02,
                           urls=[server.fresh_url()], fault=server.restart,
                           fault_after_s=2.0)
        assert result.finished, result.worker_logs[-1]
        assert result.faults and result.kills >= 1 and result.pauses >= 1
        assert set(result.statuses) <= {"sent", "dead"} \
            and sum(result.statuses.values()) == 1200
        assert result.lost == 0
        assert result.ledger.effective_duplicates == 0
        assert result.ledger.recipients_delivered == result.statuses["sent"]
        gaps_s = result.resend_gaps_s(clear_of_faults_s=RECONNECT_S)
        assert max(gaps_s, default=0.0) <= REDELIVERY_BOUND_S, max(gaps_s)
        # Workers reconnected by themselves: none died of the crash, and each said so.
        assert not [log for log in result.worker_logs if "Traceback" in log]
        assert any("the store answers again" in log for log in result.worker_logs)
        judged = [gap_s for gap_s in gaps_s if gap_s > ROUND_S]
        if judged:
            break
    assert judged, "no lost lease was redelivered clear of the crash in 3 runs"


def test_the_same_chaos_without_fencing_or_keys_is_caught_delivering_twice(
        server: PgCluster, tmp_path: Path) -> None:
    result = run_chaos(tmp_path, messages=3, recipients=300, workers=3, lease_s=LEASE_S,
                       seed=21, chaos_for_s=3.0, mean_s=0.02, urls=[server.fresh_url()],
                       fencing=False)
    assert result.finished
    assert result.ledger.effective_duplicates > 0


def _worker(url: str, ledger: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [*START, "worker", "--db", url, "--ledger", str(ledger), "--senders", "2",
             "--mean", "0.01", "--deviation", "0", "--lease", "5", "--batch", "20",
             "--exit-when-idle", "--quiet", "--interval", "3600", "--seed", "5", *extra],
            stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)


def _reap(worker: subprocess.Popen[bytes]) -> None:
    """Kill ``worker`` if it is still running (a test failed before it exited)."""
    if worker.poll() is None:
        worker.kill()
        worker.wait()


def _sent(store: DispatchStore) -> int:
    return store.delivery_counts()[DeliveryStatus.SENT]


def _audit(store: DispatchStore, ledger_path: Path, total: int) -> None:
    """Everything sent, each recipient reached exactly once by the provider."""
    ledger = LedgerProvider(ledger_path, clock=RealClock())
    try:
        summary = ledger.summary()
    finally:
        ledger.close()
    assert store.delivery_counts()[DeliveryStatus.SENT] == total
    assert summary.recipients_delivered == total and summary.effective_duplicates == 0


def test_a_server_stopped_for_ten_seconds_under_a_running_worker_is_waited_out(
        server: PgCluster, tmp_path: Path) -> None:
    url = server.fresh_url()
    store = open_store(url, create=True)
    ledger = tmp_path / "ledger.db"
    for number in range(2):
        store.submit(NewMessage.validated(content=f"m{number}",
                                          recipients=phones(300, start=1000 * number)),
                     RealClock().now())
    log = tmp_path / "worker.log"
    worker = _worker(url, ledger, log)
    try:
        assert eventually(lambda: _sent(store) >= 50, within_s=60)
        server.down()
        RealClock().sleep(OUTAGE_S, threading.Event())  # the outage itself
        assert worker.poll() is None  # it waited
        server.up()
        assert worker.wait(timeout=120) == 0, log.read_text()
    finally:
        _reap(worker)
    output = log.read_text()
    assert "trying again" in output and "the store answers again" in output, output
    assert "Traceback" not in output, output
    store.close()  # its pooled connection died with the server: audit on a new one
    audit = open_store(url, read_only=True)
    _audit(audit, ledger, 600)
    audit.close()


def test_a_statement_timeout_is_a_transient_error_and_the_worker_carries_on(
        pg_cluster: PgCluster, tmp_path: Path) -> None:
    import psycopg

    url = pg_cluster.fresh_url()
    store = open_store(url, create=True)
    store.submit(NewMessage.validated(content="x", recipients=phones(5)), RealClock().now())
    log, ledger = tmp_path / "worker.log", tmp_path / "ledger.db"
    # A long transaction holds the deliveries table: every worker statement that needs it
    # runs into the worker's 300 ms statement timeout until it ends.
    with psycopg.connect(url) as blocker:
        blocker.execute("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE")
        worker = _worker(with_settings(url, "statement_timeout=300"), ledger, log)
        try:
            assert eventually(lambda: "statement timeout" in log.read_text(), within_s=60)
            assert worker.poll() is None
        finally:
            blocker.rollback()
    try:
        assert worker.wait(timeout=60) == 0, log.read_text()
    finally:
        _reap(worker)
    output = log.read_text()
    assert "the store answers again" in output and "Traceback" not in output, output
    _audit(store, ledger, 5)
    store.close()
