"""The virtual-time mode against queueing theory, with tolerances derived from the variance.

Every check uses a fixed seed, so it is deterministic; each tolerance is a multiple (4, a
two-sided false-alarm rate near 6e-5 under a normal approximation) of a standard deviation
derived below from the model's own variance, plus any deterministic end effect named in
the docstring. A wrong model (a missed failure, a double-counted send, a biased draw) moves
the estimate by many standard deviations.
"""

from __future__ import annotations

import math
from statistics import fmean, stdev

from sms_sim import SenderConfig, SimulationConfig
from sms_sim.config import ArrivalKind, Arrivals, Jitter, RetryPolicy, ServiceDistribution
from sms_sim.sim.theory import (
    attempts_variance,
    erlang_c,
    expected_attempts,
    mean_of_max_uniform_s,
    mmc_mean_wait_s,
)
from sms_sim.sim.virtual.run import simulate

Z = 4.0


def uniform_sd(deviation_s: float) -> float:
    return deviation_s / math.sqrt(3)


def test_burst_identical_senders_makespan_is_n_mean_over_s() -> None:
    """Total work W is a sum of N iid sends: sd(W) = sigma sqrt(N). A work-conserving pool
    finishes between W/S and W/S + one longest send, so |makespan - N m / S| <= Z sd(W)/S +
    (m + dev)."""
    n, s, mean, dev = 200_000, 8, 0.05, 0.02
    report = simulate(SimulationConfig(num_messages=n, senders=[SenderConfig(mean, dev, 0.0)] * s,
                                       seed=11), output=None)
    tolerance = Z * uniform_sd(dev) * math.sqrt(n) / s + mean + dev
    assert abs(report.elapsed_s - n * mean / s) <= tolerance
    assert report.sent == n and report.is_accounted


def test_burst_heterogeneous_makespan_and_failures() -> None:
    """Makespan ~ N / sum(1/m_i) (each sender completes at rate 1/m_i). By the renewal CLT
    sender i completes T/m_i +- sigma_i sqrt(T / m_i^3) sends by time T, so the time to reach
    N has sd sqrt(T sum sigma_i^2/m_i^3) / sum(1/m_i); the tail adds at most one send.
    Failures: each sender's count is binomial(served_i, p_i), so
    sd = sqrt(sum served_i p_i (1 - p_i))."""
    senders = [SenderConfig(0.02, 0.005, 0.01), SenderConfig(0.05, 0.01, 0.1),
               SenderConfig(0.08, 0.02, 0.3), SenderConfig(0.2, 0.1, 0.5)]
    n = 100_000
    report = simulate(SimulationConfig(num_messages=n, senders=senders, seed=12), output=None)
    rate = sum(1 / s.mean_s for s in senders)
    expected_s = n / rate
    sd_s = math.sqrt(expected_s * sum(uniform_sd(s.deviation_s) ** 2 / s.mean_s**3
                                      for s in senders)) / rate
    tail_s = max(s.mean_s + s.deviation_s for s in senders)
    assert abs(report.elapsed_s - expected_s) <= Z * sd_s + tail_s
    served = [r.sent + r.failed for r in report.senders]
    expected_failures = sum(k * s.failure_rate for k, s in zip(served, senders, strict=True))
    sd_failures = math.sqrt(sum(k * s.failure_rate * (1 - s.failure_rate)
                                for k, s in zip(served, senders, strict=True)))
    assert abs(report.failed - expected_failures) <= Z * sd_failures
    # Each sender's share of the work is proportional to its speed (within its own CLT sd).
    for k, s in zip(served, senders, strict=True):
        share_sd = math.sqrt(expected_s * uniform_sd(s.deviation_s) ** 2 / s.mean_s**3)
        assert abs(k - expected_s / s.mean_s) <= Z * share_sd + 1


def _mmc(servers: int, arrival_rate: float, service_mean_s: float, n: int, seed: int) -> tuple[
    float, float, float, float
]:
    config = SimulationConfig(
        num_messages=n,
        senders=[SenderConfig(service_mean_s, 0.0, 0.0, ServiceDistribution.EXPONENTIAL)]
        * servers,
        arrivals=Arrivals(kind=ArrivalKind.POISSON, rate_per_s=arrival_rate),
        seed=seed,
    )
    virtual = simulate(config, output=None).virtual
    assert virtual is not None
    return (virtual.waited_fraction, virtual.mean_wait_s, virtual.mean_in_system,
            virtual.arrival_rate_per_s * virtual.mean_time_in_system_s)


