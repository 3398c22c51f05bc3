"""Fairness and wake-ups on PostgreSQL: 1-recipient messages during a 1M broadcast, and idle.

Broadcast phase: one message to N recipients (tenant ``default``) is drained by W processes
of ``python -m sms_sim worker --exit-when-idle`` (4 zero-latency senders each, ``--batch``
B). Once it is being dispatched, this process submits a 1-recipient message every ~100 ms
(uniform 50-150 ms) through ``open_store(URL).submit``, alternating tenant ``other`` and
the broadcast's own tenant ``default``, until the broadcast has nothing left to claim. For
each one claimed while the broadcast was still being claimed, from the moment its submit
returned (its commit: from then on a claim can see it):

* due -> claim in claim rounds: how many claims, by any worker, began after that moment up
  to and including the one that leased it (the distinct ``leased_at`` of every claim, as
  the table keeps them); 1 means the very next claim took it;
* due -> sent in ms: its ``sent_at`` minus that moment (when the provider accepted it, as
  the worker stamped it; a checkout older than that records the settle's time), and the
  part of it from the claim's start (its ``leased_at``).

p50 / p99 / max per tenant; the workers' mean claim round (elapsed / claims) beside them.

Idle phase (the same database, the broadcast done): W workers started without
``--exit-when-idle``, K 1-recipient messages submitted every ~100 ms; submit -> first claim
= its ``leased_at`` minus the moment its submit returned (committed: no claim can see it
sooner, and the submitter holds its id from then on). Printed beside it: the same from the
moment the submit call began, and how long the submit call took, which is the server's
durable commit (an ``fsync``) and nothing a wake-up can shorten; and, measured just before,
the floor of any durable commit on this server (K one-row ``INSERT``s, each committed). Twice,
if the store has wake-ups
(``sms_sim.dispatch.wake`` and ``PostgresStore.wake_channel``; else "LISTEN not
available" is printed and only polling is measured):

* LISTEN: ``--idle-recheck 10``, so a claim within 50 ms can only come from a NOTIFY
  (measured once every worker's listening connection shows in ``pg_stat_activity``);
* polling: ``--idle-recheck P`` (``--poll``, default 1 s), the channel off
  (``sms_sim_pooling=transaction`` in the URL) where the store has one.

Targets (issue 13): due -> sent p99 <= 2 claim rounds for both tenants, a claim round being
a worker's mean time from one claim to its next (its elapsed time over its claims, averaged
over the workers), and due -> claim p99 <= 2 rounds as counted above; submit -> first
claim p99 <= 50 ms with LISTEN, <= P without (from the commit: the call's own time is the
disk's, shown beside it with the floor).

Command (from the repo root): python3 bench/pg_fairness.py [--recipients 1000000]
[--workers 2] [--batch 1000] [--idle-messages 100] [--poll 1.0] [--dsn postgresql://...]
[--baseline DIR] [--quick]   (without --dsn a throwaway server is started and stopped after;
--baseline runs the broadcast phase once more first, with the workers of another checkout,
e.g. a git worktree of the parent commit, for old vs new)
"""

from __future__ import annotations

import argparse
import bisect
import importlib
import importlib.util
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import git_commit, percentile, print_target  # noqa: E402
from _pg import (  # noqa: E402
    ROOT,
    WorkerRun,
    add_baseline_option,
    add_dsn_option,
    check_baseline,
    connect,
    derive_url,
    finish_workers,
    kill_all,
    scratch,
    server,
    server_version,
    shown_command_line,
    start_workers,
    submit_broadcast,
    write_numbers,
)
from sms_sim.dispatch.contract import DispatchStore  # noqa: E402
from sms_sim.dispatch.requests import NewMessage  # noqa: E402
from sms_sim.dispatch.stores import open_store  # noqa: E402

