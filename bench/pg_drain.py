"""Drain of a 1M-recipient broadcast on PostgreSQL: ours vs a bare SKIP LOCKED loop vs PgQueuer.

The worker command, a bare per-row loop and PgQueuer, side by side on one server.

What is measured, rotating which side goes first from run to run, each side in a fresh
database with a ``CHECKPOINT`` before it:

* ours: one message to N recipients (``sms_sim submit --recipients-file``), drained by W
  processes of ``python -m sms_sim worker --db URL --exit-when-idle`` with 4 zero-latency
  senders each, ``--batch`` B: fair claim by chunk, send with the idempotency key, fenced
  settle. Rate = N / (last settle - first claim), as the table records them (``leased_at``,
  ``sent_at``); the workers' reports must add up to N sent. From launch to the last exit
  (interpreter start-up included) is printed beside it.
* bare: the same message and rows in the store's own tables, drained by W processes of the
  loop every Postgres queue starts from, in autocommit, ``--bare-batch`` rows a claim (default
  B, as ours; 1 is the textbook one-row loop): ``WITH picked AS MATERIALIZED (SELECT id ...
  WHERE status IN ('pending', 'retrying') AND next_attempt_at <= now ORDER BY
  next_attempt_at LIMIT n FOR UPDATE SKIP LOCKED) UPDATE deliveries SET status = 'leased'
  ... FROM picked ... RETURNING ...`` (through a due index of its own on ``next_attempt_at
  WHERE status IN ('pending', 'retrying')``, built before the clock starts), then one
  ``UPDATE ... SET status = 'sent'`` of the batch, fenced by owner and attempt. Every row
  found and locked on its own (per row, not by range); no fairness, no message join.
  Rate from the same columns.
* PgQueuer (psycopg driver, in a throwaway venv under a temporary directory: ``python -m
  venv`` + ``pip install pgqueuer psycopg[binary]``, never a project dependency): N jobs
  enqueued (untimed), then W processes each running ``PgQueuer.run(batch_size=B,
  mode=QueueExecutionMode.drain)`` with a handler that only counts. Rate = N / (the last
  handler call - the moment the processes began together): its final log flush is left out,
  in its favour. SKIP with the reason when it cannot be installed (``--no-pgqueuer``: not
  tried).

Beside each side's rate, the CPU each delivery cost it (medians over its runs): its own
processes (the workers, the bare loop's, PgQueuer's consumers) and the server's processes,
when the server runs on this machine (``_pg.CpuMeter``). On two cores shared by both, a rate
is bounded by their sum; the split says which side of the wire a difference comes from.

* baseline (``--baseline DIR``, for old vs new): ours as run from another checkout (a
  ``git worktree`` of an older commit), submit and workers alike; ours / baseline printed.

Targets (issue 13): ours >= 25,000 deliveries/s; ours / bare >= 1.5; ours / PgQueuer >= 2.

Command (from the repo root): python3 bench/pg_drain.py [--recipients 1000000] [--workers 2]
[--batch 1000] [--bare-batch B] [--runs 3] [--dsn postgresql://...] [--no-pgqueuer] [--no-bare]
[--baseline DIR] [--quick]
(without --dsn a throwaway server is started with scripts/pg_server.py and stopped after;
the PgQueuer venv needs the package index and about 30 s)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from _common import git_commit, print_header, print_runs, print_target, rotate
from _pg import (
    ROOT,
    START_DELAY_S,
    WORKER_TIMEOUT_S,
    CpuMeter,
    CpuUse,
    Scratch,
    add_baseline_option,
    add_dsn_option,
    check_baseline,
    checkpoint,
    drain_span,
    run_bare,
    run_workers,
    scratch,
    server,
    server_version,
    shown_command_line,
    submit_broadcast,
    write_numbers,
)

TARGET_RATE_PER_S = 25_000
TARGET_BARE_RATIO = 1.5
TARGET_PGQUEUER_RATIO = 2.0
PIP_TIMEOUT_S = 900
ENQUEUE_ROWS = 10_000

# Run by the throwaway venv's Python. ``setup URL N``: PgQueuer's schema and N jobs;
# ``drain URL B START_AT``: one consumer in drain mode, begun at START_AT (epoch seconds).
_PGQUEUER_CHILD = """\
import asyncio, json, sys, time
from datetime import timedelta
import psycopg
from pgqueuer import PgQueuer, PsycopgDriver, Queries
from pgqueuer.types import QueueExecutionMode


