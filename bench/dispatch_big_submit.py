"""Big submit while workers run: the longest write-lock hold, and the workers' claim latency.

What is measured (issue 11, item 11): two ``worker`` processes (the CLI, 4 senders at 10 ms
each, one provider ledger) dispatch a background broadcast from an SQLite file; then a
1,000,000-recipient message is submitted to the same file through ``submit
--recipients-file``. From outside, a probe thread in this process tries ``BEGIN IMMEDIATE;
COMMIT`` on the file every 10 ms with no busy timeout, retrying every millisecond while it
is refused: its wait is what any writer (a worker's claim) waits for the write lock. Printed
for the submit's duration, beside the same figures for the seconds before it:

* the longest probe wait (the longest the write lock stayed out of reach: a lower bound on
  the submit's longest hold, and exactly what a claim would have waited), and the probe
  waits' p50/p99;
* the longest gap between two provider calls of the workers (the ledger's send times), and
  their send rate: how long dispatch stalled;
* whether both workers were still running at the end (a worker that waits too long for the
  lock may give up).

Target: the longest probe wait during the submit under one second (not seconds).
``--against REV`` measures REV's CLI the same way (a temporary ``git worktree``, removed at
the end) and prints it beside: the old figure.

Command (from the repo root): python3 bench/dispatch_big_submit.py [--against HEAD~1]
[--recipients 1000000] [--background 100000] [--quick]
About a minute per side with the defaults (two with --against); --quick: 100,000 recipients.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    add_checkout_options,
    checkouts,
    command_line,
    percentile,
    print_target,
    run_cli,
    start_cli,
    stop_process,
)

WORKERS = 2
SEND_S = 0.01
PROBE_EVERY_S = 0.01
PROBE_RETRY_S = 0.001
BASELINE_S = 3.0
TARGET_WAIT_S = 1.0


@dataclass(slots=True)
class Probe:
    """Waits for the write lock, as (epoch seconds the try began, seconds until it got it)."""

    path: Path
    waits: list[tuple[float, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        try:
            while not self.stop.wait(PROBE_EVERY_S):
                began, start = time.time(), time.perf_counter()
                while not self._try(conn):
                    if self.stop.wait(PROBE_RETRY_S):
                        return
                self.waits.append((began, time.perf_counter() - start))
        finally:
            conn.close()

    @staticmethod
    def _try(conn: sqlite3.Connection) -> bool:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # locked (busy): another writer holds it
            return False
        conn.execute("COMMIT")
        return True


@dataclass(frozen=True, slots=True)
class Window:
    """What the probe and the ledger saw between ``start`` and ``end`` (epoch seconds)."""

    seconds: float
    waits: list[float]
    sends: int
    longest_gap_s: float

    def line(self) -> str:
        if not self.waits:
            return "no probe try finished"
        return (f"probe wait p50 {percentile(self.waits, 0.5) * 1000:.1f} ms, p99 "
                f"{percentile(self.waits, 0.99) * 1000:.1f} ms, max {max(self.waits):.3f} s "
                f"({len(self.waits):,} tries); longest gap between sends "
                f"{self.longest_gap_s:.3f} s, {self.sends / self.seconds:,.0f} sends/s")


def _window(probe: Probe, sends: Sequence[float], start: float, end: float) -> Window:
    waits = [wait for began, wait in probe.waits if start <= began < end]
    inside = [start, *(at for at in sends if start <= at <= end), end]
    gaps = [later - earlier for earlier, later in zip(inside, inside[1:], strict=False)]
    return Window(seconds=end - start, waits=waits, sends=len(inside) - 2,
                  longest_gap_s=max(gaps))


def _send_times(ledger: Path) -> list[float]:
    conn = sqlite3.connect(ledger, timeout=30)
    try:
        return [float(at) for (at,) in conn.execute("SELECT at FROM attempts ORDER BY at")]
    finally:
        conn.close()


def _numbers(path: Path, first: int, count: int) -> None:
    """``count`` distinct numbers ``<first>-xxx-xxxx`` (first group counting up past 10**7)."""
    path.write_text("".join(f"{first + i // 10**7:03d}-{i // 10**4 % 1000:03d}-{i % 10**4:04d}\n"
                            for i in range(count)))


def run_side(label: str, repo: Path, *, recipients: int, background: int) -> Window:
    with tempfile.TemporaryDirectory(prefix="sms_sim-big-submit-") as tmp:
        root = Path(tmp)
        db, ledger = root / "big.db", root / "ledger.db"
        small, big = root / "background.txt", root / "big.txt"
        _numbers(small, 600, background)
        _numbers(big, 700, recipients)
        run_cli(repo, "submit", "background", "--db", str(db), "--recipients-file", str(small),
                cwd=root)
        workers = [start_cli(repo, "worker", "--db", str(db), "--ledger", str(ledger),
                             "--senders", "4", "--mean", f"{SEND_S:g}", "--deviation", "0",
                             "--quiet", "--seed", str(i), cwd=root, log=root / f"worker-{i}.log")
                   for i in range(WORKERS)]
        probe = Probe(db)
        thread = threading.Thread(target=probe.run, name="probe")
        try:
            while not ledger.exists() or not _has_sends(ledger):
                if any(w.poll() is not None for w in workers):
                    raise RuntimeError(f"a worker exited: {_log_tail(root)}")
                time.sleep(0.05)
            thread.start()
            before = time.time()
            time.sleep(BASELINE_S)
            start = time.time()
            run_cli(repo, "submit", "big", "--db", str(db), "--recipients-file", str(big),
                    cwd=root)
            end = time.time()
            running = sum(w.poll() is None for w in workers)
            time.sleep(0.5)
        finally:
            probe.stop.set()
            if thread.is_alive():
                thread.join(timeout=30)
            codes = [stop_process(w) for w in workers]
        sends = _send_times(ledger)
        tail = _log_tail(root) if running < WORKERS else ""
    baseline = _window(probe, sends, before, start)
    during = _window(probe, sends, start, end)
    print(f"  {label} ({repo}): submit of {recipients:,} recipients took {end - start:.1f} s")
    print(f"    before it ({baseline.seconds:.1f} s): {baseline.line()}")
    print(f"    during it: {during.line()}")
    print(f"    workers running when it returned: {running} of {WORKERS} (exit codes after "
          f"SIGTERM: {codes})" + (f"; {tail}" if tail else ""))
    return during


def _has_sends(ledger: Path) -> bool:
    try:
        return bool(_send_times(ledger))
    except sqlite3.Error:
        return False  # the worker has not made the ledger's tables yet


def _log_tail(root: Path) -> str:
    """The last line of each worker log that says why it stopped (an error line)."""
    lines = [line for log in sorted(root.glob("worker-*.log"))
             for line in log.read_text(errors="replace").splitlines() if "error" in line]
    return " | ".join(lines[-WORKERS:]) or "no error line in the worker logs"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--recipients", type=int, default=1_000_000,
                        help="recipients of the big submit (default 1,000,000)")
    parser.add_argument("--background", type=int, default=100_000,
                        help="recipients of the broadcast the workers dispatch meanwhile "
                             "(default 100,000: more than they send during the submit)")
    parser.add_argument("--quick", action="store_true",
                        help="100,000 recipients, a 20,000 background")
    add_checkout_options(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.recipients, args.background = 100_000, 20_000
    if args.recipients < 1 or args.background < 1:
        parser.error("--recipients and --background must be >= 1")
    print(__doc__.splitlines()[0] if __doc__ else "")
    print(f"{WORKERS} workers x 4 senders at {SEND_S * 1000:g} ms on a {args.background:,}-"
          f"recipient broadcast; probe every {PROBE_EVERY_S * 1000:g} ms, retrying every "
          f"{PROBE_RETRY_S * 1000:g} ms; baseline {BASELINE_S:g} s before the submit")
    print(f"command: {command_line()}")
    verdict = True
    with checkouts(args) as sides:
        for label, repo in sides:
            during = run_side(label, repo, recipients=args.recipients,
                              background=args.background)
            longest_s = max(during.waits, default=float("inf"))
            passed = longest_s < TARGET_WAIT_S
            print_target(f"  target longest write-lock wait < {TARGET_WAIT_S:g} s", passed,
                         f"{longest_s:.3f} s")
            if label == "new":
                verdict = passed
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