TARGET_ROUNDS = 2
TARGET_LISTEN_S = 0.050
LISTEN_IDLE_RECHECK_S = 10.0
MEAN_GAP_S = 0.1
TENANTS = ("other", "default")  # the broadcast's tenant is "default"
READY_TIMEOUT_S = 30.0
_LISTENER_NAME = "sms_sim listener"  # if the store does not say (its listen.LISTENER_NAME)


@dataclass(frozen=True, slots=True)
class Urgent:
    """A 1-recipient message: its id, tenant, when its submit began and returned (epoch s)."""

    message_id: int
    tenant: str
    began_at: float
    visible_at: float


def _submit(store: DispatchStore, number: int, tenant: str) -> Urgent:
    message = NewMessage.validated(content=f"urgent {number}", tenant=tenant,
                                   recipients=[f"900-{number // 10**4:03d}-{number % 10**4:04d}"])
    began = time.time()
    result = store.submit(message, began)
    return Urgent(result.message_id, tenant, began, time.time())


def _wait_for(check: str, url: str, timeout_s: float, params: Sequence[object] = ()) -> None:
    """Poll ``check`` (a query returning one boolean) every 20 ms until true."""
    deadline = time.monotonic() + timeout_s
    with connect(url) as conn:
        while True:
            row = conn.execute(check, params).fetchone()
            if row is not None and row[0]:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for: {check}")
            time.sleep(0.02)


def _figures(values: Sequence[float], spec: str, unit: str) -> str:
    if not values:
        return "none"
    return (f"p50 {percentile(values, 0.5):{spec}}{unit}, p99 {percentile(values, 0.99):{spec}}"
            f"{unit}, max {max(values):{spec}}{unit} (n={len(values)})")


# ---- the broadcast phase -------------------------------------------------------------------


def broadcast_phase(url: str, args: argparse.Namespace, tmp: Path, root: Path = ROOT,
                    side: str = "ours") -> bool:
    """The broadcast phase with the workers of the checkout ``root`` (``side`` names it)."""
    numbers = write_numbers(tmp / f"numbers-{side}.txt", 500, args.recipients)
    submit_broadcast(url, numbers)  # message 1
    log_dir = tmp / f"broadcast-{side}"
    log_dir.mkdir()
    procs = start_workers(url, args.workers, batch=args.batch, log_dir=log_dir, root=root)
    urgent: list[Urgent] = []
    rng = random.Random(args.seed)
    try:
        _wait_for("SELECT status = 'dispatching' FROM messages WHERE id = 1", url, 120.0)
        time.sleep(0.5)  # past the first claims: the steady state
        store = open_store(url)
        try:
            with connect(url) as conn:
                while len(urgent) < args.max_urgent:
                    # The message row, not its deliveries: near the end of a broadcast an
                    # EXISTS over its pending deliveries walked the whole message (0.4 s),
                    # and answered for a moment long gone.
                    row = conn.execute("SELECT status IN ('scheduled', 'dispatching') FROM "
                                       "messages WHERE id = 1").fetchone()
                    if row is None or not row[0]:
                        break
                    urgent.append(_submit(store, len(urgent), TENANTS[len(urgent) % 2]))
                    time.sleep(rng.uniform(0.5, 1.5) * MEAN_GAP_S)
        finally:
            store.close()
        reports = finish_workers(procs, log_dir)
    finally:
        kill_all(procs)  # after an error above; the workers have exited otherwise
    return report_broadcast(url, urgent, WorkerRun(wall_s=0.0, reports=reports), args, side)


