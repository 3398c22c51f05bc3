"""The PostgreSQL store beyond the shared contract: many processes at once, the claim's LIMIT
(PostgreSQL bug #15715), migrations, ``open_store``, the command line, and errors that never
show a password. The contract suite and the state machine run on PostgreSQL too
(``tests/contract``, ``tests/properties``)."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from sms_sim.dispatch.contract import Claim, DeliveryStatus, DispatchStore
from sms_sim.dispatch.errors import StoreError
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.stores import display_url, migrate_store, open_store
from sms_sim.errors import ConfigError
from tests.conftest import START, T0, phones
from tests.pg_cluster import PgCluster

# Real threads, processes and a real server (STYLE.md section 10).
pytestmark = pytest.mark.slow

JOIN_TIMEOUT_S = 60.0
LEASE_S = 30.0
PROCESSES, THREADS = 3, 4


def _submit(store: DispatchStore, count: int, *, start: int = 0, key: str | None = None,
            tenant: str = "default") -> int:
    return store.submit(NewMessage.validated(content="alert", recipients=phones(count, start),
                                             idempotency_key=key, tenant=tenant), T0).message_id


# --- many processes, each with its own pool, many threads each ------------------------------


def _claimer(url: str, barrier: Barrier, limit: int,
             results: multiprocessing.Queue[object]) -> None:
    """One process standing in for a host: THREADS threads on one store (one pool), each
    claiming until nothing is left; sends back every claim's size and delivery ids."""
    store = open_store(url)
    found: list[tuple[int, list[int]]] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        barrier.wait(timeout=JOIN_TIMEOUT_S)
        while batch := store.claim(f"p{index}", limit, LEASE_S, T0):
            with lock:
                found.append((len(batch), [c.delivery_id for c in batch]))

    _in_threads(work)
    store.close()
    results.put(found)


def _in_threads(work: Callable[[int], None]) -> None:
    """``work(i)`` on THREADS threads at once (i = 0 ..), each waited for."""
    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)


def _submitter(url: str, barrier: Barrier, results: multiprocessing.Queue[object]) -> None:
    store = open_store(url)
    created: list[bool] = []
    lock = threading.Lock()

    def work() -> None:
        barrier.wait(timeout=JOIN_TIMEOUT_S)
        outcome = store.submit(NewMessage.validated(content="x", recipients=phones(50),
                                                    idempotency_key="once"), T0)
        with lock:
            created.append(outcome.created)

    _in_threads(lambda _: work())
    store.close()
    results.put(created)


