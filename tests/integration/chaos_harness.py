"""Crash harness: worker processes on one SQLite file, SIGKILLed, restarted and SIGSTOPped.

Shared by the CI crash test (small) and ``bench/dispatch_soak.py`` (large). The provider's
ledger is a separate SQLite file written by the workers' transport, so the duplicate count
comes from outside the store under test. Waiting uses ``RealClock.sleep`` on an Event (the
one real-time component here is the chaos itself); nothing asserts on elapsed time.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sms_sim.clock import RealClock
from sms_sim.dispatch.contract import DeliveryStatus, DeliveryView, NewMessage
from sms_sim.dispatch.stores import SqliteStore
from sms_sim.dispatch.ledger import LedgerProvider
from sms_sim.dispatch.transport import LedgerSummary
from tests.conftest import START

__all__ = ["ChaosResult", "run_chaos"]


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


def _worker_cmd(db: Path, ledger: Path, *, lease_s: float, seed: int, fencing: bool,
                mean_s: float) -> list[str]:
    cmd = [*START, "worker", "--db", str(db),
           "--ledger", str(ledger), "--senders", "2", "--mean", str(mean_s), "--deviation", "0",
           "--failure-rate", "0.05", "--max-attempts", "20", "--retry-base", "0.01",
           "--retry-cap", "0.05", "--batch", "20", "--lease", str(lease_s),
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
) -> ChaosResult:
    """Submit ``messages`` x ``recipients``, run ``workers`` processes, and, from the first
    recorded send on, for ``chaos_for_s`` pause (SIGSTOP for 1.5 leases; the first action
    always, on the worker holding the most leases) or kill (SIGKILL, then restart) one at
    random every 0.1-0.4 s. Then let them finish (they exit when idle) and audit the store
    and the ledger. Workers' outputs come back in ``worker_logs``."""
    clock, rng, tick = RealClock(), random.Random(seed), threading.Event()
    db, ledger_path = root / "chaos.db", root / "ledger.db"
    store = SqliteStore(db)
    _submit_broadcasts(store, clock, messages=messages, recipients=recipients)
    # Create the ledger before the workers, so they do not race to create one new file.
    LedgerProvider(ledger_path, clock=clock).close()
    logs: list[Path] = []
    log_of: dict[int, Path] = {}  # pid -> its output file (first line: its lease token)
    spawned = 0

    def spawn() -> subprocess.Popen[bytes]:
        nonlocal spawned
        spawned += 1
        log = root / f"worker-{spawned}.log"
        logs.append(log)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                _worker_cmd(db, ledger_path, lease_s=lease_s, seed=seed * 1000 + spawned,
                            fencing=fencing, mean_s=mean_s),
                stdout=out, stderr=subprocess.STDOUT, cwd=root)
        log_of[proc.pid] = log
        return proc

    procs = [spawn() for _ in range(workers)]
    paused: dict[int, float] = {}  # index -> resume at (monotonic)
    protected: set[int] = set()  # paused once: let it live to report its refusals
    kills = pauses = restarts = 0
    max_pauses = max(1, min(3, workers - 1))  # paused ones are spared kills: keep one killable
    # Chaos starts once dispatch has, and opens with a pause: a worker paused while it
    # holds claims is what must see its late completions refused.
    while not store.deliveries(status=DeliveryStatus.SENT, limit=1):
        clock.sleep(0.01, tick)
    start = clock.monotonic()
    finished = False
    while clock.monotonic() - start < deadline_s:
        now = clock.monotonic()
        _resume_due(procs, paused, now)
        chaos = now - start < chaos_for_s
        if chaos:
            index = rng.randrange(len(procs)) if pauses else _holder(store, procs, log_of)
            proc = procs[index]
            if index not in paused and index not in protected and proc.poll() is None:
                if pauses == 0 or (rng.random() < 0.3 and pauses < max_pauses):
                    proc.send_signal(signal.SIGSTOP)
                    paused[index] = now + 1.5 * lease_s
                    protected.add(index)
                    pauses += 1
                else:
                    proc.kill()
                    proc.wait(timeout=30)
                    kills += 1
                    procs[index] = spawn()
                    restarts += 1
        elif not paused and all(p.poll() is not None for p in procs):
            if _open_deliveries(store) == 0:
                finished = True
                break
            procs = [spawn() for _ in range(workers)]  # all exited early: keep going
            restarts += workers
        clock.sleep(rng.uniform(0.1, 0.4) if chaos else 0.05, tick)
    _stop_all(procs, paused)
    provider = LedgerProvider(ledger_path, clock=clock)
    summary = provider.summary()
    delivered = provider.delivered_targets()
    provider.close()
    rows = store.deliveries(limit=10**9)
    statuses = Counter(str(d.status) for d in rows)
    lost = _lost(rows, delivered)
    integrity = store.integrity_check()
    store.close()
    texts = [log.read_text(errors="replace") for log in logs]
    refused, skipped = _fencing_counts(texts)
    return ChaosResult(deliveries=len(rows), statuses=statuses, kills=kills, pauses=pauses,
                       restarts=restarts, ledger=summary, lost=lost, refused=refused,
                       skipped_expired=skipped, lease_s=lease_s, integrity=integrity,
                       finished=finished, worker_logs=texts)


def _submit_broadcasts(store: SqliteStore, clock: RealClock, *, messages: int,
                       recipients: int) -> None:
    """``messages`` broadcasts of ``recipients`` each; message ``m``'s numbers start ``5mm-``."""
    for m in range(messages):
        numbers = [f"5{m:02d}-{i // 10000:03d}-{i % 10000:04d}" for i in range(recipients)]
        store.submit(NewMessage.validated(content=f"alert {m}", recipients=numbers), clock.now())


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


def _lost(rows: list[DeliveryView], delivered: set[str]) -> int:
    """Deliveries left unfinished, or marked sent with no send in the ledger."""
    return sum(
        1 for d in rows
        if d.status not in (DeliveryStatus.SENT, DeliveryStatus.DEAD)
        or (d.status is DeliveryStatus.SENT and f"{d.message_id}:{d.recipient}" not in delivered)
    )


def _fencing_counts(texts: list[str]) -> tuple[int, int]:
    """Totals of the workers' ``fencing:`` lines: (refused, skipped as expired)."""
    refused = skipped = 0
    for text in texts:
        for line in text.splitlines():
            if line.startswith("fencing: "):
                words = line.split()
                refused += int(words[1])
                skipped += int(words[5])
    return refused, skipped


def _holder(store: SqliteStore, procs: list[subprocess.Popen[bytes]],
            log_of: dict[int, Path]) -> int:
    """The index of a running worker that holds the most leases right now (0 if none).

    Workers print their lease token on their first line; the store says who holds what.
    """
    held = Counter(d.lease_owner for d in store.deliveries(status=DeliveryStatus.LEASED,
                                                           limit=10**9))
    best, best_count = 0, 0
    for index, proc in enumerate(procs):
        if proc.poll() is not None:
            continue
        owner = log_of[proc.pid].read_text(errors="replace").split(":", 1)[0]
        if held[owner] > best_count:
            best, best_count = index, held[owner]
    return best


def _open_deliveries(store: SqliteStore) -> int:
    return sum(1 for d in store.deliveries(limit=10**9)
               if d.status in (DeliveryStatus.PENDING, DeliveryStatus.LEASED,
                               DeliveryStatus.RETRYING))