def report_broadcast(url: str, urgent: Sequence[Urgent], run: WorkerRun,
                     args: argparse.Namespace, side: str) -> bool:
    with connect(url) as conn:
        claims = sorted(float(at) for (at,) in conn.execute(
            "SELECT DISTINCT leased_at FROM deliveries WHERE leased_at IS NOT NULL"))
        row = conn.execute("SELECT max(leased_at) FROM deliveries WHERE message_id = 1"
                           ).fetchone()
        last_broadcast_claim = float(row[0]) if row is not None and row[0] is not None else 0.0
        row = conn.execute("SELECT max(sent_at) FROM deliveries WHERE message_id = 1").fetchone()
        last_broadcast_sent = float(row[0]) if row is not None and row[0] is not None else 0.0
        found = {int(m): (float(leased), float(sent)) for m, leased, sent in conn.execute(
            "SELECT message_id, leased_at, sent_at FROM deliveries WHERE message_id = ANY(%s) "
            "AND status = 'sent'", ([u.message_id for u in urgent],))}
    print(f"broadcast phase ({side}): {args.recipients:,} recipients, {args.workers} workers x 4 "
          f"zero-latency senders, batch {args.batch}; {len(urgent)} 1-recipient messages "
          f"submitted during it, every ~{MEAN_GAP_S * 1000:.0f} ms")
    print(f"  claims that leased something: {len(claims):,} (the workers made {run.claims:,}, "
          f"empty ones included); mean claim round per worker "
          f"{run.claim_round_s * 1000:.1f} ms")
    verdict = True
    for tenant in TENANTS:
        rounds: list[float] = []
        sent_ms: list[float] = []
        after_ms: list[float] = []  # from the claim's start (its leased_at) to sent
        for u in urgent:
            if u.tenant != tenant or u.message_id not in found:
                continue
            leased, sent = found[u.message_id]
            if leased > last_broadcast_claim:
                continue  # claimed after the broadcast's last claim: not "during" it
            taken = bisect.bisect_right(claims, leased) - bisect.bisect_right(claims,
                                                                              u.visible_at)
            rounds.append(max(1, taken))
            sent_ms.append((sent - u.visible_at) * 1000)
            after_ms.append((sent - leased) * 1000)
        label = "another tenant" if tenant != "default" else "the broadcast's tenant"
        print(f"  {label} ({tenant}): due -> claim {_figures(rounds, '.0f', ' rounds')}")
        print(f"  {' ' * len(label)}  due -> sent {_figures(sent_ms, '.1f', ' ms')}")
        print(f"  {' ' * len(label)}  of which claim -> sent "
              f"{_figures(after_ms, '.1f', ' ms')}")
        if rounds:
            p99 = percentile(rounds, 0.99)
            passed = p99 <= TARGET_ROUNDS
            print_target(f"  target due -> claim p99 <= {TARGET_ROUNDS} rounds ({tenant})",
                         passed, f"{p99:.0f}")
            # The target as the issue words it: due -> sent, in a worker's claim rounds.
            bound_ms = TARGET_ROUNDS * run.claim_round_s * 1000
            sent_p99 = percentile(sent_ms, 0.99)
            sent_passed = sent_p99 <= bound_ms
            print_target(f"  target due -> sent p99 <= {TARGET_ROUNDS} claim rounds "
                         f"= {bound_ms:.1f} ms ({tenant})", sent_passed,
                         f"{sent_p99:.1f} ms = {sent_p99 / bound_ms * TARGET_ROUNDS:.2f} rounds")
            passed = passed and sent_passed
        else:
            passed = False
            print_target(f"  target due -> claim p99 <= {TARGET_ROUNDS} rounds ({tenant})",
                         None, "no message was claimed during the broadcast: a larger "
                               "--recipients")
        verdict = verdict and passed
    # The workers exit once nothing is open, so a message submitted as the broadcast's
    # last settle completed it can find them gone: that is the bench's timing, not a loss.
    late = [u for u in urgent if u.message_id not in found and u.visible_at > last_broadcast_sent]
    lost = [u for u in urgent if u.message_id not in found and u.visible_at <= last_broadcast_sent]
    if late:
        print(f"  {len(late)} of the 1-recipient messages were submitted after the broadcast's "
              "last settle, when the workers were exiting (not counted)")
    if lost:
        print(f"  {len(lost)} of the 1-recipient messages submitted during the broadcast were "
              "never sent")
        verdict = False
    return verdict


# ---- the idle phase ------------------------------------------------------------------------


