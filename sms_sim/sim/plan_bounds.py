"""The planner's statistics: the prediction bound a count must meet, and the least value
that bound can take when some replications are only known to lie above a lower bound.

A count's criterion is the one-sided ``level`` upper prediction bound of its R
replications' times, ``mean + c * s`` with ``c = t(level, R - 1) * sqrt(1 + 1/R)`` (normal
model: one more run lands below it with probability ``level``). That bound is not monotone
in the values (lowering one value can widen ``s``), so "every replication is at least
``x_r``" does not give ``bound >= bound(x)``; what it gives is ``bound >= least_bound(x)``,
the minimum of the bound over all vectors at or above ``x``. That minimum is exact here:
the bound is convex, so by its optimality conditions the minimiser raises every free value
below a common level to that level, ``max(x_r, theta)``, and for each set of raised values
the best ``theta`` solves a quadratic. The planner uses it twice: to stop replicating a
count whose remaining replications can no longer bring it under the deadline (exactly the
verdict all R would give), and to rule out every count below one whose per-replication lower
bounds already put it over the deadline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import fmean

from sms_sim.sim.theory import student_t_quantile

__all__ = ["prediction_factor", "prediction_bound", "least_bound", "surely_above",
           "rounded_deadline"]

# Rounding slack of ``least_bound``: its quadratic can put a bound that equals the deadline a
# few ulps above it (0.1 + 2e-17 for four runs of exactly 0.1 s), which would rule out a count
# that meets the deadline exactly. Relative and absolute, like the planner's horizon.
_ROUNDING = 1e-10  # a tenth of the horizon's slack, so a censored run still proves a miss


def prediction_factor(level: float, replications: int) -> float:
    """``c`` in ``mean + c * s``: t(level, R - 1) * sqrt(1 + 1/R), for R >= 2."""
    return student_t_quantile(level, replications - 1) * math.sqrt(1 + 1 / replications)


def prediction_bound(values: Sequence[float], factor: float) -> float:
    """``mean + factor * s`` (sample standard deviation); ``inf`` if any value is."""
    if any(math.isinf(v) for v in values):
        return math.inf
    mean = fmean(values)
    spread = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean + factor * math.sqrt(spread)


def rounded_deadline(deadline_s: float) -> float:
    """The latest time that meets ``deadline_s``, float rounding allowed for: 100 sends of
    0.01 s end at 1.0000000000000007 s, and a 1 s deadline is met (it was a miss, and the
    answer one sender more than the table showed meeting). Every "by the deadline" test of
    the planner uses it."""
    return deadline_s * (1 + _ROUNDING)


def surely_above(bound: float, deadline_s: float) -> bool:
    """True when a ``least_bound`` proves a miss: above the deadline by more than rounding.
    A count within the slack is not ruled out; it is evaluated in full instead, where
    ``prediction_bound`` of the actual times decides."""
    return bound > deadline_s * (1 + _ROUNDING) + _ROUNDING


def least_bound(fixed: Sequence[float], lower: Sequence[float], factor: float) -> float:
    """The least ``prediction_bound`` over all completions of ``fixed`` (known values) by
    one value at or above each of ``lower``; ``inf`` if a fixed or lower value is infinite.
    Needs ``len(fixed) + len(lower) >= 2`` and ``factor >= 0``."""
    if any(math.isinf(v) for v in (*fixed, *lower)):
        return math.inf
    if not lower:
        return prediction_bound(fixed, factor)
    bounds = sorted(lower)
    candidates = [bounds[0], *bounds]  # theta at each breakpoint ...
    total = len(fixed) + len(bounds)
    # ... and the best theta while the m lowest bounds are raised to it: theta in
    # [bounds[m-1], bounds[m]] (the last interval unbounded above).
    for raised in range(1, len(bounds) + 1):
        stationary = _stationary_theta([*fixed, *bounds[raised:]], raised, total, factor)
        if stationary is None:
            continue
        low = bounds[raised - 1]
        high = bounds[raised] if raised < len(bounds) else math.inf
        candidates.append(min(max(stationary, low), high))
    return min(prediction_bound([*fixed, *(max(b, theta) for b in bounds)], factor)
               for theta in candidates)


def _stationary_theta(
    held: Sequence[float], raised: int, total: int, factor: float
) -> float | None:
    """Where the bound stops falling as ``raised`` values move together to theta while the
    ``held`` values stay put; None if it never does (then an endpoint is the minimum).

    With q = len(held), u = q * theta - sum(held) and V the held values' sum of squared
    deviations, SS = V + raised * u^2 / (total * q); the derivative vanishes where
    u^2 (c^2 - (total - 1) raised / (total q)) = (total - 1) V with u <= 0.
    """
    held_count = len(held)
    if held_count == 0:
        return None  # all raised together: the bound is theta itself, least at the bottom
    held_mean = fmean(held)
    variation = sum((v - held_mean) ** 2 for v in held)
    slope = factor**2 - (total - 1) * raised / (total * held_count)
    if slope <= 0:
        return None
    u = -math.sqrt((total - 1) * variation / slope)
    return (u + held_count * held_mean) / held_count