def _run_processes(target: Callable[..., None], url: str, *args: object) -> list[object]:
    """``target(url, barrier, *args, results)`` in PROCESSES spawned processes, all of whose
    threads start together; what each put on ``results``."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES * THREADS)
    results: multiprocessing.Queue[object] = context.Queue()
    processes = [context.Process(target=target, args=(url, barrier, *args, results))
                 for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    found = [results.get(timeout=JOIN_TIMEOUT_S * 2) for _ in processes]
    for process in processes:
        process.join(JOIN_TIMEOUT_S)
        assert process.exitcode == 0
    return found


def test_processes_and_threads_claiming_at_once_never_double_claim_nor_exceed_the_limit(
        store: DispatchStore, url: str) -> None:
    """Bug #15715: ``UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)`` can
    update more rows than n under concurrency. Every claim here stays within its limit,
    and every leased row was returned to exactly one claimer (an extra row leased but not
    returned would be lost until its lease ran out)."""
    _submit(store, 3000)
    for number in range(20):
        _submit(store, 7, start=10_000 + 10 * number, tenant="acme" if number % 2 else "default")
    limit = 9
    found = _run_processes(_claimer, url, limit)
    sizes = [size for part in found for size, _ in part]  # type: ignore[attr-defined]
    ids = [i for part in found for _, batch in part for i in batch]  # type: ignore[attr-defined]
    assert max(sizes) <= limit
    assert len(ids) == len(set(ids)) == 3000 + 20 * 7
    assert store.delivery_counts()[DeliveryStatus.LEASED] == len(ids)


def test_one_winner_per_idempotency_key_across_processes(store: DispatchStore,
                                                         url: str) -> None:
    found = _run_processes(_submitter, url)
    created = [flag for part in found for flag in part]  # type: ignore[attr-defined]
    assert sorted(created) == [False] * (PROCESSES * THREADS - 1) + [True]
    assert store.count_messages() == 1 and len(store.deliveries()) == 50


# --- the schema: created, refused when older, upgraded by migrate ---------------------------


def test_migrate_creates_the_schema_once_and_other_opens_refuse_an_empty_database(
        url: str) -> None:
    with pytest.raises(StoreError, match="holds no sms_sim schema .*migrate"):
        open_store(url)
    from sms_sim.dispatch.stores.postgres.schema import SCHEMA_VERSION

    assert f"created sms_sim schema version {SCHEMA_VERSION}" in migrate_store(url)
    assert "is current; nothing to do" in migrate_store(url)
    open_store(url).close()
    # The README's PgBouncer URL: every command took it but migrate (libpq refused it).
    pooled = f"{url}&sms_sim_pooling=transaction"
    assert "is current; nothing to do" in migrate_store(pooled)


def test_migrate_refuses_a_schema_a_newer_sms_sim_made(pg_cluster: PgCluster,
                                                       url: str) -> None:
    # It said "version 7 is current; nothing to do", exit 0, while every other command
    # refused the database.
    from sms_sim.dispatch.stores.postgres.schema import SCHEMA_VERSION

    migrate_store(url)
    schema = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["options"][0]
    pg_cluster.execute(f"INSERT INTO {schema.split('=')[1]}.sms_sim_schema VALUES "
                       f"({SCHEMA_VERSION + 1}, 'from the future')")
    with pytest.raises(StoreError, match=f"version {SCHEMA_VERSION + 1}, newer than this"):
        migrate_store(url)


def test_an_older_schema_is_refused_until_migrate_upgrades_it(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from sms_sim.dispatch.stores.postgres import schema

    open_store(url, create=True).close()  # the current version
    old = schema.SCHEMA_VERSION
    new = old + 1
    newer = (*schema.MIGRATIONS, (new, "a test table", ("CREATE TABLE extra (x integer)",)))
    monkeypatch.setattr(schema, "MIGRATIONS", newer)
    monkeypatch.setattr(schema, "SCHEMA_VERSION", new)
    for create in (False, True):
        with pytest.raises(StoreError,
                           match=f"version {old}, older than {new}: run 'sms_sim migrate"):
            open_store(url, create=create)
    assert f"upgraded sms_sim schema from version {old} to {new}" in migrate_store(url)
    open_store(url).close()


def test_migration_2_keeps_version_1_rows_and_adds_what_issue_14_needs(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments of older messages are computed from their content, every delivery keeps its
    status, and the new statuses, opt-outs, receipts and provider keys work at once."""
    import psycopg

    from sms_sim.dispatch.contract import DeliveryStatus, DlrOutcome, DlrReport
    from sms_sim.dispatch.requests import NewMessage
    from sms_sim.dispatch.stores.postgres import schema
    from sms_sim.segments import Encoding

    with monkeypatch.context() as patched:
        patched.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
        patched.setattr(schema, "SCHEMA_VERSION", 1)
        assert "created sms_sim schema version 1" in migrate_store(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO messages (tenant, content, status, scheduled_at, created_at, "
                     "updated_at, version, priority, uid) VALUES ('default', %s, "
                     "'dispatching', 1, 1, 1, 1, 0, %s)", ("ж" * 71, "a" * 32))
        conn.execute("INSERT INTO deliveries (message_id, recipient, status, next_attempt_at, "
                     "sent_at) VALUES (1, '555-000-0001', 'sent', 1, 2), "
                     "(1, '555-000-0002', 'pending', 1, NULL)")
    with pytest.raises(StoreError, match=f"version 1, older than {schema.SCHEMA_VERSION}"):
        open_store(url)
    # Every migration after 1 in one run (the chunk cursor's, 3, too: ``test_postgres_chunk``)
    assert f"upgraded sms_sim schema from version 1 to {schema.SCHEMA_VERSION}" \
        in migrate_store(url)
    store = open_store(url)
    (old,) = store.messages()
    assert (old.encoding, old.segments, old.valid_until) == (Encoding.UCS2, 2, None)
    assert old.counts[DeliveryStatus.SENT] == old.counts[DeliveryStatus.PENDING] == 1
    key = "a" * 32 + ":555-000-0001"
    assert store.record_dlrs([DlrReport(key, "delivered", 3.0)], 4.0).outcomes == (
        DlrOutcome.APPLIED,)
    assert store.add_opt_outs("default", ["555-000-0002"], 5.0).suppressed == 1
    (old,) = store.messages()
    assert old.status.value == "completed"
    assert old.counts[DeliveryStatus.DELIVERED] == old.counts[DeliveryStatus.SUPPRESSED] == 1
    new = store.submit(NewMessage.validated(content="x" * 161, recipients=["555-000-0002"]),
                       6.0)
    assert new.suppressed == 1 and store.messages(message_id=new.message_id)[0].segments == 2
    store.close()


@pytest.mark.parametrize("table", ["messages", "deliveries", "leases"])
def test_a_database_with_other_tables_is_not_taken_for_ours(pg_cluster: PgCluster,
                                                            url: str, table: str) -> None:
    # Only a foreign "messages" was seen: another table failed the migration halfway
    # ("relation already exists") and left an empty sms_sim_schema table behind.
    schema = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["options"][0]
    name = schema.split('=')[1]
    pg_cluster.execute(f"CREATE TABLE {name}.{table} (x integer)")
    with pytest.raises(StoreError, match=f"has a {table!r} table but is not an sms_sim one"):
        open_store(url, create=True)
    with pytest.raises(StoreError, match="not an sms_sim one"):
        migrate_store(url)
    assert pg_cluster.execute(f"SELECT to_regclass('{name}.sms_sim_schema')") == [(None,)]


def test_a_table_of_that_name_elsewhere_on_the_search_path_is_no_clash(
        pg_cluster: PgCluster, url: str) -> None:
    # The check looked through the whole search_path: another program's tenants table in a
    # later schema refused a database the migration would not touch.
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    mine = query["options"][0].split("=")[1]
    pg_cluster.execute(f"CREATE SCHEMA {mine}_other")
    pg_cluster.execute(f"CREATE TABLE {mine}_other.tenants (x integer)")
    query["options"] = [f"-csearch_path={mine},{mine}_other"]
    both = urllib.parse.urlunsplit(parts._replace(
        query=urllib.parse.urlencode(query, doseq=True, quote_via=urllib.parse.quote)))
    try:
        assert "created sms_sim schema" in migrate_store(both)
    finally:
        pg_cluster.execute(f"DROP SCHEMA {mine}_other CASCADE")


# --- errors name the database, never its password -----------------------------------------


def test_a_wrong_password_or_an_unreachable_server_is_one_line_without_the_password(
        url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    wrong = url.replace(f":{parts.password}@", ":wrong-s3cret@")
    closed = "postgresql://user:s3cret-too@127.0.0.1:1/db"
    for bad, secret in ((wrong, "wrong-s3cret"), (closed, "s3cret-too")):
        with pytest.raises(StoreError) as caught:
            open_store(bad)
        message = str(caught.value)
        assert "\n" not in message and secret not in message
        assert "postgresql://" in message


def test_display_url_drops_the_password_and_options() -> None:
    assert display_url("postgresql://me:pw@db.example:5433/sms?options=-csearch_path%3Dx") == \
        "postgresql://me@db.example:5433/sms"
    assert display_url("./alerts.db") == "./alerts.db"


def test_without_psycopg_a_postgresql_url_asks_for_the_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.startswith("sms_sim.dispatch.stores.postgres")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    for call in (lambda: open_store("postgresql://u:s3cret@h/db"),
                 lambda: migrate_store("postgres://u:s3cret@h/db")):
        with pytest.raises(ConfigError, match=r"install sms_sim\[postgres\]") as caught:
            call()
        assert "s3cret" not in str(caught.value) and "\n" not in str(caught.value)


# --- the command line -----------------------------------------------------------------------


def test_the_commands_run_on_postgresql_and_never_print_the_password(
        url: str, tmp_path: Path) -> None:
    password = urllib.parse.urlsplit(url).password
    assert password

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*START, *args, "--db", url], capture_output=True, text=True,
                              timeout=JOIN_TIMEOUT_S, cwd=tmp_path)
        assert password not in done.stdout + done.stderr
        return done

    refused = cli("list")
    assert refused.returncode == 1 and "sms_sim migrate" in refused.stderr
    migrated = cli("migrate")
    assert migrated.returncode == 0 and "created sms_sim schema version" in migrated.stdout
    submitted = cli("submit", "hello", "--to", "555-000-0001,555-000-0002")
    assert submitted.returncode == 0, submitted.stderr
    worked = cli("worker", "--exit-when-idle", "--mean", "0", "--deviation", "0", "-q")
    assert worked.returncode == 0, worked.stderr
    shown = cli("show", "1", "--json")
    assert shown.returncode == 0 and '"all sent"' in shown.stdout, shown.stdout
    kept = cli("prune", "--older-than", "1d", "--dry-run")
    assert kept.stdout.startswith("would prune 0 messages and 0 deliveries"), kept
    pruned = cli("prune", "--older-than", "0s")
    assert pruned.stdout.startswith("pruned 1 message and 2 deliveries"), pruned


