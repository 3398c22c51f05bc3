"""Submit rate over HTTP: 1-recipient messages through ``serve``, beside a bare FastAPI endpoint.

What is measured, for 1 and then 2 server processes (``--workers``), in one run, rotating
which side goes first:

* ours: ``python -m sms_sim serve --db <tmp>/x.db --host 127.0.0.1 --port <free> --workers
  N`` (no dispatch worker) on a fresh database with a key from ``apikey create --tenant
  bench``. C client threads (``--concurrency``, default 8), each with its own keep-alive
  connection, POST ``/v1/messages`` with ``{"content": ..., "recipients":
  ["555-010-0001"]}`` and ``Authorization: Bearer <token>`` until M requests (``--messages``)
  are answered, every one 201: the whole path (bearer key check, validation, the store's
  submit transaction, the answer built from the stored message).
* bare: ``bench/_bare_api.py``, a FastAPI app whose POST validates the same body with a
  pydantic model, INSERTs one row and answers 201 with a small JSON, served by uvicorn the
  way ``serve`` serves (its own bound socket, ``TCP_NODELAY`` on its connections as on
  ``serve``'s, handed to ``uvicorn.Server`` or, for N > 1, uvicorn's ``Multiprocess``;
  factory per process; log level info, so one access line per request as ``serve``
  writes), with SQLite's durability as the store sets it up: WAL, ``synchronous = FULL``,
  one connection per server process under a lock, ``BEGIN IMMEDIATE`` retried in pauses
  of at most 1 ms. No authentication, and its own table: four columns and no index, where
  a 1-recipient submit writes a message row (five indexes), a delivery row (three) and a
  count row in one transaction. So it is the floor of a durable FastAPI submit, not the
  same work on the same schema; the ratio is the stricter for it.

Each side-run starts its own server on a fresh file and stops it after; every client
thread sends a few warm-up requests (not counted) before the clock starts. Printed, each
the median over the runs: requests/s (M over the wall time from the start until the last
answer), the p50/p99 latency of those requests, the p50 of ``ALONE`` more requests sent
one at a time on one connection afterwards (the cost of one request without queueing),
and the CPU time per request of the answering server processes (``/proc/<pid>/stat``,
every thread) and of the client threads, over the same span; then ours / bare, as the
median ratio and within each run (the two sides of one run are measured minutes apart at
most, so a ratio within a run is less moved by a neighbour's load than two medians).

Target (issue 12): ours >= 0.6 x bare, at each workers count.

Client and servers share this machine's cores, and with 2 server processes on 2 cores
the client's threads take CPU the servers would otherwise use. The client is
``http.client`` (a fraction of httpx's cost per request) and its CPU per request is
printed, about the same for both sides, so it narrows the gap between them rather than
favouring one. The bare/ours ratio of server CPU per request is printed too: what the rate
ratio would be if the servers were CPU-bound with the cores to themselves (the bare side
waits on its fsync more of its time, so the two ratios differ).

Command (from the repo root): python3 bench/api_submit_rate.py [--runs 3] [--messages 4000]
[--concurrency 8] [--quick]
About a minute with the defaults; --quick: 300 requests, 1 run (seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from _common import (
    command_line,
    percentile,
    print_header,
    print_runs,
    print_target,
    rotate,
)
from _bare_api import PATH, prepare_db
from _http import (
    Client,
    Server,
    cpu_s,
    create_key,
    expect,
    free_port,
    init_db,
    serve_command,
    serving,
)

TARGET_RATIO = 0.6
WORKER_COUNTS = (1, 2)
WARMUP_PER_THREAD = 5
ALONE = 30  # requests sent one at a time after the load
BODY = {"content": "bench: one recipient", "recipients": ["555-010-0001"]}
TENANT = "bench"
BARE_SERVER = Path(__file__).resolve().parent / "_bare_api.py"


# ---- the client -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Load:
    """One side-run: requests per second, the requests' latency percentiles, and the median
    latency of requests sent one at a time."""

    rate_per_s: float
    p50_ms: float
    p99_ms: float
    alone_p50_ms: float
    server_cpu_ms: float  # the answering processes' CPU time per request, under the load
    client_cpu_ms: float  # this process's (the client threads') CPU time per request


def drive(server: Server, token: str | None, messages: int, concurrency: int) -> Load:
    """``messages`` POSTs from ``concurrency`` threads, one keep-alive connection each, all
    answered 201; the clock starts once every thread has sent its warm-up requests, and the
    server's and the client's CPU time are read at the same two moments."""
    port = server.port
    pids = server.handler_pids()
    body = json.dumps(BODY).encode()
    headers = {"Content-Type": "application/json"}
    shares = [messages // concurrency + (i < messages % concurrency) for i in range(concurrency)]
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[Exception] = []
    ready = threading.Barrier(concurrency + 1)

    def run(index: int) -> None:
        try:
            with Client(port, token=token) as client:
                for _ in range(WARMUP_PER_THREAD):
                    expect(client.request("POST", PATH, body, headers), 201, "warm-up submit")
                ready.wait()
                own = latencies[index]
                for _ in range(shares[index]):
                    start = time.perf_counter()
                    reply = client.request("POST", PATH, body, headers)
                    own.append(time.perf_counter() - start)
                    expect(reply, 201, "submit")
        except Exception as exc:  # reported by the main thread
            errors.append(exc)
            ready.abort()

    threads = [threading.Thread(target=run, args=(i,), name=f"client-{i}")
               for i in range(concurrency)]
    for thread in threads:
        thread.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass  # a thread failed its warm-up: raised below
    start = time.perf_counter()
    client_start_s = time.process_time()
    server_start_s = sum(cpu_s(pid) for pid in pids)
    for thread in threads:
        thread.join()
    elapsed_s = time.perf_counter() - start
    server_used_s = sum(cpu_s(pid) for pid in pids) - server_start_s
    client_used_s = time.process_time() - client_start_s
    if errors:
        raise RuntimeError(f"a client thread failed: {errors[0]}") from errors[0]
    every = [latency for own in latencies for latency in own]
    alone: list[float] = []
    with Client(port, token=token) as client:
        for _ in range(ALONE):
            start = time.perf_counter()
            reply = client.request("POST", PATH, body, headers)
            alone.append(time.perf_counter() - start)
            expect(reply, 201, "submit")
    return Load(rate_per_s=messages / elapsed_s, p50_ms=percentile(every, 0.5) * 1000,
                p99_ms=percentile(every, 0.99) * 1000,
                alone_p50_ms=percentile(alone, 0.5) * 1000,
                server_cpu_ms=server_used_s / messages * 1000,
                client_cpu_ms=client_used_s / messages * 1000)


# ---- the sides ------------------------------------------------------------------------------


def run_ours(workers: int, messages: int, concurrency: int) -> Load:
    with tempfile.TemporaryDirectory(prefix="sms_sim-api-rate-") as tmp:
        db = Path(tmp) / "x.db"
        init_db(db)
        token = create_key(db, TENANT)
        port = free_port()
        with serving(serve_command(db, port, workers=workers), port,
                     Path(tmp) / "serve.log") as server:
            return drive(server, token, messages, concurrency)


def run_bare(workers: int, messages: int, concurrency: int) -> Load:
    with tempfile.TemporaryDirectory(prefix="sms_sim-api-bare-") as tmp:
        db = Path(tmp) / "bare.db"
        prepare_db(db)
        port = free_port()
        command = [sys.executable, str(BARE_SERVER), "--db", str(db), "--port", str(port),
                   "--workers", str(workers)]
        # uvicorn's one-process server raises the SIGTERM it caught again once it has shut
        # down (serve catches that itself and exits 0).
        with serving(command, port, Path(tmp) / "bare.log",
                     clean_exits=(0, -signal.SIGTERM)) as server:
            return drive(server, None, messages, concurrency)


def _report(workers: int, runs: int, ours: list[Load], bare: list[Load]) -> bool:
    print_header(f"workers {workers}", runs)
    ours_rate = print_runs("ours (serve) requests/s", [r.rate_per_s for r in ours], ",.0f")
    print_runs("ours p50 latency ms", [r.p50_ms for r in ours], ".1f")
    print_runs("ours p99 latency ms", [r.p99_ms for r in ours], ".1f")
    print_runs("ours p50 one at a time ms", [r.alone_p50_ms for r in ours], ".1f")
    ours_cpu = print_runs("ours server CPU ms per request", [r.server_cpu_ms for r in ours],
                          ".3f")
    print_runs("ours client CPU ms per request", [r.client_cpu_ms for r in ours], ".3f")
    bare_rate = print_runs("bare FastAPI + INSERT requests/s", [r.rate_per_s for r in bare],
                           ",.0f")
    print_runs("bare p50 latency ms", [r.p50_ms for r in bare], ".1f")
    print_runs("bare p99 latency ms", [r.p99_ms for r in bare], ".1f")
    print_runs("bare p50 one at a time ms", [r.alone_p50_ms for r in bare], ".1f")
    bare_cpu = print_runs("bare server CPU ms per request", [r.server_cpu_ms for r in bare],
                          ".3f")
    print_runs("bare client CPU ms per request", [r.client_cpu_ms for r in bare], ".3f")
    ratio = ours_rate / bare_rate
    within = [o.rate_per_s / b.rate_per_s for o, b in zip(ours, bare, strict=True)]
    print(f"  ours/bare: {ratio:.2f}; within each run: "
          + ", ".join(f"{r:.2f}" for r in within))
    print(f"  server CPU per request, bare/ours: {bare_cpu / ours_cpu:.2f} (the rate ratio "
          "if the servers had the cores to themselves)")
    passed = ratio >= TARGET_RATIO
    print_target(f"target ours/bare >= {TARGET_RATIO:g}", passed)
    return passed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=None, help="runs per side (default 3; "
                                                               "1 with --quick)")
    parser.add_argument("--messages", type=int, default=4000,
                        help="requests per side-run (default 4000)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="client threads, one keep-alive connection each (default 8)")
    parser.add_argument("--quick", action="store_true", help="300 requests, 1 run")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages = 300
    runs: int = args.runs if args.runs is not None else (1 if args.quick else 3)
    if runs < 1 or args.messages < args.concurrency or args.concurrency < 1:
        parser.error("--runs and --concurrency must be >= 1, --messages >= --concurrency")
    print(__doc__.splitlines()[0] if __doc__ else "")
    print(f"{args.messages:,} requests per side-run from {args.concurrency} client threads "
          f"(one keep-alive connection each, {WARMUP_PER_THREAD} warm-up requests each); "
          f"{os.cpu_count()} CPUs here")
    print(f"command: {command_line()}")
    sides = {}
    for workers in WORKER_COUNTS:
        sides[f"ours {workers}"] = partial(run_ours, workers, args.messages, args.concurrency)
        sides[f"bare {workers}"] = partial(run_bare, workers, args.messages, args.concurrency)
    results = rotate(sides, runs)
    verdicts = [_report(workers, runs, results[f"ours {workers}"], results[f"bare {workers}"])
                for workers in WORKER_COUNTS]
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