async def main():
    mode, url = sys.argv[1], sys.argv[2]
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    driver = PsycopgDriver(conn)
    if mode == "setup":
        jobs, rows = int(sys.argv[3]), int(sys.argv[4])
        queries = Queries(driver)
        await queries.install()
        for start in range(0, jobs, rows):
            n = min(rows, jobs - start)
            await queries.enqueue(["send"] * n, [None] * n, [0] * n)
        print(json.dumps({"enqueued": jobs}))
        return
    batch, start_at = int(sys.argv[3]), float(sys.argv[4])
    pgq = PgQueuer(driver)
    done, last = 0, 0.0

    @pgq.entrypoint("send")
    async def send(job):
        nonlocal done, last
        done += 1
        last = time.time()

    await asyncio.sleep(max(0.0, start_at - time.time()))
    began = time.time()
    await pgq.run(batch_size=batch, mode=QueueExecutionMode.drain,
                  dequeue_timeout=timedelta(seconds=1))
    print(json.dumps({"done": done, "began": began, "last": last, "ended": time.time()}))


asyncio.run(main())
"""


@dataclass(frozen=True, slots=True)
class PgQueuer:
    """The throwaway venv's Python with PgQueuer, or why there is none."""

    python: Path | None
    detail: str  # its version, or the reason it is missing


def install_pgqueuer(tmp: Path) -> PgQueuer:
    venv = tmp / "pgqueuer-venv"
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
              "pgqueuer", "psycopg[binary]"]]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return PgQueuer(None, f"{Path(step[0]).name} {step[1]}: {exc}")
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            return PgQueuer(None, f"{' '.join(step[1:3])} failed: "
                                  f"{lines[-1] if lines else done.returncode}")
    python = venv / "bin" / "python"
    found = subprocess.run([str(python), "-c", "import pgqueuer; print(pgqueuer.__version__)"],
                           capture_output=True, text=True, timeout=120)
    if found.returncode != 0:
        return PgQueuer(None, f"import pgqueuer failed: {found.stderr.strip()[-300:]}")
    return PgQueuer(python, f"pgqueuer {found.stdout.strip()}")


@dataclass(frozen=True, slots=True)
class SideRun:
    """One drain: deliveries/s (the table's span for ours and bare, the handler calls' for
    PgQueuer), from launch to the last exit (ours only, else None), and the CPU it used."""

    rate: float
    wall_rate: float | None
    cpu: CpuUse


def rate_ours(dbs: Scratch, numbers: Path, args: argparse.Namespace,
              tmp: Path, root: Path = ROOT) -> SideRun:
    """A drain by the worker command of the checkout ``root``."""
    url = dbs.database()
    try:
        submit_broadcast(url, numbers, root=root)
        checkpoint(url)
        with CpuMeter(url) as meter:
            run = run_workers(url, args.workers, batch=args.batch, log_dir=tmp, root=root)
        span = drain_span(url)
    finally:
        dbs.drop(url)
    if run.sent != args.recipients or span.sent != args.recipients:
        raise RuntimeError(f"ours: workers sent {run.sent}, the table has {span.sent} sent, "
                           f"of {args.recipients}")
    return SideRun(span.rate, args.recipients / run.wall_s, meter.use)