def listen_available() -> bool:
    """Whether this checkout's PostgreSQL store offers LISTEN wake-ups."""
    if importlib.util.find_spec("sms_sim.dispatch.wake") is None:
        return False
    store = importlib.import_module("sms_sim.dispatch.stores.postgres.store")
    return hasattr(store.PostgresStore, "wake_channel")


def _listener_name() -> str:
    """The listening connection's ``application_name``, as the store names it."""
    if importlib.util.find_spec("sms_sim.dispatch.stores.postgres.listen") is None:
        return _LISTENER_NAME
    listen = importlib.import_module("sms_sim.dispatch.stores.postgres.listen")
    return str(getattr(listen, "LISTENER_NAME", _LISTENER_NAME))


@dataclass(frozen=True, slots=True)
class Wait:
    """One idle-phase message: its submit call's time and its commit -> first claim (s)."""

    submit_s: float
    claim_s: float


def commit_floor(url: str, count: int) -> list[float]:
    """``count`` one-row ``INSERT``s, each its own transaction (the connection autocommits),
    ~100 ms apart as the idle phase's submits are: how long each took (s), one round trip
    and the server's durable commit."""
    took: list[float] = []
    rng = random.Random(count)
    with connect(url) as conn:
        conn.execute("CREATE TABLE bench_commit_floor (at float8)")
        for _ in range(count):
            began = time.perf_counter()
            conn.execute("INSERT INTO bench_commit_floor VALUES (%s)", (time.time(),))
            took.append(time.perf_counter() - began)
            time.sleep(rng.uniform(0.5, 1.5) * MEAN_GAP_S)
        conn.execute("DROP TABLE bench_commit_floor")
    return took


def idle_phase(url: str, mode: str, args: argparse.Namespace, tmp: Path,
               first_number: int) -> list[Wait]:
    """The submit time and commit -> first claim of ``args.idle_messages`` messages to idle
    workers."""
    listening = mode == "LISTEN"
    worker_url = url if listening or not listen_available() else derive_url(
        url, sms_sim_pooling="transaction")
    recheck_s = LISTEN_IDLE_RECHECK_S if listening else args.poll
    log_dir = tmp / f"idle-{mode}"
    log_dir.mkdir()
    procs = start_workers(worker_url, args.workers, batch=args.batch, log_dir=log_dir,
                          exit_when_idle=False, extra=["--idle-recheck", f"{recheck_s:g}"])
    urgent: list[Urgent] = []
    rng = random.Random(f"{args.seed}:{mode}")
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all("dispatching from" in (log_dir / f"worker-{i}.err").read_text()
                      for i in range(args.workers)):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{mode}: the workers did not start")
            time.sleep(0.05)
        if listening:
            _wait_for("SELECT count(*) >= %s FROM pg_stat_activity WHERE application_name = %s "
                      "AND datname = current_database()", url, READY_TIMEOUT_S,
                      (args.workers, _listener_name()))
        time.sleep(0.5 if listening else max(0.5, recheck_s))  # settled into idle waits
        store = open_store(url)
        try:
            for i in range(args.idle_messages):
                urgent.append(_submit(store, first_number + i, TENANTS[i % 2]))
                time.sleep(rng.uniform(0.5, 1.5) * MEAN_GAP_S)
        finally:
            store.close()
        ids = [u.message_id for u in urgent]
        _wait_for("SELECT count(*) = %s FROM deliveries WHERE message_id = ANY(%s) AND "
                  "leased_at IS NOT NULL", url, 3 * recheck_s + 30.0, (len(ids), ids))
    finally:
        finish_workers(procs, log_dir, terminate=True, timeout_s=60.0)
    with connect(url) as conn:
        leased = {int(m): float(at) for m, at in conn.execute(
            "SELECT message_id, leased_at FROM deliveries WHERE message_id = ANY(%s)", (ids,))}
    return [Wait(submit_s=u.visible_at - u.began_at, claim_s=leased[u.message_id] - u.visible_at)
            for u in urgent]


