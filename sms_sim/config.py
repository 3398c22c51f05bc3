"""Validated configuration for a simulation: the senders and the run as a whole.

Validation lives here and only here, so the CLI, the library and (later) the virtual mode
reject the same values with the same one-line messages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from sms_sim.errors import ConfigError

__all__ = ["SenderConfig", "SimulationConfig", "DEFAULT_QUEUE_SIZE"]

DEFAULT_QUEUE_SIZE = 1024


def _check_finite(name: str, value: float, *, minimum: float = 0.0) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number (got {value!r})")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number (got {value!r})")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum:g} (got {value!r})")


@dataclass(frozen=True, slots=True)
class SenderConfig:
    """One sender's behaviour: send time uniform on [mean - deviation, mean + deviation]
    seconds, failing with probability ``failure_rate``.

    Positional order is (mean, deviation, failure_rate), as on the command line.
    """

    mean_s: float
    deviation_s: float
    failure_rate: float

    def __post_init__(self) -> None:
        _check_finite("mean", self.mean_s)
        _check_finite("deviation", self.deviation_s)
        _check_finite("failure_rate", self.failure_rate)
        if self.failure_rate > 1:
            raise ConfigError(f"failure_rate must be in [0, 1] (got {self.failure_rate!r})")
        if self.deviation_s > self.mean_s:
            raise ConfigError(
                f"deviation must be <= mean "
                f"(got deviation {self.deviation_s!r} > mean {self.mean_s!r})"
            )


def _default_senders() -> tuple[SenderConfig, ...]:
    return (SenderConfig(0.01, 0.001, 0.2),) * 4


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationConfig:
    """A whole run: how many messages, which senders, how often to report, which seed.

    ``seed=None`` draws a fresh seed; the report records the seed that was used so any run can
    be repeated. ``duration_s`` (optional) stops the run after that many seconds.
    ``queue_size`` bounds the producer's queue, which is what keeps memory flat in
    ``num_messages``.
    """

    num_messages: int = 1000
    senders: Sequence[SenderConfig] = field(default_factory=_default_senders)
    monitor_interval_s: float = 1.0
    seed: int | None = None
    duration_s: float | None = None
    queue_size: int = DEFAULT_QUEUE_SIZE

    def __post_init__(self) -> None:
        _check_int("num_messages", self.num_messages, minimum=0)
        object.__setattr__(self, "senders", tuple(self.senders))
        if len(self.senders) < 1:
            raise ConfigError(f"senders must be >= 1 (got {len(self.senders)})")
        for sender in self.senders:
            if not isinstance(sender, SenderConfig):
                raise ConfigError(f"senders must hold SenderConfig values (got {sender!r})")
        _check_finite("monitor_interval", self.monitor_interval_s)
        if self.monitor_interval_s <= 0:
            raise ConfigError(f"monitor_interval must be > 0 (got {self.monitor_interval_s!r})")
        if self.seed is not None:
            _check_int("seed", self.seed, minimum=None)
        if self.duration_s is not None:
            _check_finite("duration", self.duration_s)
        _check_int("queue_size", self.queue_size, minimum=1)


def _check_int(name: str, value: object, *, minimum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer (got {value!r})")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum} (got {value!r})")