def test_mmc_waiting_probability_and_mean_wait_match_erlang_c() -> None:
    """M/M/5 at 70 % load. Waits within one run are correlated, so the variance comes from
    20 independent replications (seeds 100-119): the mean of their estimates must lie within
    Z standard errors (s / sqrt(20)) of Erlang C, nothing added. Each run starts empty, which
    biases waits down by about (relaxation time / run length); with 20,000 arrivals per run
    that is well under one standard error (measured: 0.2 SE for P(wait), 0.1 SE for the
    wait), so a model error as small as 4 SE fails the test."""
    c, mu, rho = 5, 10.0, 0.7
    lam = rho * c * mu
    runs = [_mmc(c, lam, 1 / mu, 20_000, seed) for seed in range(100, 120)]
    p_wait = [r[0] for r in runs]
    w_q = [r[1] for r in runs]
    expected_p = erlang_c(c, lam / mu)
    expected_w = mmc_mean_wait_s(lam, mu, c)
    se_p, se_w = stdev(p_wait) / math.sqrt(len(runs)), stdev(w_q) / math.sqrt(len(runs))
    assert abs(fmean(p_wait) - expected_p) <= Z * se_p
    assert abs(fmean(w_q) - expected_w) <= Z * se_w


def test_mm1_mean_wait_matches_theory() -> None:
    """M/M/1 at 50 %: P(wait) = rho and Wq = rho / (mu - lambda); same method as M/M/c
    (measured: 0.4 SE and 1.5 SE from theory)."""
    mu, lam = 20.0, 10.0
    runs = [_mmc(1, lam, 1 / mu, 20_000, seed) for seed in range(200, 215)]
    p_wait, w_q = [r[0] for r in runs], [r[1] for r in runs]
    se_p, se_w = stdev(p_wait) / math.sqrt(len(runs)), stdev(w_q) / math.sqrt(len(runs))
    assert abs(fmean(p_wait) - lam / mu) <= Z * se_p
    assert abs(fmean(w_q) - (lam / mu) / (mu - lam)) <= Z * se_w


def test_erlang_c_for_many_servers_is_finite_and_checked_by_simulation() -> None:
    """c = 40 at 95 % load: the recursion stays stable where a^c / c! would overflow floats
    for larger c, and the simulation agrees on P(wait) (10 replications, same method;
    measured 0.6 SE from theory)."""
    assert 0 < erlang_c(1000, 950.0) < 1
    c, mu = 40, 1.0
    lam = 0.9 * c * mu
    runs = [_mmc(c, lam, 1 / mu, 30_000, seed) for seed in range(300, 310)]
    p_wait = [r[0] for r in runs]
    expected = erlang_c(c, lam / mu)
    se = stdev(p_wait) / math.sqrt(len(runs))
    assert abs(fmean(p_wait) - expected) <= Z * se


def test_littles_law_holds_exactly_on_a_run_that_starts_and_ends_empty() -> None:
    """L (time integral of messages present / T) = lambda W, exactly: L is integrated from
    the event times, W from each message's own arrival and departure."""
    _, _, mean_in_system, lambda_w = _mmc(3, 25.0, 0.1, 5_000, seed=7)
    assert math.isclose(mean_in_system, lambda_w, rel_tol=1e-9)


def test_retries_attempts_and_dead_letters_match_the_geometric_model() -> None:
    """With failure rate p and at most k attempts, attempts per message A has mean
    (1 - p^k)/(1 - p) and the variance from theory.attempts_variance; the total over N
    messages has sd sqrt(N Var A). Dead letters are binomial(N, p^k)."""
    n, p, k = 50_000, 0.3, 3
    config = SimulationConfig(
        num_messages=n, senders=[SenderConfig(0.01, 0.005, p)] * 4, seed=21,
        retry=RetryPolicy(max_attempts=k, base_s=0.5, factor=2.0, cap_s=5.0, jitter=Jitter.FULL),
    )
    report = simulate(config, output=None)
    assert report.virtual is not None
    attempts = report.virtual.attempts
    assert abs(attempts - n * expected_attempts(p, k)) <= Z * math.sqrt(n * attempts_variance(p, k))
    q = p**k
    assert abs(report.dead_lettered - n * q) <= Z * math.sqrt(n * q * (1 - q))
    assert report.failed == 0 and report.is_accounted
    assert report.sent + report.dead_lettered == n


def test_rate_limited_sender_throughput_is_one_over_mean_cycle() -> None:
    """A sender limited to r sends/s has cycle max(X, 1/r); over N sends the makespan is a
    sum of N iid cycles with sd <= (b - a)/2 each, so tolerance Z sqrt(N) (b - a)/2."""
    n, low, high, rate = 20_000, 0.005, 0.015, 120.0
    sender = SenderConfig(0.01, 0.005, 0.0, rate_limit_per_s=rate)
    report = simulate(SimulationConfig(num_messages=n, senders=[sender], seed=31), output=None)
    cycle = mean_of_max_uniform_s(low, high, 1 / rate)
    assert abs(report.elapsed_s - n * cycle) <= Z * math.sqrt(n) * (high - low) / 2 + high
    assert cycle > 0.01  # the limit binds: without it the makespan would be n * 0.01


def test_lognormal_service_has_the_requested_mean() -> None:
    """Mean of the lognormal draws: sd of the sample mean is s / sqrt(N)."""
    n, mean, sd = 50_000, 0.08, 0.12
    sender = SenderConfig(mean, sd, 0.0, ServiceDistribution.LOGNORMAL)
    report = simulate(SimulationConfig(num_messages=n, senders=[sender], seed=41), output=None)
    assert abs(report.avg_send_s - mean) <= Z * sd / math.sqrt(n)
