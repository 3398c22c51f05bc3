"""Policy draws: latency range, failure rate 0, 1 and p within binomial bounds, and the
arrival process both modes share."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from sms_sim import SenderConfig, SimulationConfig, simulate
from sms_sim.config import ArrivalKind, Arrivals, Jitter, ReceiptModel, RetryPolicy
from sms_sim.model import ErrorClass, ReceiptStatus
from sms_sim.policy import (
    receipt_at,
    receipt_sampler,
    retry_delay_after,
    arrival_times,
    arrivals_rng,
    latency_sampler,
    retry_rng,
    sender_rng,
)


def test_latency_stays_within_mean_plus_minus_deviation() -> None:
    sender = SenderConfig(0.01, 0.004, 0.0)
    rng = random.Random(1)
    draws = [latency_sampler(rng, sender)() for _ in range(10_000)]
    assert min(draws) >= 0.006
    assert max(draws) <= 0.014
    # Uniform on [a, b]: mean (a+b)/2, sd (b-a)/sqrt(12); the sample mean is within 5 standard
    # errors of 0.01 (a false alarm has probability ~6e-7).
    standard_error = 0.008 / math.sqrt(12) / math.sqrt(len(draws))
    assert abs(sum(draws) / len(draws) - 0.01) < 5 * standard_error


def test_zero_deviation_gives_the_mean_exactly() -> None:
    sender = SenderConfig(0.25, 0.0, 0.0)
    assert latency_sampler(random.Random(3), sender)() == 0.25


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_extreme_failure_rates_are_exact(rate: float) -> None:
    """The failure draw the event loops and the threaded sender make (uniform >= rate)."""
    config = SimulationConfig(num_messages=10_000, senders=[SenderConfig(0.0, 0.0, rate)],
                              seed=2)
    report = simulate(config, output=None)
    assert report.failed == (10_000 if rate == 1.0 else 0)


def test_failure_count_is_within_binomial_bounds() -> None:
    """n=20000, p=0.2: mean 4000, sd sqrt(n p (1-p)) ~ 56.6; allow 4 sd (two-sided ~6e-5)."""
    n, p = 20_000, 0.2
    config = SimulationConfig(num_messages=n, senders=[SenderConfig(0.0, 0.0, p)] * 2, seed=4)
    failures = simulate(config, output=None).failed
    assert abs(failures - n * p) < 4 * math.sqrt(n * p * (1 - p))


def test_sender_streams_are_reproducible_and_independent() -> None:
    assert sender_rng(7, 0).random() == sender_rng(7, 0).random()
    assert sender_rng(7, 0).random() != sender_rng(7, 1).random()
    assert sender_rng(7, 1).random() != sender_rng(8, 0).random()


def test_a_burst_is_one_batch_at_zero_and_an_empty_run_has_none() -> None:
    assert list(arrival_times(Arrivals(), 500, arrivals_rng(1))) == [(0.0, 500)]
    assert list(arrival_times(Arrivals(), 0, arrivals_rng(1))) == []


def test_a_schedule_yields_its_non_empty_rows_without_drawing() -> None:
    arrivals = Arrivals(kind=ArrivalKind.SCHEDULE, schedule=((0.0, 2), (1.5, 0), (3.0, 5)))
    rng = arrivals_rng(1)
    state = rng.getstate()
    assert list(arrival_times(arrivals, 7, rng)) == [(0.0, 2), (3.0, 5)]
    assert rng.getstate() == state


def test_poisson_arrivals_are_one_seeded_sequence_with_the_right_mean_gap() -> None:
    """One seed, one sequence (both modes call this with ``arrivals_rng(seed)``): single
    arrivals at increasing times. The mean of n = 20000 exponential gaps with rate 50 is
    1/50 with standard error (1/50)/sqrt(n) ~ 1.4e-4; allow 4 of them."""
    arrivals = Arrivals(kind=ArrivalKind.POISSON, rate_per_s=50.0)
    n = 20_000
    times = list(arrival_times(arrivals, n, arrivals_rng(7)))
    assert times == list(arrival_times(arrivals, n, arrivals_rng(7)))
    assert times != list(arrival_times(arrivals, n, arrivals_rng(8)))
    assert len(times) == n and all(count == 1 for _, count in times)
    assert all(a < b for (a, _), (b, _) in itertools.pairwise(times))
    assert abs(times[-1][0] / n - 1 / 50) < 4 * (1 / 50) / math.sqrt(n)


def test_arrival_and_retry_streams_are_reproducible_and_apart_from_the_senders() -> None:
    assert arrivals_rng(3).random() == arrivals_rng(3).random()
    assert retry_rng(3).random() == retry_rng(3).random()
    draws = {arrivals_rng(3).random(), retry_rng(3).random(), sender_rng(3, 0).random(),
             arrivals_rng(4).random()}
    assert len(draws) == 4


def test_retry_after_a_permanent_error_never_comes() -> None:
    policy = RetryPolicy(max_attempts=5, base_s=1.0, jitter=Jitter.NONE)
    rng = random.Random(1)
    assert retry_delay_after(policy, 1, ErrorClass.PERMANENT, rng) is None
    assert retry_delay_after(policy, 5, ErrorClass.TRANSIENT, rng) is None
    assert retry_delay_after(policy, 2, ErrorClass.TRANSIENT, rng) == 2.0
    # Throttled waits at least the provider's retry-after, and the backoff when it is longer.
    assert retry_delay_after(policy, 1, ErrorClass.THROTTLED, rng, retry_after_s=30.0) == 30.0
    assert retry_delay_after(policy, 3, ErrorClass.THROTTLED, rng, retry_after_s=0.5) == 4.0
    assert retry_delay_after(policy, 3, ErrorClass.THROTTLED, rng) == 4.0


def test_receipts_follow_their_model_and_expire_at_the_validity_end() -> None:
    model = ReceiptModel(median_s=5.0, sigma=1.0, undelivered_rate=0.1, lost_rate=0.05)
    draw = receipt_sampler(random.Random(7), model)
    n = 40_000
    draws = [draw() for _ in range(n)]
    counts = {status: sum(1 for s, _ in draws if s is status) for status in ReceiptStatus}
    # Binomial counts: within 5 standard deviations of n * p (false alarm ~6e-7 each).
    for status, p in ((ReceiptStatus.UNKNOWN, 0.05), (ReceiptStatus.UNDELIVERED, 0.1)):
        assert abs(counts[status] - n * p) < 5 * math.sqrt(n * p * (1 - p))
    delays = sorted(d for s, d in draws if s is not ReceiptStatus.UNKNOWN)
    # The sample median of a lognormal is near exp(mu) = 5: the median's standard error is
    # 1 / (2 f(m) sqrt(n)) with f(m) = 1 / (m sigma sqrt(2 pi)) the density at the median.
    se = 5.0 * math.sqrt(2 * math.pi) / (2 * math.sqrt(len(delays)))
    assert abs(delays[len(delays) // 2] - 5.0) < 5 * se
    delivered = (ReceiptStatus.DELIVERED, 3.0)
    assert receipt_at(100.0, delivered, None) == (ReceiptStatus.DELIVERED, 103.0)
    late = (ReceiptStatus.DELIVERED, 30.0)
    assert receipt_at(100.0, late, 110.0) == (ReceiptStatus.EXPIRED, 110.0)
    assert receipt_at(100.0, (ReceiptStatus.UNKNOWN, math.inf), 110.0)[0] is ReceiptStatus.UNKNOWN