def test_claims_carry_the_content_stored_once_per_message(store: DispatchStore) -> None:
    message_id = _submit(store, 5)
    claims: list[Claim] = store.claim("w", 10, LEASE_S, T0)
    assert {c.content for c in claims} == {"alert"} and len(claims) == 5
    assert {c.message_id for c in claims} == {message_id}


# --- faults ---------------------------------------------------------------------------------


def test_connections_killed_under_a_store_are_a_transient_error_then_replaced(
        pg_cluster: PgCluster, store: DispatchStore) -> None:
    """Every server process of the store killed (``pg_terminate_backend``, as a restart or a
    failover does): a call may fail once per dead pooled connection, always with
    ``StoreBusyError`` (which a worker waits out), and the pool then reconnects by itself;
    nothing committed is lost."""
    from sms_sim.dispatch.errors import StoreBusyError

    message_id = _submit(store, 20)
    killed = pg_cluster.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'sms_sim' AND datname = current_database()")
    assert killed
    failures = 0
    for _ in range(10):  # a pool of at most 4 connections: at most 4 dead ones to meet
        try:
            claims = store.claim("w", 50, LEASE_S, T0)
            break
        except StoreBusyError as exc:
            assert "\n" not in str(exc)
            failures += 1
    else:
        raise AssertionError("the store never reconnected")
    assert failures <= 4, failures
    assert {c.message_id for c in claims} == {message_id} and len(claims) == 20