def report_idle(mode: str, waits: Sequence[Wait], target_s: float) -> bool:
    claim_ms = [w.claim_s * 1000 for w in waits]
    print(f"  {mode}: submit -> first claim {_figures(claim_ms, '.1f', ' ms')}, "
          f"min {min(claim_ms):.1f} ms")
    print(f"  {' ' * len(mode)}  from the submit call's start "
          f"{_figures([(w.submit_s + w.claim_s) * 1000 for w in waits], '.1f', ' ms')}; "
          f"the call itself {_figures([w.submit_s * 1000 for w in waits], '.1f', ' ms')}")
    p99 = percentile([w.claim_s for w in waits], 0.99)
    print_target(f"  target p99 <= {target_s * 1000:.0f} ms ({mode})", p99 <= target_s,
                 f"{p99 * 1000:.1f} ms")
    return p99 <= target_s


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--recipients", type=int, default=1_000_000, help="N (default 1,000,000)")
    parser.add_argument("--workers", type=int, default=2, help="W processes (default 2)")
    parser.add_argument("--batch", type=int, default=1000, help="B (default 1000)")
    parser.add_argument("--max-urgent", type=int, default=10_000,
                        help="at most this many 1-recipient messages during the broadcast")
    parser.add_argument("--idle-messages", type=int, default=100,
                        help="K, per wake-up mode (default 100)")
    parser.add_argument("--poll", type=float, default=1.0, metavar="SECONDS",
                        help="P: the polling side's --idle-recheck (default 1)")
    parser.add_argument("--seed", type=int, default=1)
    add_dsn_option(parser)
    add_baseline_option(parser)
    parser.add_argument("--quick", action="store_true",
                        help="20,000 recipients, 10 idle messages, --poll 0.5")
    args = parser.parse_args(argv)
    if args.quick:
        args.recipients, args.idle_messages, args.poll = 20_000, 10, 0.5
    if min(args.recipients, args.workers, args.batch, args.idle_messages) < 1 or args.poll <= 0:
        parser.error("--recipients, --workers, --batch, --idle-messages and --poll must be "
                     "positive")
    check_baseline(parser, args.baseline)
    print(__doc__.splitlines()[0] if __doc__ else "")
    print(f"command: {shown_command_line()}")
    with server(args.dsn) as admin, scratch(admin) as dbs, \
            tempfile.TemporaryDirectory(prefix="sms_sim-pg-fairness-") as tmp_name:
        tmp = Path(tmp_name)
        print(f"PostgreSQL {server_version(admin)}")
        url = dbs.database()
        if args.baseline is not None:
            print(f"ours: {git_commit(ROOT)}; baseline: {args.baseline} at "
                  f"{git_commit(args.baseline)} (its workers, in a database of its own, "
                  "first; its verdict is not ours)")
            broadcast_phase(dbs.database(), args, tmp, args.baseline, "baseline")
        verdict = broadcast_phase(url, args, tmp)
        print(f"idle phase: {args.workers} idle workers, {args.idle_messages} 1-recipient "
              f"messages per mode, every ~{MEAN_GAP_S * 1000:.0f} ms")
        floor_ms = [c * 1000 for c in commit_floor(url, args.idle_messages)]
        print(f"  a durable one-row commit on this server: {_figures(floor_ms, '.1f', ' ms')}")
        if listen_available():
            waits = idle_phase(url, "LISTEN", args, tmp, 10**6)
            verdict = report_idle("LISTEN", waits, TARGET_LISTEN_S) and verdict
        else:
            print("  LISTEN: LISTEN not available (this store has no wake-ups: "
                  "sms_sim.dispatch.wake / PostgresStore.wake_channel missing)")
            print_target(f"  target p99 <= {TARGET_LISTEN_S * 1000:.0f} ms (LISTEN)", None,
                         "LISTEN not available")
        waits = idle_phase(url, "polling", args, tmp, 2 * 10**6)
        verdict = report_idle(f"polling every {args.poll:g} s", waits, args.poll) and verdict
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
