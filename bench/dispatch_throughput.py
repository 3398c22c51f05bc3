"""Dispatch throughput on SQLite against a bare claim/complete loop on the same schema.

What is measured, in one run, alternating which side goes first:

* ours: N deliveries (4 messages of N/4 recipients) dispatched by W ``Dispatcher`` threads,
  each with its own ``SqliteStore`` on one file, batch B, zero-latency ``MemoryProvider``:
  fair claim (lease rescue, round-robin across the 4 messages) -> send with the idempotency
  key -> fenced settle with per-message completion. Rate = N / wall seconds until every
  delivery is sent.
* ours, processes: the same with W worker processes (one ``Dispatcher`` each, its own
  provider; the deliveries they report must add up to N exactly, so a double send fails
  the run). Printed for information: threads share one GIL, processes do not.
* worker command: the command users run, W processes of ``python3 -m sms_sim worker --db
  FILE --exit-when-idle --quiet`` with 4 zero-latency senders each (the same ``Dispatcher``
  loop, sends on the sender threads); rate = N / wall seconds from the launch until the
  last exits (so it includes interpreter start-up); the ``sent`` counts they report must add
  up to N. Printed beside the dispatcher-only figures.
* bare: the same schema and rows, one connection, a loop of ``BEGIN IMMEDIATE``;
  ``UPDATE ... SET status='leased' ... WHERE id IN (SELECT id ... WHERE status IN
  ('pending', 'retrying') AND next_attempt_at <= now ORDER BY next_attempt_at LIMIT 100)
  RETURNING id`` (the schema's due index); ``executemany`` of ``UPDATE ... SET status='sent'``;
  ``COMMIT``, WAL with ``synchronous = FULL`` as the store. No fairness, no fencing, no
  retries: the floor any SQLite queue pays.

Targets (issue 5), judged on the threads: ours >= 50,000 deliveries/s and ours / bare >= 0.5.
huey's SQLite storage is measured beside it when huey is importable.

Command (from the repo root): python3 bench/dispatch_throughput.py [--runs 3] [--quick]
(huey is no project dependency: ``python3 -m venv /tmp/huey-venv && /tmp/huey-venv/bin/pip
install huey``, then run the script with ``/tmp/huey-venv/bin/python``.)
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from multiprocessing.queues import Queue as QueueType
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sms_sim.clock import RealClock  # noqa: E402
from sms_sim.dispatch.requests import NewMessage  # noqa: E402
from sms_sim.dispatch.dispatcher import DispatchConfig, Dispatcher  # noqa: E402
from sms_sim.dispatch.stores import SqliteStore  # noqa: E402
from sms_sim.dispatch.transport import MemoryProvider  # noqa: E402

TARGET_RATE_PER_S = 50_000
TARGET_RATIO = 0.5
MESSAGES = 4
BARE_BATCH = 100
HUEY_ITEMS = 20_000  # huey enqueues one transaction per task, so fewer than ours


def _prepare(path: Path, deliveries: int) -> None:
    store = SqliteStore(path)
    per_message = deliveries // MESSAGES
    for m in range(MESSAGES):
        numbers = [f"5{m:02d}-{i // 10000:03d}-{i % 10000:04d}" for i in range(per_message)]
        store.submit(NewMessage.validated(content=f"bench {m}", recipients=numbers), 1.0)
    store.close()


def _dispatcher(store: SqliteStore, seed: int, batch: int) -> Dispatcher:
    return Dispatcher(store, clock=RealClock(), rng=random.Random(seed),
                      config=DispatchConfig(batch_size=batch))


def rate_ours(path: Path, deliveries: int, workers: int, batch: int) -> float:
    stop = threading.Event()
    provider = MemoryProvider()
    stores = [SqliteStore(path) for _ in range(workers)]
    dispatchers = [_dispatcher(store, i, batch) for i, store in enumerate(stores)]

    def work(dispatcher: Dispatcher) -> None:
        dispatcher.run(provider, stop, until_idle=True)

    threads = [threading.Thread(target=work, args=(d,)) for d in dispatchers]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed_s = time.perf_counter() - start
    for store in stores:
        store.close()
    summary = provider.summary()
    if summary.delivered != deliveries or summary.effective_duplicates:
        raise RuntimeError(f"ours delivered {summary.delivered} of {deliveries}")
    return deliveries / elapsed_s


def _process_worker(path: Path, seed: int, batch: int, go: EventType,
                    done: QueueType[tuple[int, float]]) -> None:
    store = SqliteStore(path)
    provider = MemoryProvider()
    dispatcher = _dispatcher(store, seed, batch)
    go.wait()
    dispatcher.run(provider, threading.Event(), until_idle=True)
    store.close()
    done.put((provider.summary().delivered, time.perf_counter()))


def rate_ours_processes(path: Path, deliveries: int, workers: int, batch: int) -> float:
    context = multiprocessing.get_context("fork")
    go = context.Event()
    done: QueueType[tuple[int, float]] = context.Queue()
    processes = [context.Process(target=_process_worker, args=(path, i, batch, go, done))
                 for i in range(workers)]
    for process in processes:
        process.start()
    time.sleep(0.5)  # let every child open its store before the clock starts
    start = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
    go.set()
    results = [done.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
    delivered = sum(count for count, _ in results)
    if delivered != deliveries:
        raise RuntimeError(f"processes delivered {delivered} of {deliveries}")
    return deliveries / (max(end for _, end in results) - start)


def rate_worker_command(path: Path, deliveries: int, workers: int, batch: int) -> float:
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "sms_sim", "worker", "--db", str(path), "--exit-when-idle",
               "--quiet", "--senders", "4", "--mean", "0", "--deviation", "0",
               "--batch", str(batch)]
    start = time.perf_counter()
    processes = [subprocess.Popen([*command, "--seed", str(i)], cwd=root, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for i in range(workers)]
    outputs = [process.communicate(timeout=600) for process in processes]
    elapsed_s = time.perf_counter() - start
    sent = 0
    for process, (out, err) in zip(processes, outputs, strict=True):
        found = re.search(r" claims: (\d+) sent,", out)
        if process.returncode != 0 or found is None:
            raise RuntimeError(f"worker exited {process.returncode}: {err.strip()[-300:]}")
        sent += int(found.group(1))
    if sent != deliveries:
        raise RuntimeError(f"worker command sent {sent} of {deliveries}")
    return deliveries / elapsed_s


def rate_bare(path: Path, deliveries: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")  # as SqliteStore: the same durability
    done = 0
    start = time.perf_counter()
    while True:
        conn.execute("BEGIN IMMEDIATE")
        ids = conn.execute(
            "UPDATE deliveries SET status = 'leased', lease_owner = 'bare', lease_until = ?, "
            "attempts = attempts + 1 WHERE id IN (SELECT id FROM deliveries WHERE "
            "status IN ('pending', 'retrying') AND next_attempt_at <= ? "
            "ORDER BY next_attempt_at LIMIT ?) RETURNING id",
            (time.time() + 30, time.time(), BARE_BATCH),
        ).fetchall()
        conn.executemany("UPDATE deliveries SET status = 'sent', sent_at = ?, lease_owner = NULL,"
                         " lease_until = NULL WHERE id = ?", [(time.time(), i) for (i,) in ids])
        conn.execute("COMMIT")
        done += len(ids)
        if not ids:
            break
    elapsed_s = time.perf_counter() - start
    conn.close()
    if done != deliveries:
        raise RuntimeError(f"bare completed {done} of {deliveries}")
    return deliveries / elapsed_s


def rate_huey(path: Path, items: int) -> float:
    """huey's SQLite storage, the peer the issue quotes: ``dequeue`` until empty (one
    transaction that selects the oldest task and deletes it: its claim and complete)."""
    from huey.storage import SqliteStorage

    storage = SqliteStorage(name="bench", filename=str(path))
    for i in range(items):
        storage.enqueue(f"task {i}".encode())
    done = 0
    start = time.perf_counter()
    while storage.dequeue() is not None:
        done += 1
    elapsed_s = time.perf_counter() - start
    storage.close()
    if done != items:
        raise RuntimeError(f"huey dequeued {done} of {items}")
    return items / elapsed_s


def huey_line(items: int, ours_rate: float) -> str:
    if importlib.util.find_spec("huey") is None:
        return ("huey: not installed (the issue quotes about 6.3k/s for its SQLite storage; "
                "run this script with a Python that has huey to measure it here)")
    with tempfile.TemporaryDirectory() as tmp:
        rate = rate_huey(Path(tmp) / "huey.db", items)
    return (f"huey   {rate:>10,.0f} dequeues/s (SqliteStorage, {items:,} tasks, one run); "
            f"ours / huey {ours_rate / rate:.1f}x")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="20,000 deliveries, 1 run")
    args = parser.parse_args(argv)
    if args.quick:
        args.deliveries, args.runs = 20_000, 1
    ours: list[float] = []
    processes: list[float] = []
    command: list[float] = []
    bare: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            sides = [("ours", ours), ("processes", processes), ("command", command),
                     ("bare", bare)]
            for name, rates in sides if run % 2 == 0 else reversed(sides):
                path = Path(tmp) / f"{name}-{run}.db"
                _prepare(path, args.deliveries)
                if name == "ours":
                    rates.append(rate_ours(path, args.deliveries, args.workers, args.batch))
                elif name == "processes":
                    rates.append(rate_ours_processes(path, args.deliveries, args.workers,
                                                     args.batch))
                elif name == "command":
                    rates.append(rate_worker_command(path, args.deliveries, args.workers,
                                                     args.batch))
                else:
                    rates.append(rate_bare(path, args.deliveries))
            print(f"run {run + 1}: ours {ours[-1]:,.0f}/s  bare {bare[-1]:,.0f}/s  "
                  f"ratio {ours[-1] / bare[-1]:.2f}  (processes {processes[-1]:,.0f}/s, "
                  f"worker command {command[-1]:,.0f}/s)")
    ours_rate, bare_rate = statistics.median(ours), statistics.median(bare)
    ratio = ours_rate / bare_rate
    print(f"deliveries {args.deliveries:,}, {args.workers} workers, batch {args.batch}, "
          f"bare batch {BARE_BATCH}, median of {args.runs}")
    print(f"ours   {ours_rate:>10,.0f} deliveries/s  "
          f"{'PASS' if ours_rate >= TARGET_RATE_PER_S else 'FAIL'} (target >= "
          f"{TARGET_RATE_PER_S:,}; {args.workers} threads)")
    print(f"bare   {bare_rate:>10,.0f} deliveries/s")
    print(f"ratio  {ratio:>10.2f}  {'PASS' if ratio >= TARGET_RATIO else 'FAIL'} "
          f"(target >= {TARGET_RATIO})")
    processes_rate = statistics.median(processes)
    print(f"ours with {args.workers} worker processes {processes_rate:,.0f} deliveries/s, "
          f"ratio {processes_rate / bare_rate:.2f} (for information)")
    command_rate = statistics.median(command)
    print(f"the worker command, {args.workers} processes x 4 zero-latency senders "
          f"{command_rate:,.0f} deliveries/s, {command_rate / processes_rate:.2f} x the "
          f"dispatcher-only processes (for information; includes interpreter start-up)")
    print(huey_line(min(args.deliveries, HUEY_ITEMS), ours_rate))
    return 0 if ours_rate >= TARGET_RATE_PER_S and ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