def test_a_read_waits_for_a_connection_at_most_the_read_wait_not_the_lock_timeout(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pooled connection busy (as while the server is down: none can be made): a
    read is ``StoreBusyError`` (503 at the API) after ``READ_WAIT_S``, not after the lock
    timeout, which a portal's page and ``/metrics`` waited out (30 s) during an outage."""
    from sms_sim.dispatch.errors import StoreBusyError
    from sms_sim.dispatch.stores.postgres import database
    from sms_sim.dispatch.stores.postgres.store import PostgresStore

    monkeypatch.setattr(database, "READ_WAIT_S", 0.2)
    store = PostgresStore(url, create=True, pool_size=1, lock_timeout_s=600.0)
    outcome: list[BaseException | None] = []
    try:
        with store._db.transaction():  # the pool's one connection, held
            reader = threading.Thread(target=lambda: outcome.append(_raised(store.messages)))
            reader.start()
            reader.join(timeout=JOIN_TIMEOUT_S)  # the old wait: 600 s
            assert not reader.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], StoreBusyError)
        assert store.messages() == []  # the connection back: reads go on
    finally:
        store.close()


def _raised(call: Callable[[], object]) -> BaseException | None:
    try:
        call()
    except BaseException as exc:  # noqa: B036 - handed to the test's thread
        return exc
    return None


def test_a_claimer_stalled_inside_its_claim_holds_up_the_others_only_briefly(
        url: str, store: DispatchStore) -> None:
    """Claims are serialised, so one stalled inside its claim (a paused process, a VM pause)
    would stall every host's: the server ends its session after ``CLAIM_IDLE_LIMIT_S`` idle
    in the claim. Without that this claim would wait for the lock timeout (30 s) and fail."""
    import psycopg

    from sms_sim.dispatch.stores.postgres.claim import _BEGIN_SQL, _CLAIM_LOCK
    from sms_sim.dispatch.stores.postgres.schema import LOCK_CLASS

    _submit(store, 3)
    with psycopg.connect(url) as stalled:  # a transaction, as the store's claims are
        stalled.execute(_BEGIN_SQL, (LOCK_CLASS + _CLAIM_LOCK,))  # holds the lock, idles
        assert len(store.claim("w", 10, LEASE_S, T0)) == 3
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
            stalled.execute("SELECT 1")  # its session was ended: its claim rolled back


def test_the_rescue_passes_over_a_lease_that_a_stalled_settle_is_writing(
        url: str, store: DispatchStore) -> None:
    """A settler stalled in its transaction holds the rows it reports on; the next claim
    rescues the other expired leases instead of waiting for it, and that one once the
    settle is gone."""
    import psycopg

    _submit(store, 5)
    first = store.claim("a", 5, 1.0, T0)
    with psycopg.connect(url) as stalled:
        stalled.execute("UPDATE deliveries SET status = status WHERE id = %s",
                        (first[0].delivery_id,))
        again = store.claim("b", 10, LEASE_S, T0 + 2)
        assert sorted(c.delivery_id for c in again) == sorted(c.delivery_id for c in first[1:])
        stalled.rollback()
    (last,) = store.claim("b", 10, LEASE_S, T0 + 2)
    assert last.delivery_id == first[0].delivery_id and last.lease_losses == 1
