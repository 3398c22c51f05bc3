"""Wake-ups by ``LISTEN/NOTIFY`` on PostgreSQL (issue 13): an idle worker waiting far longer
than it takes a test to finish is woken by a submit; its listening connection killed, it
still picks up new work within the polling bound; notifications go out on submit, edit,
cancel and requeue, never per delivery; ``sms_sim_pooling=transaction`` (PgBouncer in
transaction mode) polls instead.

Bounded waits only: "within 10 s" against an idle wait of 30 s is what shows the wake-up;
nothing here asserts how fast.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from sms_sim.dispatch.contract import (
    DeliveryStatus,
    DispatchStore,
    MessageStatus,
    SettleKind,
    Settlement,
)
from sms_sim.dispatch.errors import StoreError
from sms_sim.dispatch.requests import MessageEdit, NewMessage
from sms_sim.dispatch.stores import open_store
from sms_sim.dispatch.wake import WOKEN_IDLE_RECHECK_S, idle_recheck_for, wake_channel_of
from sms_sim.errors import ConfigError
from tests.conftest import START, T0, eventually, phones
from tests.pg_cluster import PgCluster

pytest.importorskip("psycopg")

from sms_sim.dispatch.stores.postgres import PostgresStore  # noqa: E402
from sms_sim.dispatch.stores.postgres.database import pooling_of  # noqa: E402
from sms_sim.dispatch.stores.postgres.listen import CHANNEL_SQL, LISTENER_NAME  # noqa: E402

# Real processes and a real server (STYLE.md section 10).
pytestmark = pytest.mark.slow

PICKUP_WITHIN_S = 10.0  # far below the workers' 30 s idle wait
IDLE_RECHECK_S = 30.0


def _listen_statement(url: str) -> str:
    """The ``LISTEN`` a worker's listener on ``url`` runs (its channel is per schema)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT {CHANNEL_SQL}").fetchone()
        assert row is not None
        return sql.SQL("LISTEN {}").format(sql.Identifier(row[0])).as_string(conn)


