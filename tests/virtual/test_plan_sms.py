"""The planner with the SMS model (issue 14): segments under a rate limit in segments/s,
the sender presets, and plans that target delivery receipts."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from tests.properties.test_plan_minimum import brute_force, models

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


@pytest.mark.parametrize("retries", [1, 3])
def test_the_receipt_bound_never_exceeds_the_kth_received_time(retries: int) -> None:
    """The bound of ``receipt_bound`` from one run (at a large count, every message drawn)
    is at or below the k-th received time of runs at smaller counts, which it bounds; and
    with one attempt per message it is close (within the one in-flight send per sender it
    allows, plus the grid); retries add work it does not count, so it is looser then."""
    sender = SenderConfig(0.08, 0.02, 0.05, rate_limit_per_s=1.0, throttle_rate=0.02,
                          retry_after_s=2.0)
    base = SimulationConfig(num_messages=20_000, senders=[sender], seed=7,
                            content=Content(text=UCS2_200), receipts=ReceiptModel(),
                            retry=RetryPolicy(max_attempts=retries, base_s=1.0))
    goal = DeliveryGoal(deadline_s=1e6, deliver=0.8, replications=2,
                        target=DeliveryTarget.RECEIVED)
    question = Question.of(base, sender, goal)
    widest = run_deliveries(question.model(400, 0))
    bound = widest.receipt_bound
    assert bound is not None and bound.drawn == 20_000
    for senders in (50, 100, 200, 400):
        run = run_deliveries(question.model(senders, 0))
        actual = question.goal_time_s(run)
        lower = bound.kth_lower_s(question.k, senders)
        assert lower <= actual, (senders, lower, actual)
        if retries == 1:
            assert actual - lower <= bound.max_occupancy_s + 0.05 * actual, (senders, actual)


@st.composite
def sms_models(draw: st.DrawFn) -> tuple[SimulationConfig, SenderConfig, DeliveryGoal]:
    """The small random models of ``test_plan_minimum`` with the SMS model on: fixed
    content of 1-3 segments, per-segment time, permanent and throttled failures, and a goal
    on receipts (fast ones, so the deadlines stay comparable) or on acceptance."""
    base, sender, goal = draw(models())
    sender = dataclasses.replace(
        sender, per_segment_s=draw(st.sampled_from([0.0, 0.01, 0.1])),
        permanent_rate=draw(st.sampled_from([0.0, 0.0, 0.1])),
        throttle_rate=draw(st.sampled_from([0.0, 0.1])),
        retry_after_s=draw(st.sampled_from([0.0, 0.5])))
    text = draw(st.sampled_from(["a", "a" * 200, UCS2_200]))
    receipts = ReceiptModel(median_s=draw(st.sampled_from([0.05, 0.5])), sigma=1.0,
                            undelivered_rate=0.05, lost_rate=0.05)
    base = dataclasses.replace(base, senders=[sender], content=Content(text=text),
                               receipts=receipts)
    target = draw(st.sampled_from(list(DeliveryTarget)))
    goal = dataclasses.replace(goal, target=target,
                               deliver=min(goal.deliver, 0.8 if target is
                                           DeliveryTarget.RECEIVED else 1.0))
    return base, sender, goal


@given(model=sms_models())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_plan_with_the_sms_model_answers_what_a_scan_of_every_count_answers(
    model: tuple[SimulationConfig, SenderConfig, DeliveryGoal],
) -> None:
    """The planner's bounds (the receipt bound included) never rule out a count that
    meets: its answer is the brute force's on every small SMS model."""
    base, sender, goal = model
    result = plan(base, sender, goal)
    assert result.min_senders == brute_force(base, sender, goal), result
