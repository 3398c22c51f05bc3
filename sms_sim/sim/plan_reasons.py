"""Why no sender count can meet a plan's goal, in one line each: found before any run
(messages never delivered, a deadline before the shortest send or the k-th arrival) or
after a search that found none.

The checks before the runs are cheap and exact: a burst's and a schedule's arrivals are
known, a Poisson process's are drawn per replication (its arrivals stream alone), and when
the binomial odds say a replication could deliver fewer than k messages, its draws are made
(no time simulated) and counted. What they learn goes into each replication's
``Knowledge``, where the search's lower bounds use it too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import fmean

from sms_sim.config import SENDERS_MAX, ArrivalKind, DeliveryTarget
from sms_sim.policy import never_delivered_probability
from sms_sim.sim.plan_bounds import least_bound, rounded_deadline
from sms_sim.sim.plan_eval import Knowledge, Question, Runner, first_arrival_bound, kth_arrival_s
from sms_sim.sim.virtual.deliveries import deliverable_count

__all__ = ["LOST_MESSAGES_MAX", "impossible", "short_of_deliveries", "nothing_meets"]

# Below this expected number of never-delivered messages per run, "deliver everything" is
# the default goal: a run loses a message at most about once in a million.
LOST_MESSAGES_MAX = 1e-6
# Delivered counts this many standard deviations short are left to the runs to notice
# (they do, when a run has drawn every message): drawing them up front costs a run's worth.
_UNREACHABLE_Z = 4.0


def impossible(question: Question, knowledge: Sequence[Knowledge], runner: Runner) -> str | None:
    """Why no count can meet the goal, if that follows before any run: messages that are
    never delivered, or a deadline before the k-th arrival or the shortest send. Records
    each replication's k-th arrival (and delivered count, when looked up) in ``knowledge``."""
    goal, base = question.goal, question.base
    reason = _undeliverable(question, knowledge, runner)
    if reason is not None:
        return reason
    arrivals = first_arrival_bound(question)
    if arrivals is None:  # Poisson: draw each replication's arrivals (cheap)
        arrivals = runner.map(kth_arrival_s, [question.model(1, r) for r in
                                              range(goal.replications)])
    for known, at_s in zip(knowledge, arrivals, strict=True):
        known.kth_arrival_s = at_s
    if rounded_deadline(goal.deadline_s) < question.shortest_send_s:
        return (f"no count meets {goal.deadline_s:g} s: one send takes at least "
                f"{question.shortest_send_s:g} s")
    floor = [at_s + question.shortest_send_s for at_s in arrivals]
    if least_bound([], floor, question.factor) > rounded_deadline(goal.deadline_s):
        which = "the last message" if question.k == base.num_messages else (
            f"message {question.k} (of {base.num_messages})")
        if base.arrivals.kind is ArrivalKind.POISSON:
            return (f"no count meets {goal.deadline_s:g} s: {which} arrives at "
                    f"{fmean(arrivals):.4g} s on average over {goal.replications} runs")
        return f"no count meets {goal.deadline_s:g} s: {which} arrives at {arrivals[0]:.4g} s"
    return None


def _undeliverable(question: Question, knowledge: Sequence[Knowledge],
                   runner: Runner) -> str | None:
    """Whether some replication delivers fewer than k messages at any count: certain
    when every attempt fails, looked up (the draws alone) when the binomial odds are not
    negligible, otherwise left to the runs (which notice it too)."""
    goal, base = question.goal, question.base
    n, k = base.num_messages, question.k
    success = _success(question)
    if success == 0:
        for known in knowledge:
            known.deliverable = 0
        return short_of_deliveries(question, knowledge)
    spread = math.sqrt(n * success * (1 - success))
    if ((n * (1 - success) <= LOST_MESSAGES_MAX or k <= n * success - _UNREACHABLE_Z * spread)
            and not _validity_may_expire(question)):
        return None
    counts = runner.map(deliverable_count,
                        [question.model(1, r) for r in range(goal.replications)])
    for known, count in zip(knowledge, counts, strict=True):
        known.deliverable = count
    return short_of_deliveries(question, knowledge)


def _validity_may_expire(question: Question) -> bool:
    """Whether a validity can expire messages even when each starts as it becomes ready
    (a first attempt then starts inside it): through a retry or a receipt coming too late.
    The odds of that have no closed form here, so the draws are looked up."""
    return question.base.valid_for_s is not None and (
        question.base.retry.max_attempts > 1
        or question.goal.target is DeliveryTarget.RECEIVED)


def short_of_deliveries(question: Question, knowledge: Sequence[Knowledge]) -> str | None:
    """The goal out of reach because some replication never delivers k messages."""
    goal, base, sender = question.goal, question.base, question.sender
    short = sum(1 for known in knowledge
                if known.deliverable is not None and known.deliverable < question.k)
    if not short:
        return None
    attempts = base.retry.max_attempts
    success = _success(question)
    tried = (f"with failure rate {sender.failed_rate:g} and {attempts} attempt"
             f"{'s' if attempts > 1 else ''} per message")
    if question.goal.target is DeliveryTarget.RECEIVED:
        tried += " and receipts"
    wanted = f"no count delivers {goal.deliver * 100:.4g} % of {base.num_messages} messages"
    if success == 0:
        return f"{wanted}: {tried} none is ever delivered"
    if base.valid_for_s is not None:
        return (f"{wanted}: {tried} and a validity of {base.valid_for_s:g} s, {short} of "
                f"{goal.replications} runs deliver fewer than {question.k} even with a "
                "sender free for every message; allow a longer --valid-for or ask for "
                "less with --deliver")
    # More attempts help only where sends fail: a receipt that never says delivered is not
    # retried, so for those the advice was one that could not help.
    retry = ""
    if never_delivered_probability(sender, attempts, None) > 0:
        retry = f"allow {'more ' if attempts > 1 else ''}retries with --max-attempts or "
    return (f"{wanted}: {tried} about {success * 100:.4g} % are ever delivered, and "
            f"{short} of {goal.replications} runs delivered fewer than {question.k}; "
            f"{retry}ask for less with --deliver")


def _success(question: Question) -> float:
    """The probability one message is delivered (received, with a receipts target)."""
    base, sender = question.base, question.sender
    receipts = base.receipts if question.goal.target is DeliveryTarget.RECEIVED else None
    return 1 - never_delivered_probability(sender, base.retry.max_attempts, receipts)


def nothing_meets(question: Question, knowledge: Sequence[Knowledge], top: int) -> str:
    """Why the search found no count up to ``top`` (past which nothing changes)."""
    short = short_of_deliveries(question, knowledge)
    if short is not None:
        return short
    goal = question.goal
    where = (f"up to {SENDERS_MAX} senders (the most a plan considers)"
             if top == SENDERS_MAX else
             f"up to {top} senders (more change nothing: nobody waits for a sender)")
    return (f"no count {where} meets {goal.deadline_s:g} s with {goal.level:.4g} "
            "confidence")