def rate_bare(dbs: Scratch, numbers: Path, args: argparse.Namespace) -> SideRun:
    url = dbs.database()
    try:
        submit_broadcast(url, numbers)
        checkpoint(url)
        with CpuMeter(url) as meter:
            done = run_bare(url, args.workers, args.bare_batch)
        span = drain_span(url)
    finally:
        dbs.drop(url)
    if done != args.recipients or span.sent != args.recipients:
        raise RuntimeError(f"bare: completed {done}, the table has {span.sent} sent, "
                           f"of {args.recipients}")
    return SideRun(span.rate, None, meter.use)


def _pgqueuer_child(python: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(python), "-c", _PGQUEUER_CHILD, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _reports(procs: Sequence[subprocess.Popen[str]]) -> list[dict[str, float]]:
    reports = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=WORKER_TIMEOUT_S)
            if proc.returncode != 0:
                raise RuntimeError(f"PgQueuer child exited {proc.returncode}: "
                                   f"{err.strip()[-500:]}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return reports


def rate_pgqueuer(dbs: Scratch, python: Path, args: argparse.Namespace) -> SideRun:
    url = dbs.database()
    try:
        _reports([_pgqueuer_child(python, "setup", url, str(args.recipients),
                                  str(ENQUEUE_ROWS))])
        checkpoint(url)
        start_at = f"{time.time() + START_DELAY_S!r}"
        with CpuMeter(url) as meter:
            reports = _reports([_pgqueuer_child(python, "drain", url, str(args.batch),
                                                start_at) for _ in range(args.workers)])
    finally:
        dbs.drop(url)
    done = sum(int(report["done"]) for report in reports)
    if done < args.recipients:
        raise RuntimeError(f"PgQueuer ran {done} of {args.recipients} jobs")
    if done > args.recipients:  # seen once at 1M: a batch handed to both consumers
        print(f"    (PgQueuer run: {done:,} handler calls for {args.recipients:,} jobs, "
              f"{done - args.recipients:,} of them run twice; its rate counts the jobs)")
    seconds = max(r["last"] for r in reports) - min(r["began"] for r in reports)
    return SideRun(float(args.recipients / seconds), None, meter.use)


def print_cpu(runs: Sequence[SideRun], deliveries: int) -> None:
    """The CPU each delivery cost a side, medians over its runs: its own processes and the
    server's (when the server is on this machine)."""
    client = statistics.median(run.cpu.client_s for run in runs) / deliveries * 1e6
    servers = [run.cpu.server_s for run in runs if run.cpu.server_s is not None]
    server = (f"{statistics.median(servers) / deliveries * 1e6:.1f} us" if servers
              else "n/a (not on this machine)")
    print(f"    CPU per delivery: its processes {client:.1f} us, the server {server}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="runs per side (default 3)")
    parser.add_argument("--recipients", type=int, default=1_000_000, help="N (default 1,000,000)")
    parser.add_argument("--workers", type=int, default=2, help="W processes (default 2)")
    parser.add_argument("--batch", type=int, default=1000,
                        help="B: ours --batch and PgQueuer's batch_size (default 1000)")
    parser.add_argument("--bare-batch", type=int, metavar="N",
                        help="rows per claim of the bare loop (default B; 1: one row at a time)")
    parser.add_argument("--no-pgqueuer", action="store_true", help="leave PgQueuer out")
    parser.add_argument("--no-bare", action="store_true",
                        help="leave the bare per-row loop out")
    add_baseline_option(parser)
    add_dsn_option(parser)
    parser.add_argument("--quick", action="store_true", help="20,000 recipients, 1 run")
    args = parser.parse_args(argv)
    if args.quick:
        args.recipients, args.runs = 20_000, 1
    if args.bare_batch is None:
        args.bare_batch = args.batch
    if min(args.runs, args.recipients, args.workers, args.batch, args.bare_batch) < 1:
        parser.error("--runs, --recipients, --workers, --batch and --bare-batch must be >= 1")
    check_baseline(parser, args.baseline)
    print(__doc__.splitlines()[0] if __doc__ else "")
    print(f"command: {shown_command_line()}")
    with server(args.dsn) as admin, scratch(admin) as dbs, \
            tempfile.TemporaryDirectory(prefix="sms_sim-pg-drain-") as tmp_name:
        tmp = Path(tmp_name)
        pgqueuer = (PgQueuer(None, "--no-pgqueuer") if args.no_pgqueuer
                    else install_pgqueuer(tmp))
        print(f"PostgreSQL {server_version(admin)}; {args.recipients:,} recipients, "
              f"{args.workers} processes a side, batch {args.batch} (bare "
              f"{args.bare_batch}); PgQueuer: "
              f"{pgqueuer.detail}")
        numbers = write_numbers(tmp / "numbers.txt", 500, args.recipients)
        sides: dict[str, Callable[[], SideRun]] = {
            "ours": lambda: rate_ours(dbs, numbers, args, tmp)}
        if args.baseline is not None:
            print(f"ours: {git_commit(ROOT)}; baseline: {args.baseline} at "
                  f"{git_commit(args.baseline)}")
            sides["baseline"] = lambda: rate_ours(dbs, numbers, args, tmp, args.baseline)
        if not args.no_bare:
            sides["bare"] = lambda: rate_bare(dbs, numbers, args)
        python = pgqueuer.python
        if python is not None:
            sides["pgqueuer"] = lambda: rate_pgqueuer(dbs, python, args)
        results = rotate(sides, args.runs)
    print_header("drain deliveries/s (first claim to last settle)", args.runs)
    ours = print_runs(f"ours ({args.workers} worker processes)",
                      [run.rate for run in results["ours"]], ",.0f")
    print_runs("  ours from launch to the last exit (for information)",
               [run.wall_rate or 0.0 for run in results["ours"]], ",.0f")
    print_cpu(results["ours"], args.recipients)
    if "baseline" in results:
        base = print_runs("baseline (the other checkout)",
                          [run.rate for run in results["baseline"]], ",.0f")
        print_cpu(results["baseline"], args.recipients)
        pairs = zip(results["ours"], results["baseline"], strict=True)
        print(f"    ours/baseline: {ours / base:.2f} (per run: "
              f"{', '.join(f'{a.rate / b.rate:.2f}' for a, b in pairs)})")
    passed = [ours >= TARGET_RATE_PER_S]
    print_target(f"target ours >= {TARGET_RATE_PER_S:,}/s", passed[0], f"{ours:,.0f}")
    if "bare" in results:
        bare = print_runs(f"bare per-row SKIP LOCKED loop, {args.bare_batch} a claim",
                          [run.rate for run in results["bare"]], ",.0f")
        print_cpu(results["bare"], args.recipients)
        passed.append(ours / bare >= TARGET_BARE_RATIO)
        print_target(f"target ours/bare >= {TARGET_BARE_RATIO:g}", passed[-1],
                     f"{ours / bare:.2f}")
    else:
        print_target(f"target ours/bare >= {TARGET_BARE_RATIO:g}", None, "--no-bare")
    if "pgqueuer" in results:
        other = print_runs(f"PgQueuer ({pgqueuer.detail})",
                           [run.rate for run in results["pgqueuer"]], ",.0f")
        print_cpu(results["pgqueuer"], args.recipients)
        passed.append(ours / other >= TARGET_PGQUEUER_RATIO)
        print_target(f"target ours/PgQueuer >= {TARGET_PGQUEUER_RATIO:g}", passed[-1],
                     f"{ours / other:.2f}")
    else:
        print_target(f"target ours/PgQueuer >= {TARGET_PGQUEUER_RATIO:g}", None,
                     f"PgQueuer not available: {pgqueuer.detail}")
    return 0 if all(passed) else 1


if __name__ == "__main__":
    sys.exit(main())
