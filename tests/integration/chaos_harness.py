"""Crash harness: worker processes on SQLite files (or PostgreSQL schemas), SIGKILLed,
restarted and SIGSTOPped, and on PostgreSQL the server itself crashed mid-run.

Shared by the CI crash tests (small) and ``bench/dispatch_soak.py`` (large). The provider's
ledger is a separate SQLite file written by the workers' transport, so the duplicate count
comes from outside the store under test. Waiting uses ``RealClock.sleep`` on an Event (the
one real-time component here is the chaos itself); nothing asserts on elapsed time.

Two variants of the operator's setup (issue 11): mixed leases (every other worker runs with a
long lease and is never killed or paused, so nothing waits for it; a short-lease worker that
takes one of its live claims shows as a report of the long-lease worker refused, and as a
second provider call for that recipient), and several databases, all created fresh with the
same message ids and recipients, sharing one ledger (each database's deliveries must reach
the ledger under keys of their own).

``urls`` runs the same on stores given by URL (PostgreSQL) instead of new SQLite files, and
``fault`` is called once, ``fault_after_s`` into the chaos (a server restart): its start and
end are kept, and the harness's own reads wait out a store that is busy meanwhile.

``through_http`` (issue 14) puts the real provider adapter in the loop: the workers send with
``--provider`` to ``tests.fake_provider`` over HTTP on 127.0.0.1, which keeps the same ledger
file (so the audit is unchanged) and answers some requests 500, before or after taking the
message, instead of the workers' simulated failures.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

from sms_sim.clock import RealClock
from sms_sim.dispatch.contract import DeliveryStatus, DeliveryView, DispatchStore
from sms_sim.dispatch.errors import StoreBusyError
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.service import DispatchService
from sms_sim.dispatch.stores import open_store
from sms_sim.dispatch.ledger import LedgerProvider
from sms_sim.dispatch.transport import LedgerSummary
from sms_sim.dispatch.worker import CLAIM_ROUND_S
from tests.conftest import START
from tests.fake_provider import FakeProvider, Faults, write_token

__all__ = ["ChaosResult", "run_chaos"]

_T = TypeVar("_T")
# How long the harness's own store reads wait out a busy store (a server restarting).
_PATIENCE_S = 60.0


@dataclass(slots=True)
class ChaosResult:
    deliveries: int
    statuses: Counter[str]
    kills: int
    pauses: int
    restarts: int
    ledger: LedgerSummary
    lost: int  # recorded sent but never delivered, or neither sent nor dead at the end
    refused: int  # stale completions refused, summed over workers that exited cleanly
    skipped_expired: int
    lease_s: float
    integrity: str
    finished: bool
    worker_logs: list[str] = field(default_factory=list)
    databases: int = 1
    long_lease_s: float | None = None
    long_refused: int = 0  # of ``refused``: reports of long-lease workers (never touched)
    long_skipped_expired: int = 0
    # Each recipient's successive provider calls: (epoch time of one, of the next).
    resends: list[tuple[float, float]] = field(default_factory=list)
    faults: list[tuple[float, float]] = field(default_factory=list)  # (start, end), epoch

    def resend_gaps_s(self, *, clear_of_faults_s: float = 0.0) -> list[float]:
        """The waits between two successive provider calls for one recipient (a retry's
        backoff, or the redelivery delay after a lost lease), leaving out those that
        overlap a fault or the ``clear_of_faults_s`` after it (they wait for the server,
        not for a lease)."""
        return [b - a for a, b in self.resends
                if not any(a <= end + clear_of_faults_s and b >= start
                           for start, end in self.faults)]

    @property
    def repeats(self) -> int:
        """Provider calls beyond the first per (message, recipient): each one a second copy
        with per-worker providers. Without kills or pauses there is no reason for any."""
        return self.ledger.attempts - self.ledger.recipients_delivered


@dataclass(frozen=True, slots=True)
class _Slot:
    """One worker position: its database, its lease, and whether the chaos may touch it."""

    db: int
    lease_s: float
    chaos: bool


def _worker_cmd(db: str, ledger: Path, *, lease_s: float, seed: int, fencing: bool,
                mean_s: float, provider: tuple[str, Path] | None = None) -> list[str]:
    # The provider's failures: simulated by the worker, or answered by the fake over HTTP.
    sends_to = (["--ledger", str(ledger), "--failure-rate", "0.05"] if provider is None
                else ["--provider", provider[0], "--provider-token-file", str(provider[1]),
                      # a request may not outlast the lease (``worker.check_lease``)
                      "--provider-timeout", f"{lease_s / 2 - CLAIM_ROUND_S:g}"])
    # A real provider's sends take its own time: a simulated one is refused beside it.
    send_time = ["--mean", str(mean_s), "--deviation", "0"] if provider is None else []
    cmd = [*START, "worker", "--db", str(db), *sends_to,
           "--senders", "2", *send_time,
           "--max-attempts", "20", "--retry-base", "0.01",
           "--retry-cap", "0.05", "--batch", "20", "--lease", f"{lease_s:g}",
           "--idle-recheck", "0.02", "--exit-when-idle", "--quiet", "--interval", "3600",
           "--seed", str(seed)]
    return cmd if fencing else [*cmd, "--unsafe-no-fencing"]


def run_chaos(
    root: Path,
    *,
    messages: int,
    recipients: int,
    workers: int,
    lease_s: float,
    seed: int,
    fencing: bool = True,
    deadline_s: float = 60.0,
    chaos_for_s: float = 3.0,
    mean_s: float = 0.004,
    long_lease_s: float | None = None,
    databases: int = 1,
    urls: Sequence[str] = (),
    fault: Callable[[], None] | None = None,
    fault_after_s: float = 1.0,
    through_http: bool = False,
) -> ChaosResult:
    """Submit ``messages`` x ``recipients`` to each of ``databases`` new files (the same ids
    and numbers in each), run ``workers`` processes per file, all on one ledger, and, from
    the first recorded send on, for ``chaos_for_s`` pause (SIGSTOP for 1.5 leases; the first
    action always, on the worker holding the most leases) or kill (SIGKILL, then restart)
    one at random every 0.1-0.4 s. Then let them finish (they exit when idle) and audit the
    stores and the ledger. Workers' outputs come back in ``worker_logs``.

    ``long_lease_s``: every second worker of a file runs with this lease instead, and the
    chaos leaves it alone (so a test never waits for such a lease to run out). ``urls``:
    empty stores to use instead of new SQLite files (``databases`` is then their number).
    ``fault``: called once, ``fault_after_s`` after the chaos starts (it may block).
    ``through_http``: the workers send to the fake provider over HTTP (module docstring).
    """
    clock, rng, tick = RealClock(), random.Random(seed), threading.Event()
    ledger_path = root / "ledger.db"
    paths = list(urls) or [str(root / ("chaos.db" if databases == 1 else f"chaos-{d + 1}.db"))
                           for d in range(databases)]
    databases = len(paths)
    stores = [open_store(path, create=True) for path in paths]
    for d, store in enumerate(stores):
        _submit_broadcasts(store, clock, messages=messages, recipients=recipients,
                           label="" if databases == 1 else f" (database {d + 1})")
    # Create the ledger before the workers, so they do not race to create one new file.
    LedgerProvider(ledger_path, clock=clock).close()
    http: FakeProvider | None = None
    provider: tuple[str, Path] | None = None
    if through_http:
        http = FakeProvider(ledger_path=ledger_path, clock=clock,
                            faults=Faults(fail_every=17, ambiguous_every=23,
                                          answer_after_s=mean_s)).start()
        provider = (http.url, write_token(root / "provider.token"))
    slots = [_Slot(d, long_lease_s, False) if long_lease_s is not None and i % 2 == 1
             else _Slot(d, lease_s, True)
             for d in range(databases) for i in range(workers)]
    logs: list[tuple[_Slot, Path]] = []
    log_of: dict[int, Path] = {}  # pid -> its output file (first line: its lease token)
    spawned = 0

    def spawn(slot: _Slot) -> subprocess.Popen[bytes]:
        nonlocal spawned
        spawned += 1
        log = root / f"worker-{spawned}.log"
        logs.append((slot, log))
        with log.open("wb") as out:
            proc = subprocess.Popen(
                _worker_cmd(paths[slot.db], ledger_path, lease_s=slot.lease_s,
                            seed=seed * 1000 + spawned, fencing=fencing, mean_s=mean_s,
                            provider=provider),
                stdout=out, stderr=subprocess.STDOUT, cwd=root)
        log_of[proc.pid] = log
        return proc

    procs = [spawn(slot) for slot in slots]
    targets = [index for index, slot in enumerate(slots) if slot.chaos]
    paused: dict[int, float] = {}  # index -> resume at (monotonic)
    protected: set[int] = set()  # paused once: let it live to report its refusals
    kills = pauses = restarts = 0
    max_pauses = max(1, min(3, len(targets) - 1))  # paused ones are spared kills: keep one
    # Chaos starts once dispatch has, and opens with a pause: a worker paused while it
    # holds claims is what must see its late completions refused.
    while not any(store.deliveries(status=DeliveryStatus.SENT, limit=1) for store in stores):
        clock.sleep(0.01, tick)
    start = clock.monotonic()
    finished = False
    faults: list[tuple[float, float]] = []
    while clock.monotonic() - start < deadline_s:
        now = clock.monotonic()
        _resume_due(procs, paused, now)
        if fault is not None and not faults and now - start >= fault_after_s:
            began = clock.now()
            fault()
            faults.append((began, clock.now()))
            now = clock.monotonic()
            _resume_due(procs, paused, now)
        chaos = now - start < chaos_for_s and bool(targets)
        if chaos:
            index = rng.choice(targets) if pauses else _patiently(
                clock, partial(_holder, stores, procs, targets, log_of))
            proc = procs[index]
            if index not in paused and index not in protected and proc.poll() is None:
                if pauses == 0 or (rng.random() < 0.3 and pauses < max_pauses):
                    proc.send_signal(signal.SIGSTOP)
                    paused[index] = now + 1.5 * slots[index].lease_s
                    protected.add(index)
                    pauses += 1
                else:
                    proc.kill()
                    proc.wait(timeout=30)
                    kills += 1
                    procs[index] = spawn(slots[index])
                    restarts += 1
        elif not paused and all(p.poll() is not None for p in procs):
            if sum(_patiently(clock, partial(_open_deliveries, store)) for store in stores) == 0:
                finished = True
                break
            procs = [spawn(slot) for slot in slots]  # all exited early: keep going
            restarts += len(slots)
        clock.sleep(rng.uniform(0.1, 0.4) if chaos else 0.05, tick)
    _stop_all(procs, paused)
    if http is not None:
        http.stop()
    ledger = LedgerProvider(ledger_path, clock=clock)
    summary = ledger.summary()
    delivered = ledger.delivered_targets()
    ledger.close()
    statuses: Counter[str] = Counter()
    count = lost = 0
    checks: list[str] = []
    for store in stores:
        rows = _patiently(clock, partial(store.deliveries, limit=10**9))
        uids = {view.id: view.uid for view in store.messages(limit=10**9)}
        count += len(rows)
        statuses.update(str(d.status) for d in rows)
        lost += _lost(rows, uids, delivered)
        checks.append(DispatchService(store, clock).check())
        store.close()
    texts = [log.read_text(errors="replace") for _, log in logs]
    refused, skipped = _fencing_counts(texts)
    long_refused, long_skipped = _fencing_counts(
        [text for (slot, _), text in zip(logs, texts, strict=True) if not slot.chaos])
    integrity = "ok" if all(check == "ok" for check in checks) else "; ".join(checks)
    return ChaosResult(deliveries=count, statuses=statuses, kills=kills, pauses=pauses,
                       restarts=restarts, ledger=summary, lost=lost, refused=refused,
                       skipped_expired=skipped, lease_s=lease_s, integrity=integrity,
                       finished=finished, worker_logs=texts, databases=databases,
                       long_lease_s=long_lease_s, long_refused=long_refused,
                       long_skipped_expired=long_skipped, resends=_resends(ledger_path),
                       faults=faults)


def _patiently(clock: RealClock, read: Callable[[], _T]) -> _T:
    """``read()``, tried again while the store is busy (a server restarting), for up to
    ``_PATIENCE_S``."""
    never = threading.Event()
    deadline = clock.monotonic() + _PATIENCE_S
    while True:
        try:
            return read()
        except StoreBusyError:
            if clock.monotonic() >= deadline:
                raise
            clock.sleep(0.2, never)


def _resends(ledger: Path) -> list[tuple[float, float]]:
    """Every pair of successive provider calls for one recipient, from the ledger file."""
    with sqlite3.connect(ledger) as conn:
        return [(float(a), float(b)) for a, b in conn.execute(
            "SELECT previous, at FROM (SELECT at, LAG(at) OVER (PARTITION BY target "
            "ORDER BY seq) AS previous FROM attempts) WHERE previous IS NOT NULL")]


def _submit_broadcasts(store: DispatchStore, clock: RealClock, *, messages: int,
                       recipients: int, label: str) -> None:
    """``messages`` broadcasts of ``recipients`` each; message ``m``'s numbers start ``5mm-``.

    Every database gets the same numbers and, being new, the same message ids: only the
    content (``label``) tells them apart, as for two announcements from two databases.
    """
    for m in range(messages):
        numbers = [f"5{m:02d}-{i // 10000:03d}-{i % 10000:04d}" for i in range(recipients)]
        store.submit(NewMessage.validated(content=f"alert {m}{label}", recipients=numbers),
                     clock.now())


def _resume_due(procs: list[subprocess.Popen[bytes]], paused: dict[int, float],
                now: float) -> None:
    """SIGCONT every paused worker whose resume time has come, and forget it as paused."""
    for index, resume_at in list(paused.items()):
        if now >= resume_at:
            procs[index].send_signal(signal.SIGCONT)
            del paused[index]


def _stop_all(procs: list[subprocess.Popen[bytes]], paused: dict[int, float]) -> None:
    """Resume the paused workers, terminate any still running, and reap them all."""
    for index in list(paused):
        procs[index].send_signal(signal.SIGCONT)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=30)


def _lost(rows: list[DeliveryView], uids: dict[int, str], delivered: set[str]) -> int:
    """Deliveries left unfinished, or marked sent with no send in the ledger under their key.

    The key is spelled out here (the message's uid, then the recipient) rather than asked of
    the engine, so an engine that built keys that collide across databases is caught.
    """
    return sum(
        1 for d in rows
        if d.status not in (DeliveryStatus.SENT, DeliveryStatus.DEAD)
        or (d.status is DeliveryStatus.SENT
            and f"{uids[d.message_id]}:{d.recipient}" not in delivered)
    )


def _fencing_counts(texts: Sequence[str]) -> tuple[int, int]:
    """Totals of the workers' ``fencing:`` lines: (refused, skipped as expired)."""
    refused = skipped = 0
    for text in texts:
        for line in text.splitlines():
            if line.startswith("fencing: "):
                words = line.split()
                refused += int(words[1])
                skipped += int(words[5])
    return refused, skipped


def _holder(stores: Sequence[DispatchStore], procs: list[subprocess.Popen[bytes]],
            candidates: Sequence[int], log_of: dict[int, Path]) -> int:
    """Of ``candidates``, the index of a running worker that holds the most leases right now
    (the first candidate if none holds any).

    Workers print their lease token on their first line; the stores say who holds what.
    """
    held = Counter(d.lease_owner for store in stores
                   for d in store.deliveries(status=DeliveryStatus.LEASED, limit=10**9))
    best, best_count = candidates[0], 0
    for index in candidates:
        proc = procs[index]
        if proc.poll() is not None:
            continue
        owner = log_of[proc.pid].read_text(errors="replace").split(":", 1)[0]
        if held[owner] > best_count:
            best, best_count = index, held[owner]
    return best


def _open_deliveries(store: DispatchStore) -> int:
    return sum(1 for d in store.deliveries(limit=10**9)
               if d.status in (DeliveryStatus.PENDING, DeliveryStatus.LEASED,
                               DeliveryStatus.RETRYING))
