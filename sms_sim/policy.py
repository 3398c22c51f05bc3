"""Pure sender policy: how long a send takes and whether it fails.

Both draws take the sender's own ``random.Random`` and are always made in the same order
(latency, then failure), so a given sender stream yields the same outcomes whichever mode
consumes it.
"""

from __future__ import annotations

import random

from sms_sim.config import SenderConfig

__all__ = ["draw_latency_s", "draw_failure", "sender_rng"]


def draw_latency_s(rng: random.Random, sender: SenderConfig) -> float:
    """A send time uniform on [mean - deviation, mean + deviation] seconds (never negative)."""
    return rng.uniform(sender.mean_s - sender.deviation_s, sender.mean_s + sender.deviation_s)


def draw_failure(rng: random.Random, sender: SenderConfig) -> bool:
    """True with probability ``failure_rate``: exactly never at 0 and always at 1."""
    return rng.random() < sender.failure_rate


def sender_rng(seed: int, index: int) -> random.Random:
    """The independent, reproducible random stream of sender ``index`` under ``seed``.

    Seeding from a string hashes it with SHA-512, so neighbouring indices give unrelated
    streams (seeding with ``seed + index`` would make runs with adjacent seeds share streams).
    """
    return random.Random(f"sms_sim:{seed}:sender:{index}")
