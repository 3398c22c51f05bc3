"""Message generation rate: ``generate_messages`` against per-message ``random.choices``.

What is measured: messages per second of ``sum(1 for _ in generate_messages(N, seed))`` with
N = 300,000 (50,000 with ``--quick``). In the same run, a baseline is timed the same way. Per
message it draws 10 digits with ``rng.choices('0123456789', k=10)`` and formats them as
xxx-xxx-xxxx, draws a length with ``rng.randint(1, 100)`` and a text of that many printable
ASCII characters (codes 32-126) with ``rng.choices``, then builds the message with
``trusted_message``, the constructor the generator itself uses, so both sides pay the same
construction cost and the ratio measures the drawing alone. Runs alternate which side goes
first.

Why: the producer thread generates every message, so generation must stay well ahead of the
senders. The generator draws random bytes in blocks and maps them with ``bytes.translate``
for that reason, and this checks that the speed-up is real.

Target: ours / baseline >= 3.

Command (from the repo root): python3 bench/generation.py [--runs 5] [--quick]
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import Side, compare_rates, parse_args  # noqa: E402

import sms_sim  # noqa: E402
from sms_sim.model import trusted_message  # noqa: E402

SEED = 1
TARGET_RATIO = 3.0
_DIGITS = "0123456789"
_PRINTABLE = "".join(chr(code) for code in range(32, 127))


def _rate_ours(num_messages: int) -> float:
    started = time.perf_counter()
    count = sum(1 for _ in sms_sim.generate_messages(num_messages, SEED))
    elapsed_s = time.perf_counter() - started
    if count != num_messages:
        raise RuntimeError(f"ours generated {count} of {num_messages}")
    return num_messages / elapsed_s


def _rate_baseline(num_messages: int) -> float:
    rng = random.Random(SEED)
    choices, randint, join = rng.choices, rng.randint, "".join
    started = time.perf_counter()
    count = 0
    for message_id in range(num_messages):
        d = join(choices(_DIGITS, k=10))
        text = join(choices(_PRINTABLE, k=randint(1, 100)))
        trusted_message(message_id, f"{d[:3]}-{d[3:6]}-{d[6:]}", text)
        count += 1
    elapsed_s = time.perf_counter() - started
    if count != num_messages:
        raise RuntimeError(f"baseline generated {count} of {num_messages}")
    return num_messages / elapsed_s


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv, runs=5, messages=(300_000, 50_000))
    compare_rates(f"generation: N={args.messages}, seed {SEED}", args.runs, args.messages,
                  Side("ours", "ours generate_messages msg/s", _rate_ours),
                  Side("baseline", "baseline random.choices msg/s", _rate_baseline),
                  target=TARGET_RATIO, ratio_spec=".2f", unit="x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
