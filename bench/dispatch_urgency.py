"""Urgency during a broadcast: how long a 1-recipient message due mid-broadcast waits to be sent.

What is measured (issue 11, item 9): one ``worker`` process (the CLI: 4 senders with a fixed
send time, ``--batch`` B, a provider ledger file) dispatches a 20,000-recipient broadcast at
priority 0. Meanwhile 1-recipient messages, half at priority 0 and half at priority 10, each
to a number of its own, are submitted through the ``submit`` CLI at random moments, with
``--at`` one second ahead so that their due time is known exactly. Due -> first send is the
ledger's first provider call for that number minus its due time. Per configuration (send
time x batch): p50, p99 and max, overall and per priority.

Target: p99 <= one mean send time + one claim round + 50 ms, whatever ``--batch`` is. The
claim round is measured: the worker's mean time between claims (elapsed / claims, from its
final report). Every figure the target uses is printed.

``--against REV`` runs the same configurations with the CLI of REV (a temporary ``git
worktree``, removed at the end) and prints its figures beside ours: the old figure.

Command (from the repo root): python3 bench/dispatch_urgency.py [--against HEAD~1]
[--means 0.05,0.2] [--batches 100,1000] [--urgent 10] [--window 8] [--seed 1] [--quick]
About 15 s per configuration and side: a minute for the four defaults, two with --against.
"""

from __future__ import annotations

import argparse
import datetime
import random
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
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

BROADCAST = 20_000
SENDERS = 4
SUBMIT_LEAD_S = 1.0  # due this long after the submit starts: more than the CLI's start-up
SLACK_S = 0.05
PRIORITIES = (0, 10)
_REPORT_RE = re.compile(r"claimed (\d+) in (\d+) claims: .* in ([0-9.]+)s")


@dataclass(frozen=True, slots=True)
class Run:
    """One configuration on one side: per urgent message (priority, due -> first send),
    None for one never sent before the timeout; and the worker's claims and elapsed time."""

    waits: list[tuple[int, float | None]]
    claims: int | None
    elapsed_s: float | None
    late_submits: int  # submits that returned after their own due time (skewing the figure)

    @property
    def claim_round_s(self) -> float | None:
        if not self.claims or self.elapsed_s is None:
            return None
        return self.elapsed_s / self.claims


def _iso(epoch_s: float) -> str:
    return datetime.datetime.fromtimestamp(epoch_s, tz=datetime.timezone.utc).isoformat()


def _first_sends(ledger: Path) -> dict[str, float]:
    """Recipient -> its first provider call (epoch seconds), from the ledger's attempts.

    A target is "<message>:<recipient>" whatever the message part is (an id before issue
    11, a uid after), so the recipient is what follows the last colon.
    """
    if not ledger.exists():
        return {}
    conn = sqlite3.connect(ledger, timeout=10)
    try:
        rows = conn.execute("SELECT target, MIN(at) FROM attempts GROUP BY target").fetchall()
    except sqlite3.Error:
        return {}  # the worker has not made its tables yet
    finally:
        conn.close()
    return {str(target).rsplit(":", 1)[-1]: float(at) for target, at in rows}


def run_once(repo: Path, *, mean_s: float, batch: int, urgent: int, window_s: float,
             timeout_s: float, rng: random.Random) -> Run:
    with tempfile.TemporaryDirectory(prefix="sms_sim-urgency-") as tmp:
        root = Path(tmp)
        db, ledger, numbers = root / "urgency.db", root / "ledger.db", root / "broadcast.txt"
        numbers.write_text("".join(f"500-{i // 10000:03d}-{i % 10000:04d}\n"
                                   for i in range(BROADCAST)))
        run_cli(repo, "submit", "broadcast", "--db", str(db), "--recipients-file",
                str(numbers), cwd=root)
        worker = start_cli(repo, "worker", "--db", str(db), "--ledger", str(ledger),
                           "--senders", str(SENDERS), "--mean", f"{mean_s:g}", "--deviation",
                           "0", "--batch", str(batch), "--quiet", "--seed",
                           str(rng.randrange(10**6)), cwd=root, log=root / "worker.log")
        try:
            while not _first_sends(ledger):  # dispatching has begun
                if worker.poll() is not None:
                    raise RuntimeError(f"worker exited {worker.returncode}: "
                                       f"{(root / 'worker.log').read_text()[-500:]}")
                time.sleep(0.05)
            time.sleep(1.0)  # past the first claims: the steady state of a broadcast
            due: dict[str, tuple[int, float]] = {}  # recipient -> (priority, due at)
            late = 0
            for i in range(urgent):
                time.sleep(rng.uniform(0.5, 1.5) * window_s / urgent)
                recipient, priority = f"900-000-{i:04d}", PRIORITIES[i % len(PRIORITIES)]
                due_at = time.time() + SUBMIT_LEAD_S
                run_cli(repo, "submit", f"urgent {i}", "--db", str(db), "--to", recipient,
                        "--priority", str(priority), "--at", _iso(due_at), cwd=root)
                late += time.time() > due_at
                due[recipient] = (priority, due_at)
            give_up = time.monotonic() + timeout_s
            sends = _first_sends(ledger)
            while not set(due) <= set(sends) and time.monotonic() < give_up:
                time.sleep(0.1)
                sends = _first_sends(ledger)
        finally:
            stop_process(worker)
        found = _REPORT_RE.search((root / "worker.log").read_text(errors="replace"))
    waits = [(priority, sends[r] - due_at if r in sends else None)
             for r, (priority, due_at) in due.items()]
    return Run(waits=waits, claims=None if found is None else int(found.group(2)),
               elapsed_s=None if found is None else float(found.group(3)), late_submits=late)


