"""``copy``: a database with every status, copied SQLite -> PostgreSQL -> SQLite, reads the
same through the contract at every step (ids kept) and goes on the same (the next claim, the
next id); the refusals (leases held, a target in use, one database twice, memory:); the
command line. Moving up from SQLite is issue 13's last item.
"""

from __future__ import annotations

import sqlite3
import subprocess
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest

from sms_sim.dispatch.contract import (
    DeliveryStatus,
    DispatchStore,
    DlrReport,
    MessageStatus,
    SettleKind,
    Settlement,
    provider_key,
)
from sms_sim.dispatch.errors import ConflictError, LockedError
from sms_sim.dispatch.keys import ApiKey
from sms_sim.dispatch.requests import MessageEdit, NewMessage
from sms_sim.dispatch.stores import SqliteStore, copy_database, open_store
from sms_sim.errors import ConfigError
from tests.conftest import START, T0, phones
from tests.pg_cluster import PgCluster

LEASE_S = 30.0
LATER = T0 + 100


def _settle(store: DispatchStore, owner: str, now: float,
            kinds: Callable[[int], SettleKind]) -> None:
    """Claim everything due at ``now`` and report it, the i-th claim as ``kinds(i)``."""
    claims = store.claim(owner, 100, LEASE_S, now)
    store.settle(owner, [Settlement(delivery_id=c.delivery_id, attempts=c.attempts,
                                    kind=kinds(i), error=None if kinds(i) is SettleKind.SENT
                                    else "provider said no",
                                    next_attempt_at=now + 60 if kinds(i) is SettleKind.RETRY
                                    else None)
                         for i, c in enumerate(claims)], now)


def _populate(store: DispatchStore) -> None:
    """Every message status and every delivery status a copy may meet (all but leased),
    two tenants, a key with its receipt, an edit, a lost lease, API keys."""
    def message(count: int, start: int, **fields: object) -> int:
        return store.submit(NewMessage.validated(content=f"m{start}",
                                                 recipients=phones(count, start),
                                                 **fields), T0).message_id  # type: ignore[arg-type]

    message(3, 0)
    _settle(store, "w", T0, lambda i: SettleKind.SENT)  # completed, all sent
    message(2, 10, priority=2)
    _settle(store, "w", T0 + 1, lambda i: SettleKind.SENT if i else SettleKind.DEAD)
    lost = message(4, 20, tenant="acme")
    assert len(store.claim("gone", 2, 1.0, T0 + 2)) == 2  # its worker dies
    # rescued: retrying with a lease loss; one of them leased again and failed again
    _settle(store, "w", T0 + 4, lambda i: SettleKind.RETRY)
    assert store.messages(message_id=lost)[0].status is MessageStatus.DISPATCHING
    cancelled = message(2, 30)
    store.cancel(cancelled, T0 + 5)
    later = message(2, 40, scheduled_at=T0 + 3600, idempotency_key="k1", tenant="acme")
    store.keep_receipt(later, '{"id": 5}')
    store.edit(later, 1, MessageEdit(content="edited"), T0 + 6)
    store.add_api_key(ApiKey(key_id="k-live", tenant="acme", created_at=T0), "hash-1")
    store.add_api_key(ApiKey(key_id="k-gone", tenant="default", created_at=T0), "hash-2")
    store.revoke_api_key("k-gone", T0 + 7)
    # Issue 14: receipts (and one held for a delivery not sent), an expiry, an opt-out.
    first = store.messages(message_id=1)[0].uid
    store.record_dlrs([DlrReport(provider_key(first, phones(1)[0]), "delivered", T0 + 7),
                       DlrReport(provider_key(first, phones(2)[1]), "undelivered", T0 + 7),
                       DlrReport(provider_key(store.messages(message_id=lost)[0].uid,
                                              phones(1, 20)[0]), "delivered", T0 + 7)],
                      T0 + 7)
    message(2, 50, valid_until=T0 + 8)
    assert store.claim("w", 10, LEASE_S, T0 + 9) == []  # expires it
    assert store.add_opt_outs("acme", phones(1, 40), T0 + 10).suppressed == 1
    seen = {d.status for d in store.deliveries(limit=1000)}
    assert seen == set(DeliveryStatus) - {DeliveryStatus.LEASED}, seen
    assert {m.status for m in store.messages()} == set(MessageStatus)


def _assert_same(left: DispatchStore, right: DispatchStore) -> None:
    assert left.messages(limit=1000) == right.messages(limit=1000)
    assert left.deliveries(limit=10_000) == right.deliveries(limit=10_000)
    assert left.api_keys() == right.api_keys()
    assert [left.opt_outs(t) for t in ("acme", "default")] == \
        [right.opt_outs(t) for t in ("acme", "default")]
    assert left.next_due_at(LATER) == right.next_due_at(LATER)


