"""Config validation happens in one place and names the field and the value."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from sms_sim import ConfigError, SenderConfig, SimulationConfig
from sms_sim.config import (
    SENDERS_MAX,
    ArrivalKind,
    Arrivals,
    RetryPolicy,
    ServiceDistribution,
    check_sender_total,
)


def test_sender_config_positional_order_is_mean_deviation_rate() -> None:
    sender = SenderConfig(0.01, 0.001, 0.2)
    assert (sender.mean_s, sender.deviation_s, sender.failure_rate) == (0.01, 0.001, 0.2)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((-0.1, 0.0, 0.0), "mean must be >= 0 (got -0.1)"),
        ((0.1, -0.01, 0.0), "deviation must be >= 0 (got -0.01)"),
        ((0.1, 0.2, 0.0), "deviation must be <= mean"),
        ((0.1, 0.0, 1.5), "failure_rate must be in [0, 1] (got 1.5)"),
        ((0.1, 0.0, -0.5), "failure_rate must be >= 0"),
        ((math.nan, 0.0, 0.0), "mean must be a finite number (got nan)"),
        ((math.inf, 0.0, 0.0), "mean must be a finite number (got inf)"),
        ((0.1, 0.0, "0.5"), "failure_rate must be a number (got '0.5')"),
        ((True, 0.0, 0.0), "mean must be a number (got True)"),
    ],
)
def test_bad_sender_values_are_rejected(args: tuple[object, object, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SenderConfig(*args)  # type: ignore[arg-type]
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


def test_simulation_defaults_match_the_documented_ones() -> None:
    config = SimulationConfig()
    assert config.num_messages == 1000
    assert config.monitor_interval_s == 1.0
    assert config.seed is None
    assert len(config.senders) == 4


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"num_messages": -1}, "num_messages must be >= 0 (got -1)"),
        ({"num_messages": 1.5}, "num_messages must be an integer"),
        ({"senders": []}, "senders must be >= 1 (got 0)"),
        ({"senders": [(0.1, 0, 0)]}, "senders must hold SenderConfig values"),
        ({"monitor_interval_s": 0}, "monitor_interval must be > 0 (got 0)"),
        ({"monitor_interval_s": math.inf}, "monitor_interval must be a finite number"),
        ({"seed": "x"}, "seed must be an integer"),
        ({"duration_s": -1.0}, "duration must be >= 0"),
        ({"queue_size": 0}, "queue_size must be >= 1 (got 0)"),
    ],
)
def test_bad_simulation_values_are_rejected(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SimulationConfig(**kwargs)  # type: ignore[arg-type]
    assert fragment in str(caught.value)


def test_senders_are_frozen_into_a_tuple() -> None:
    senders = [SenderConfig(0.0, 0.0, 0.0)]
    config = SimulationConfig(senders=senders)
    senders.append(SenderConfig(1.0, 0.0, 0.0))
    assert len(config.senders) == 1


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: SenderConfig(1e308, 0.0, 0.0), "mean must be <= 1e+09 (got 1e+308)"),
        (lambda: SenderConfig(1.0, 1e308, 0.0, ServiceDistribution.LOGNORMAL),
         "deviation must be <= 1e+09"),
        (lambda: SenderConfig(1.0, 0.0, 0.0, rate_limit_per_s=1e-300),
         "rate_limit must be >= 1e-09 per second"),
        (lambda: RetryPolicy(base_s=1e308, cap_s=1e308), "base must be <= 1e+09"),
        (lambda: Arrivals(kind=ArrivalKind.POISSON, rate_per_s=1e308),
         "arrival rate must be <= 1e+09"),
        (lambda: Arrivals(kind=ArrivalKind.SCHEDULE, schedule=((1e308, 1),)),
         "schedule row 1 time must be <= 1e+09"),
        (lambda: SimulationConfig(duration_s=1e308), "duration must be <= 1e+09"),
        (lambda: SimulationConfig(num_messages=10**13), "num_messages must be <= 1000000000000"),
        (lambda: SimulationConfig(senders=[SenderConfig(0.0, 0.0, 0.0)] * (SENDERS_MAX + 1)),
         f"senders must be <= {SENDERS_MAX} in all (got {SENDERS_MAX + 1})"),
    ],
)
def test_values_too_large_to_run_are_refused(build: Callable[[], object], fragment: str) -> None:
    """Issue 11 item 19: 1e308 is finite but two of them overflow, and 1e11 senders do not fit
    in memory; both are refused where every mode validates, naming the field and value."""
    with pytest.raises(ConfigError) as caught:
        build()
    assert fragment in str(caught.value)


def test_the_sender_cap_is_checked_on_a_count_before_a_list_is_built() -> None:
    check_sender_total(SENDERS_MAX)
    with pytest.raises(ConfigError, match="senders must be <= 100000 in all"):
        check_sender_total(10**11)
