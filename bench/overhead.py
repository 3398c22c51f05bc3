"""Engine overhead: messages per second with zero latency, against a bare queue.Queue handoff.

What is measured: ``sms_sim.run`` with 4 senders ``SenderConfig(0, 0, 0)`` (no send time, no
failures), N = 200,000 and ``output=None``. Its rate is N / ``report.elapsed_s``. In the same
run, a bare handoff is timed the same way: 1 producer thread puts N ints into
``queue.Queue(maxsize=1024)`` and then 4 sentinels, while 4 consumer threads ``get()`` until
they take a sentinel. Its rate is N / wall seconds. Runs alternate which side goes first.

Why: with the sends taking no time, what remains is the engine's own cost per message:
generation, the bounded inbox, the scheduling, the outcome queues and the monitor's tallies.
The bare handoff is the floor that any producer/consumer design built on ``queue.Queue`` pays.

Target: ours / bare >= 0.5.

Command (from the repo root): python3 bench/overhead.py [--runs 5] [--quick]
(``--quick`` uses N = 50,000.)
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import Side, compare_rates, parse_args  # noqa: E402

import sms_sim  # noqa: E402

SENDERS = 4
QUEUE_SIZE = 1024
TARGET_RATIO = 0.5


def _rate_ours(num_messages: int) -> float:
    config = sms_sim.SimulationConfig(
        num_messages=num_messages,
        senders=[sms_sim.SenderConfig(0.0, 0.0, 0.0)] * SENDERS,
        seed=1,
    )
    report = sms_sim.run(config, output=None)
    if report.sent != num_messages or not report.is_accounted:
        raise RuntimeError(f"ours sent {report.sent} of {num_messages} ({report.stopped_by})")
    return num_messages / report.elapsed_s


def _rate_bare(num_messages: int) -> float:
    """Messages per wall second through one bounded queue, 1 producer, ``SENDERS`` consumers."""
    inbox: queue.Queue[int | None] = queue.Queue(maxsize=QUEUE_SIZE)
    taken = [0] * SENDERS

    def produce() -> None:
        for item in range(num_messages):
            inbox.put(item)
        for _ in range(SENDERS):
            inbox.put(None)

    def consume(index: int) -> None:
        count = 0
        while inbox.get() is not None:
            count += 1
        taken[index] = count

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(SENDERS)]
    threads.append(threading.Thread(target=produce))
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed_s = time.perf_counter() - started
    if sum(taken) != num_messages:
        raise RuntimeError(f"bare loop took {sum(taken)} of {num_messages}")
    return num_messages / elapsed_s


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv, runs=5, messages=(200_000, 50_000))
    compare_rates(f"overhead: N={args.messages}, {SENDERS} senders at zero latency", args.runs,
                  args.messages, Side("ours", "ours msg/s", _rate_ours),
                  Side("bare", f"bare queue.Queue(maxsize={QUEUE_SIZE}) msg/s", _rate_bare),
                  target=TARGET_RATIO, ratio_spec=".3f")
    return 0


if __name__ == "__main__":
    sys.exit(main())
