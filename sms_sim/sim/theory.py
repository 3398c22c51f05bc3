"""Closed-form queueing results the simulator is validated against, and the small amount of
statistics needed to report a mean with its confidence interval.

Pure functions of numbers; no simulation code imports this except ``plan`` (to size sweeps
and intervals), so the tests compare the simulator with an independent source.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist, fmean, stdev

__all__ = [
    "erlang_b",
    "erlang_c",
    "mmc_mean_wait_s",
    "expected_attempts",
    "attempts_variance",
    "mean_of_max_uniform_s",
    "student_t_quantile",
    "mean_confidence_interval",
    "upper_prediction_bound",
]


def erlang_b(servers: int, offered_load: float) -> float:
    """Blocking probability B(c, a) by the recursion B(k) = a B(k-1) / (k + a B(k-1)).

    The recursion never forms a^c or c!, so it is stable for thousands of servers.
    """
    if servers < 0 or offered_load < 0:
        raise ValueError(f"need servers >= 0 and load >= 0 (got {servers!r}, {offered_load!r})")
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = offered_load * blocking / (k + offered_load * blocking)
    return blocking


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability an arrival waits in M/M/c with offered load a = lambda / mu < c."""
    if not 0 <= offered_load < servers:
        raise ValueError(f"need 0 <= load < servers (got load {offered_load!r}, c={servers})")
    blocking = erlang_b(servers, offered_load)
    return servers * blocking / (servers - offered_load * (1 - blocking))


def mmc_mean_wait_s(arrival_rate: float, service_rate: float, servers: int) -> float:
    """Mean time in queue (before service) in M/M/c: C(c, a) / (c mu - lambda)."""
    load = arrival_rate / service_rate
    return erlang_c(servers, load) / (servers * service_rate - arrival_rate)


def expected_attempts(failure_rate: float, max_attempts: int) -> float:
    """E[attempts per message] with at most k attempts: (1 - p^k) / (1 - p), k when p = 1."""
    if failure_rate == 1:
        return float(max_attempts)
    return (1 - failure_rate**max_attempts) / (1 - failure_rate)


def attempts_variance(failure_rate: float, max_attempts: int) -> float:
    """Var[attempts per message]: E[A^2] = sum over j <= k of (2j - 1) P(A >= j)."""
    p = failure_rate
    second = sum((2 * j - 1) * p ** (j - 1) for j in range(1, max_attempts + 1))
    return second - expected_attempts(p, max_attempts) ** 2


def mean_of_max_uniform_s(low: float, high: float, floor_s: float) -> float:
    """E[max(X, floor)] for X uniform on [low, high]: a rate-limited sender's mean cycle."""
    if high == low or floor_s <= low:
        return max((low + high) / 2, floor_s)
    if floor_s >= high:
        return floor_s
    width = high - low
    return (floor_s * (floor_s - low) + (high**2 - floor_s**2) / 2) / width


def student_t_quantile(probability: float, df: int) -> float:
    """Quantile of Student's t with ``df`` degrees of freedom.

    Exact for df 1 and 2; otherwise the Cornish-Fisher expansion in 1/df (Abramowitz and
    Stegun 26.7.5), within 1e-3 of tables for df >= 3 at the usual 0.9-0.995 levels.
    """
    if not 0 < probability < 1 or df < 1:
        raise ValueError(f"need 0 < probability < 1 and df >= 1 (got {probability!r}, {df!r})")
    if df == 1:
        return math.tan(math.pi * (probability - 0.5))
    if df == 2:
        return (2 * probability - 1) / math.sqrt(2 * probability * (1 - probability))
    z = NormalDist().inv_cdf(probability)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def mean_confidence_interval(
    values: Sequence[float], level: float = 0.95
) -> tuple[float, float]:
    """(mean, half-width) of the two-sided ``level`` t interval; half-width 0 for one value."""
    mean = fmean(values)
    if len(values) < 2:
        return mean, 0.0
    t = student_t_quantile((1 + level) / 2, len(values) - 1)
    return mean, t * stdev(values) / math.sqrt(len(values))


def upper_prediction_bound(values: Sequence[float], level: float = 0.95) -> float:
    """One-sided upper ``level`` prediction bound for one more observation (normal model):
    mean + t * s * sqrt(1 + 1/n). A run lands below it with probability ``level``."""
    mean = fmean(values)
    if len(values) < 2:
        return mean
    t = student_t_quantile(level, len(values) - 1)
    return mean + t * stdev(values) * math.sqrt(1 + 1 / len(values))