def test_every_status_round_trips_sqlite_to_postgresql_and_back_with_ids_kept(
        tmp_path: Path, pg_cluster: PgCluster) -> None:
    source_path, back_path = tmp_path / "source.db", tmp_path / "back.db"
    source = SqliteStore(source_path)
    _populate(source)
    with sqlite3.connect(source_path) as raw:  # a submit still loading: invisible, left behind
        raw.execute("INSERT INTO messages (id, content, status, scheduled_at, created_at, "
                    "updated_at, version, priority, uid) VALUES (99, 'x', 'loading', ?, ?, "
                    "?, 1, 0, 'u99')", (LATER, LATER, LATER))
        raw.execute("INSERT INTO deliveries (message_id, recipient, status, next_attempt_at) "
                    "VALUES (99, '555-999-0000', 'pending', 0)")
    url = pg_cluster.fresh_url()
    result = copy_database(source_path, url)
    assert (result.messages, result.deliveries, result.api_keys) == (6, 15, 2)
    assert result.tenants == 2 and result.left_loading == 1
    assert (result.opt_outs, result.held_receipts) == (1, 1)
    target = open_store(url)
    _assert_same(source, target)
    assert copy_database(url, back_path).messages == 6
    back = SqliteStore(back_path)
    _assert_same(source, back)
    # Each goes on as the source would: the serve order, and ids above every copied one
    # (the loading message's 99 included: the source handed it out).
    stores = (source, target, back)
    claims = [store.claim("next", 3, LEASE_S, LATER) for store in stores]
    assert claims[0] == claims[1] == claims[2] and claims[0]
    new_ids = [store.submit(NewMessage.validated(content="new", recipients=phones(1)),
                            LATER).message_id for store in stores]
    assert new_ids[0] == new_ids[1] == new_ids[2] == 100
    for store in stores:
        store.close()


def test_a_source_with_leased_deliveries_is_refused_and_no_target_is_made(
        tmp_path: Path) -> None:
    source = SqliteStore(tmp_path / "source.db")
    source.submit(NewMessage.validated(content="x", recipients=phones(2)), T0)
    source.claim("running", 1, LEASE_S, T0)
    with pytest.raises(LockedError, match="1 deliveries of the source are leased"):
        copy_database(tmp_path / "source.db", tmp_path / "target.db")
    # A refused copy changes nothing: it left an empty target database behind.
    assert not (tmp_path / "target.db").exists()
    source.close()


def test_a_target_that_holds_anything_or_the_same_database_is_refused(tmp_path: Path) -> None:
    for name in ("source.db", "target.db"):
        store = SqliteStore(tmp_path / name)
        store.submit(NewMessage.validated(content="x", recipients=phones(1)), T0)
        store.close()
    with pytest.raises(ConflictError, match="already holds sms_sim data"):
        copy_database(tmp_path / "source.db", tmp_path / "target.db")
    with pytest.raises(ConfigError, match="the same database"):
        copy_database(tmp_path / "source.db", f"{tmp_path}/./source.db")
    with pytest.raises(ConfigError, match="not memory:"):
        copy_database(tmp_path / "source.db", "memory:")


def test_the_copy_command_moves_a_file_to_postgresql_and_never_prints_the_password(
        tmp_path: Path, pg_cluster: PgCluster) -> None:
    source = SqliteStore(tmp_path / "sms_sim.db")
    _populate(source)
    source.close()
    url = pg_cluster.fresh_url()
    password = urllib.parse.urlsplit(url).password
    assert password

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*START, "copy", *args], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
        assert password not in done.stdout + done.stderr
        return done

    copied = cli("--from", "sms_sim.db", "--to", url)
    assert copied.returncode == 0, copied.stderr
    # Every kind of row it copied is counted, each in the number it takes.
    assert copied.stdout.startswith("copied 6 messages, 15 deliveries, 2 API keys, 1 opt-out, "
                                    "1 held receipt and 2 tenants' serve order from "
                                    "sms_sim.db to postgresql://")
    again = cli("--from", "sms_sim.db", "--to", url)
    assert again.returncode == 1 and len(again.stderr.splitlines()) == 1
    assert "already holds sms_sim data" in again.stderr
    shown = subprocess.run([*START, "show", "5", "--db", url], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path)
    assert shown.returncode == 0 and "edited" in shown.stdout, shown.stderr
    # ``check`` on PostgreSQL says what it showed: no integrity check of pages it cannot read.
    checked = subprocess.run([*START, "check", "--db", url], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path)
    assert checked.returncode == 0 and password not in checked.stdout + checked.stderr
    assert checked.stdout.endswith(": ok (the server answers, schema current; it checks its "
                                   "own pages: amcheck looks deeper)\n"), checked.stdout
