"""The validators every configuration value goes through, so that each bad value is refused
with the same one-line message naming the field and the value, wherever it is built.

Split from ``config`` so that the SMS model's values (``sms_config``) validate alike
without a cycle; ``config`` re-exports ``TIME_MAX_S``.
"""

from __future__ import annotations

import math

from sms_sim.errors import ConfigError

__all__ = ["TIME_MAX_S", "RATE_MIN_PER_S", "check_finite", "check_time", "check_int"]

# Upper bounds that keep every sum and product of the model finite and every run startable:
# a time of 1e308 s is finite but two of them add up to infinity. 1e9 s is about 32 years.
TIME_MAX_S = 1e9
RATE_MIN_PER_S = 1 / TIME_MAX_S  # a rate's period is a time, so it has the same bound


def check_finite(
    name: str, value: float, *, minimum: float = 0.0, maximum: float | None = None
) -> None:
    """A real number in [minimum, maximum]: not a bool, not NaN or infinite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number (got {value!r})")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number (got {value!r})")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum:g} (got {value!r})")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum:g} (got {value!r})")


def check_time(name: str, value: float) -> None:
    """A duration in seconds: finite, >= 0 and at most ``TIME_MAX_S``."""
    check_finite(name, value, maximum=TIME_MAX_S)


def check_int(
    name: str, value: object, *, minimum: int | None, maximum: int | None = None
) -> None:
    """An integer (not a bool) in [minimum, maximum], either end open when None."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer (got {value!r})")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum} (got {value!r})")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum} (got {value!r})")