def _listeners(url: str) -> list[int]:
    """The server pids listening on ``url``'s channel, by their last statement."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return [int(row[0]) for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND query = %s",
            (LISTENER_NAME, _listen_statement(url)))]


def _start_worker(url: str, tmp_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    log = (tmp_path / "worker.log").open("wb")
    return subprocess.Popen([*START, "worker", "--db", url, "--mean", "0", "--deviation", "0",
                             "--senders", "1", "--idle-recheck", f"{IDLE_RECHECK_S:g}",
                             "--quiet", *extra],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)


def _stop(worker: subprocess.Popen[bytes], tmp_path: Path) -> str:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)
    return (tmp_path / "worker.log").read_text(errors="replace")


def _completed(store: DispatchStore, message_id: int) -> bool:
    return store.messages(message_id=message_id)[0].status is MessageStatus.COMPLETED


def test_a_submit_wakes_an_idle_worker_long_before_its_idle_recheck(
        url: str, store: DispatchStore, tmp_path: Path) -> None:
    # The fallback poll is as long as the idle wait: nothing but a notification can make
    # this worker look again within the bound.
    worker = _start_worker(url, tmp_path, "--fallback-poll", f"{IDLE_RECHECK_S:g}")
    try:
        assert eventually(lambda: len(_listeners(url)) == 1, within_s=30)
        for number in range(3):  # each time the worker has gone back to its long wait
            message_id = store.submit(NewMessage.validated(
                content="wake", recipients=phones(2, start=10 * number)), T0).message_id
            assert eventually(lambda: _completed(store, message_id),  # noqa: B023
                              within_s=PICKUP_WITHIN_S), number
    finally:
        output = _stop(worker, tmp_path)
    assert worker.returncode == 143 and "Traceback" not in output, output


def test_an_idle_worker_with_the_default_settings_does_not_poll(
        url: str, store: DispatchStore, tmp_path: Path) -> None:
    # With the default --idle-recheck of 0.05 s, an idle worker claimed 20 times a second
    # although the README said idle workers do not poll PostgreSQL.
    import psycopg

    def commits() -> int:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute("SELECT xact_commit FROM pg_stat_database "
                               "WHERE datname = current_database()").fetchone()
            assert row is not None
            return int(row[0])

    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen([*START, "worker", "--db", url, "--quiet"], stdout=log,
                              stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        assert eventually(lambda: len(_listeners(url)) == 1, within_s=30)
        time.sleep(1.0)  # past its start-up reads and first claims
        before = commits()
        time.sleep(2.0)  # a wall-clock window is what is asked about: no fake clock here
        # This test's own reads commit too (a few); 2 s at 0.05 s were 40 claims and more.
        assert commits() - before < 12
        message_id = store.submit(NewMessage.validated(content="woken", recipients=phones(2)),
                                  T0).message_id
        assert eventually(lambda: _completed(store, message_id), within_s=PICKUP_WITHIN_S)
    finally:
        output = _stop(worker, tmp_path)
    assert worker.returncode == 143 and "Traceback" not in output, output


def test_the_listening_connection_killed_while_idle_the_worker_still_picks_up_new_work(
        pg_cluster: PgCluster, url: str, store: DispatchStore, tmp_path: Path) -> None:
    worker = _start_worker(url, tmp_path, "--fallback-poll", "0.5")
    try:
        assert eventually(lambda: len(_listeners(url)) == 1, within_s=30)
        (first,) = _listeners(url)
        assert pg_cluster.execute(f"SELECT pg_terminate_backend({first})") == [(True,)]
        message_id = store.submit(NewMessage.validated(content="after", recipients=phones(3)),
                                  T0).message_id
        assert eventually(lambda: _completed(store, message_id), within_s=PICKUP_WITHIN_S)
        # And it listens again by itself, on a new connection.
        assert eventually(lambda: _listeners(url) not in ([], [first]),
                          within_s=30)
    finally:
        output = _stop(worker, tmp_path)
    assert worker.returncode == 143 and "Traceback" not in output, output
    assert "lost the wake-up connection" in output


def test_notifications_go_out_on_submit_edit_cancel_requeue_and_release_never_per_delivery(
        url: str, store: DispatchStore) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(_listen_statement(url))

        def received() -> int:
            return sum(1 for _ in listener.notifies(timeout=0.2))

        request = NewMessage.validated(content="a", recipients=phones(20), idempotency_key="k")
        first = store.submit(request, T0)
        assert received() == 1
        later = store.submit(NewMessage.validated(content="b", recipients=phones(2, start=50),
                                                  scheduled_at=T0 + 3600), T0)
        store.edit(later.message_id, 1, MessageEdit(scheduled_at=T0 + 60), T0)
        assert received() == 2
        claims = store.claim("w", 20, 30.0, T0)
        store.settle("w", [Settlement(delivery_id=c.delivery_id, attempts=c.attempts,
                                      kind=SettleKind.SENT if c.delivery_id % 2 else
                                      SettleKind.DEAD, error="no") for c in claims], T0)
        assert len(claims) == 20 and received() == 0  # claims and settles are silent
        # A repeat of a known request creates nothing, so wakes no one.
        assert not store.submit(request, T0).created
        assert received() == 0
        assert store.requeue_dead(first.message_id, T0) == 10
        store.cancel(later.message_id, T0)
        assert received() == 2
        assert store.delivery_counts()[DeliveryStatus.PENDING] == 10
        # Work a stopping worker gives back wakes its idle peers, once a settle.
        given_back = store.claim("w", 10, 30.0, T0)
        store.settle("w", [Settlement(delivery_id=c.delivery_id, attempts=c.attempts,
                                      kind=SettleKind.RELEASE) for c in given_back], T0)
        assert len(given_back) == 10 and received() == 1


def test_transaction_pooling_prepares_nothing_offers_no_channel_and_still_works(
        url: str, store: DispatchStore) -> None:
    pooled_url = f"{url}&sms_sim_pooling=transaction"
    pooled = open_store(pooled_url)
    try:
        assert wake_channel_of(pooled) is None
        assert wake_channel_of(store) is not None
        # The idle wait by default: long where workers are woken, short where they poll.
        assert idle_recheck_for(pooled, 0.05) == 0.05
        assert idle_recheck_for(store, 0.05) == WOKEN_IDLE_RECHECK_S
        assert idle_recheck_for(open_store("memory:"), 0.05) == 0.05
        message_id = pooled.submit(NewMessage.validated(content="x", recipients=phones(2)),
                                   T0).message_id
        claims = pooled.claim("w", 10, 30.0, T0)
        assert {c.message_id for c in claims} == {message_id} and len(claims) == 2
    finally:
        pooled.close()
    # Behind PgBouncer the next transaction may run on another server session, where a
    # statement prepared on this one does not exist: one session, claims past psycopg's
    # threshold, and nothing prepared on it.
    single = PostgresStore(pooled_url, pool_size=1)
    try:
        for step in range(7):
            single.claim("w", 10, 30.0, T0 + step)
        assert single._db.run(lambda conn: conn.execute(
            "SELECT count(*) FROM pg_prepared_statements").fetchone()) == (0,)
    finally:
        single.close()
    reader = open_store(pooled_url, read_only=True)
    try:
        assert reader.count_messages() == 1
        with pytest.raises(StoreError, match="read-only"):
            reader.check_writable()
    finally:
        reader.close()
    # The read-only reader's setting stayed with its own transactions: writers still write.
    store.check_writable()


def test_the_pooling_parameter_is_taken_out_of_the_url_and_checked() -> None:
    base = "postgresql://me:pw@db:5432/sms?options=-csearch_path%3Dx"
    assert pooling_of(base) == (base, False)
    assert pooling_of(f"{base}&sms_sim_pooling=transaction") == (base, True)
    assert pooling_of(f"{base}&sms_sim_pooling=session") == (base, False)
    assert pooling_of("host=db dbname=sms") == ("host=db dbname=sms", False)
    spaced = "postgresql://db/sms?options=-csearch_path%3Dx%20-cstatement_timeout%3D9"
    assert pooling_of(f"{spaced}&sms_sim_pooling=transaction") == (spaced, True)
    with pytest.raises(ConfigError, match="sms_sim_pooling must be one of session, "
                                          "transaction") as caught:
        pooling_of("postgresql://me:s3cret@db/sms?sms_sim_pooling=statement")
    assert "s3cret" not in str(caught.value)