def _figures(values: Sequence[float | None]) -> str:
    sent = [v for v in values if v is not None]
    unsent = len(values) - len(sent)
    if not sent:
        return f"none sent ({unsent} waiting at the timeout)"
    text = (f"p50 {percentile(sent, 0.5):.3f} s, p99 {percentile(sent, 0.99):.3f} s, "
            f"max {max(sent):.3f} s (n={len(sent)})")
    return text + (f", {unsent} never sent" if unsent else "")


def report(label: str, run: Run, mean_s: float) -> bool | None:
    """Print one side's line of one configuration; True/False: met the target, None: unknown."""
    waits = [w for _, w in run.waits]
    print(f"  {label}: due -> first send {_figures(waits)}")
    for priority in PRIORITIES:
        print(f"    priority {priority:>2}: {_figures([w for p, w in run.waits if p == priority])}")
    if run.late_submits:
        print(f"    ({run.late_submits} submits returned after their due time)")
    round_s = run.claim_round_s
    if round_s is None:
        print_target("  target", None,
                     "claim round unknown: the worker's report was not found")
        return None
    target_s = mean_s + round_s + SLACK_S
    sent = [w for w in waits if w is not None]
    p99 = percentile(sent, 0.99) if len(sent) == len(waits) and sent else float("inf")
    print_target(f"  target p99 <= {target_s:.3f} s", p99 <= target_s,
                 f"send {mean_s:g} s + claim round {round_s:.3f} s ({run.elapsed_s:.1f} s / "
                 f"{run.claims} claims) + {SLACK_S * 1000:.0f} ms")
    return p99 <= target_s


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--means", type=_floats, default=[0.05, 0.2], metavar="S,S",
                        help="send times in seconds (default 0.05,0.2)")
    parser.add_argument("--batches", type=_ints, default=[100, 1000], metavar="N,N",
                        help="worker --batch values (default 100,1000)")
    parser.add_argument("--urgent", type=int, default=10,
                        help="1-recipient messages per configuration (default 10)")
    parser.add_argument("--window", type=float, default=8.0, metavar="SECONDS",
                        help="over how long they are submitted (default 8)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="the longest wait for the last one to be sent (default 30)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="one configuration (0.05 s, batch 100), 4 messages over 3 s")
    add_checkout_options(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.means, args.batches, args.urgent, args.window = [0.05], [100], 4, 3.0
    if args.urgent < 1:
        parser.error(f"--urgent must be >= 1 (got {args.urgent})")
    print(__doc__.splitlines()[0] if __doc__ else "")
    print(f"{BROADCAST:,}-recipient broadcast, one worker with {SENDERS} senders; "
          f"{args.urgent} urgent 1-recipient messages per configuration "
          f"(priorities {'/'.join(map(str, PRIORITIES))}) over ~{args.window:g} s")
    print(f"command: {command_line()}")
    verdicts: list[bool | None] = []
    with checkouts(args) as sides:
        for mean_s in args.means:
            for batch in args.batches:
                print(f"send time {mean_s:g} s, --batch {batch}:")
                for label, repo in sides:
                    result = run_once(repo, mean_s=mean_s, batch=batch, urgent=args.urgent,
                                      window_s=args.window, timeout_s=args.timeout,
                                      rng=random.Random(f"{args.seed}:{mean_s}:{batch}"))
                    verdict = report(f"{label} ({repo})", result, mean_s)
                    if label == "new":
                        verdicts.append(verdict)
    return 0 if all(v is not False for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
