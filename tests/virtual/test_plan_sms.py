"""The planner with the SMS model (issue 14): segments under a rate limit in segments/s,
the sender presets, and plans that target delivery receipts."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sms_sim import SenderConfig, SimulationConfig
from sms_sim.cli.plan import main as plan_main
from sms_sim.config import (
    SENDER_TYPE_RATES_PER_S,
    ArrivalKind,
    Arrivals,
    Content,
    DeliveryGoal,
    DeliveryTarget,
    ReceiptModel,
    RetryPolicy,
    SenderType,
    ServiceDistribution,
)
from sms_sim.sim.plan import default_deliver, plan
from sms_sim.sim.plan_eval import Question
from sms_sim.sim.virtual.deliveries import deliverable_count, run_deliveries
from sms_sim.sim.virtual.run import simulate
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
    # Sends never fail here: retries cannot help, and the advice no longer offers them.
    assert result.reason.endswith("; ask for less with --deliver")


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


@pytest.mark.parametrize("arrivals", [
    Arrivals(), Arrivals(kind=ArrivalKind.POISSON, rate_per_s=40.0),
    Arrivals(kind=ArrivalKind.SCHEDULE, schedule=((0.0, 100), (1.0, 200)))])
def test_a_plans_deliveries_with_a_validity_are_what_simulate_sends(arrivals: Arrivals) -> None:
    """Constant send times and no failures make the planner's runs ``simulate``'s whoever
    draws the numbers: with a validity, a replication run to its end delivers exactly the
    messages ``simulate --virtual`` (same seed, same sender count) reports sent, and
    expires the ones it reports expired."""
    sender = SenderConfig(0.05, 0.0, 0.0, ServiceDistribution.CONSTANT)
    base = SimulationConfig(num_messages=300, senders=[sender], seed=4, arrivals=arrivals,
                            valid_for_s=1.5)
    question = Question.of(base, sender, DeliveryGoal(deadline_s=1e6))
    some_expire = False
    for senders in (1, 3, 7, 40):
        model = dataclasses.replace(question.model(senders, 0), horizon_s=math.inf)
        run = run_deliveries(model)
        report = simulate(dataclasses.replace(model.config, senders=[sender] * senders),
                          output=None, show_progress=False)
        assert (run.delivered_by_deadline, run.expired) == (report.sent, report.expired)
        assert report.sent + report.expired == 300
        some_expire = some_expire or report.expired > 0
    assert some_expire


def test_a_validity_only_removes_deliveries_and_the_draws_say_which_could_survive() -> None:
    """With retries and receipts, a validity delivers no more than without one at every
    count, and never more than ``deliverable_count`` (each message started as it becomes
    ready), which the run reports the same; the prefix and receipt bounds are not reported
    and the model is not claimed monotone."""
    sender = SenderConfig(0.05, 0.02, 0.2, rate_limit_per_s=5.0, throttle_rate=0.1,
                          retry_after_s=0.5)
    base = SimulationConfig(num_messages=400, senders=[sender], seed=9, content=Content(),
                            receipts=ReceiptModel(median_s=2.0, sigma=1.0),
                            retry=RetryPolicy(max_attempts=3, base_s=1.0), valid_for_s=3.0)
    goal = DeliveryGoal(deadline_s=1e6, deliver=0.5, replications=2,
                        target=DeliveryTarget.RECEIVED)
    question = Question.of(base, sender, goal)
    unlimited = Question.of(dataclasses.replace(base, valid_for_s=None), sender, goal)
    assert not question.monotone
    for senders in (1, 5, 50, 400):
        model = dataclasses.replace(question.model(senders, 0), ranks=(400,),
                                    horizon_s=math.inf)
        run = run_deliveries(model)
        without = run_deliveries(dataclasses.replace(
            unlimited.model(senders, 0), ranks=(400,), horizon_s=math.inf))
        assert run.delivered_by_deadline <= without.delivered_by_deadline
        assert run.deliverable is not None and without.deliverable is not None
        assert run.deliverable == deliverable_count(model) < without.deliverable
        assert run.delivered_by_deadline <= run.deliverable
        assert run.prefix_work_s is None and run.receipt_bound is None
    wide = dataclasses.replace(question.model(400, 0), ranks=(400,), horizon_s=math.inf)
    assert run_deliveries(wide).delivered_by_deadline == deliverable_count(wide)
    one_attempt = dataclasses.replace(base, retry=RetryPolicy(max_attempts=1))
    assert not Question.of(one_attempt, sender, goal).monotone
    assert Question.of(dataclasses.replace(one_attempt, valid_for_s=None), sender,
                       goal).monotone


def test_a_goal_a_validity_puts_out_of_reach_says_so() -> None:
    """Retries that come due after the validity expire at once: no count gets past what
    the first attempts deliver, and the reason names the validity."""
    sender = SenderConfig(0.01, 0.0, 0.3)
    base = SimulationConfig(num_messages=500, senders=[sender], seed=2,
                            retry=RetryPolicy(max_attempts=5, base_s=10.0), valid_for_s=5.0)
    result = plan(base, sender, DeliveryGoal(deadline_s=600.0, deliver=0.95, replications=3))
    assert result.min_senders is None
    assert result.reason is not None and "validity of 5 s" in result.reason, result.reason
    ok = plan(dataclasses.replace(base, valid_for_s=None), sender,
              DeliveryGoal(deadline_s=600.0, deliver=0.95, replications=3))
    assert ok.min_senders is not None


def test_plan_cli_answers_with_a_validity_and_refuses_a_bad_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--messages", "2000", "--mean", "0.08", "--deviation", "0.02",
            "--sender-type", "longcode", "--deadline", "600", "--deliver", "0.95",
            "--replications", "3", "--jobs", "1", "--quiet"]
    assert plan_main([*args, "--valid-for", "10m"], prog="sms_sim plan") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("min senders: "), out
    # 2 minutes: only what starts in them is sent, so more long codes are needed.
    assert plan_main([*args, "--valid-for", "2m"], prog="sms_sim plan") == 0
    shorter = capsys.readouterr().out.splitlines()[-1]
    assert int(shorter.split()[2]) > int(out[-1].split()[2]), (shorter, out[-1])
    with pytest.raises(SystemExit) as exit_info:
        plan_main([*args, "--valid-for", "soon"], prog="sms_sim plan")
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured.err
    assert "valid" in captured.err


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
    content of 1-3 segments, per-segment time, permanent and throttled failures, a validity
    or none, and a goal on receipts (fast ones, so the deadlines stay comparable) or on
    acceptance."""
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
                               receipts=receipts,
                               valid_for_s=draw(st.sampled_from([None, None, 0.3, 1.0, 5.0])))
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
