"""Sender policy draws: latency range, and failure rate 0, 1 and p within binomial bounds."""

from __future__ import annotations

import math
import random

import pytest

from sms_sim import SenderConfig
from sms_sim.policy import draw_failure, draw_latency_s, sender_rng


def test_latency_stays_within_mean_plus_minus_deviation() -> None:
    sender = SenderConfig(0.01, 0.004, 0.0)
    rng = random.Random(1)
    draws = [draw_latency_s(rng, sender) for _ in range(10_000)]
    assert min(draws) >= 0.006
    assert max(draws) <= 0.014
    # Uniform on [a, b]: mean (a+b)/2, sd (b-a)/sqrt(12); the sample mean is within 5 standard
    # errors of 0.01 (a false alarm has probability ~6e-7).
    standard_error = 0.008 / math.sqrt(12) / math.sqrt(len(draws))
    assert abs(sum(draws) / len(draws) - 0.01) < 5 * standard_error


def test_zero_deviation_gives_the_mean_exactly() -> None:
    sender = SenderConfig(0.25, 0.0, 0.0)
    assert draw_latency_s(random.Random(3), sender) == 0.25


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_extreme_failure_rates_are_exact(rate: float) -> None:
    sender = SenderConfig(0.0, 0.0, rate)
    rng = random.Random(2)
    assert {draw_failure(rng, sender) for _ in range(10_000)} == {rate == 1.0}


def test_failure_count_is_within_binomial_bounds() -> None:
    """n=20000, p=0.2: mean 4000, sd sqrt(n p (1-p)) ~ 56.6; allow 4 sd (two-sided ~6e-5)."""
    n, p = 20_000, 0.2
    sender = SenderConfig(0.0, 0.0, p)
    rng = random.Random(4)
    failures = sum(draw_failure(rng, sender) for _ in range(n))
    assert abs(failures - n * p) < 4 * math.sqrt(n * p * (1 - p))


def test_sender_streams_are_reproducible_and_independent() -> None:
    assert sender_rng(7, 0).random() == sender_rng(7, 0).random()
    assert sender_rng(7, 0).random() != sender_rng(7, 1).random()
    assert sender_rng(7, 1).random() != sender_rng(8, 0).random()
