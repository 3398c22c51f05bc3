"""Config validation happens in one place and names the field and the value."""

from __future__ import annotations

import math

import pytest

from sms_sim import ConfigError, SenderConfig, SimulationConfig


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
