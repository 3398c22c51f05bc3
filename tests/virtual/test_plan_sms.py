"""The planner with the SMS model (issue 14): segments under a rate limit in segments/s,
the sender presets, and plans that target delivery receipts."""

from __future__ import annotations

import dataclasses
import math

import pytest

from sms_sim import SenderConfig, SimulationConfig
from sms_sim.config import (
    SENDER_TYPE_RATES_PER_S,
    Content,
    DeliveryGoal,
    DeliveryTarget,
    ReceiptModel,
    RetryPolicy,
    SenderType,
    ServiceDistribution,
)
from sms_sim.errors import ConfigError
from sms_sim.sim.plan import default_deliver, plan
from sms_sim.sim.plan_eval import Question
from sms_sim.sim.virtual.deliveries import deliverable_count, run_deliveries

UCS2_200 = "ж" * 200  # three segments


def _exact_senders(n: int, deliver: float, deadline_s: float, latency_s: float, rate: float,
                   k: int) -> int:
    """Constant sends shorter than their k / rate slot: a sender starts a message every
    k / rate s from 0 and completes it latency later, so by the deadline it has completed
    floor((deadline - latency) rate / k) + 1; the fewest senders doing ceil(deliver n)."""
    per_sender = math.floor((deadline_s - latency_s) * rate / k) + 1
    return math.ceil(math.ceil(deliver * n - 1e-9) / per_sender)


@pytest.mark.parametrize("k_text", [("a", 1), (UCS2_200, 3)])
def test_a_long_code_plan_needs_k_times_the_senders_for_k_segments(
    k_text: tuple[str, int]
) -> None:
    """No randomness (constant sends, no failures): every replication is the same, the
    bound is the value itself, and the answer is exact."""
    text, k = k_text
    rate = SENDER_TYPE_RATES_PER_S[SenderType.LONGCODE]
    sender = SenderConfig(0.08, 0.0, 0.0, ServiceDistribution.CONSTANT, rate_limit_per_s=rate)
    base = SimulationConfig(num_messages=3_000, senders=[sender], seed=1,
                            content=Content(text=text))
    goal = DeliveryGoal(deadline_s=300.0, deliver=1.0, replications=2)
    result = plan(base, sender, goal)
    assert result.min_senders == _exact_senders(3_000, 1.0, 300.0, 0.08, rate, k)


def test_received_plans_time_receipts_and_need_at_least_the_accepted_count() -> None:
    sender = SenderConfig(0.05, 0.01, 0.02)
    receipts = ReceiptModel(median_s=5.0, sigma=1.0)
    base = SimulationConfig(num_messages=2_000, senders=[sender], seed=3, receipts=receipts)
    accepted = plan(base, sender, DeliveryGoal(deadline_s=60.0, deliver=0.9, replications=3))
    received = plan(base, sender, DeliveryGoal(deadline_s=60.0, deliver=0.9, replications=3,
                                               target=DeliveryTarget.RECEIVED))
    assert accepted.min_senders is not None and received.min_senders is not None
    assert received.min_senders >= accepted.min_senders
    assert received.to_dict()["target"] == "received" and "target" not in accepted.to_dict()
    # Receipts never reach every recipient: "deliver everything" is no default then.
    assert default_deliver(base, sender, DeliveryTarget.RECEIVED) is None


def test_a_received_goal_beyond_what_receipts_deliver_is_explained() -> None:
    sender = SenderConfig(0.01, 0.0, 0.0)
    base = SimulationConfig(num_messages=5_000, senders=[sender], seed=2,
                            receipts=ReceiptModel(lost_rate=0.1, undelivered_rate=0.1))
    result = plan(base, sender, DeliveryGoal(deadline_s=600.0, deliver=0.95,
                                             replications=3, target=DeliveryTarget.RECEIVED))
    assert result.min_senders is None
    assert result.reason is not None and "and receipts" in result.reason


def test_the_runs_deliver_what_the_draws_alone_say_they_will() -> None:
    """With a horizon past every receipt, a replication delivers exactly the messages its
    draws make deliverable (an accepted send whose receipt says delivered): the run and
    ``deliverable_count`` make the same draws in the same order."""
    sender = SenderConfig(0.01, 0.005, 0.1, rate_limit_per_s=50.0, permanent_rate=0.05,
                          throttle_rate=0.05, retry_after_s=0.5)
    base = SimulationConfig(num_messages=1_000, senders=[sender], seed=5, content=Content(),
                            receipts=ReceiptModel(), retry=RetryPolicy(max_attempts=3))
    goal = DeliveryGoal(deadline_s=1e6, deliver=0.5, replications=2,
                        target=DeliveryTarget.RECEIVED)
    model = dataclasses.replace(Question.of(base, sender, goal).model(4, 0), ranks=(500,))
    run = run_deliveries(model)
    assert run.deliverable == deliverable_count(model) == run.delivered_by_deadline


def test_plan_refuses_a_validity() -> None:
    sender = SenderConfig(0.01, 0.0, 0.0)
    base = SimulationConfig(num_messages=10, senders=[sender], seed=1, valid_for_s=60.0)
    with pytest.raises(ConfigError, match="validity"):
        plan(base, sender, DeliveryGoal(deadline_s=60.0))
