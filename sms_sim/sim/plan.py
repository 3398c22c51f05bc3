"""Capacity planning: the fewest identical senders that deliver enough of the messages in
time, with a stated confidence, found without simulating every count.

**The criterion.** The goal (``DeliveryGoal``) is about *delivered* messages: at least
``deliver`` of the N messages sent successfully within ``deadline_s`` of the start; a failed
or dead-lettered message does not count, however early it failed. For a sender count S the
model is replicated R times and each replication r gives T_r, the time its k-th message
(k = ceil(deliver * N)) was delivered. S **meets** the goal when every replication
delivered k messages and the one-sided upper prediction bound of the T_r,
``mean + t(level, R-1) * s * sqrt(1 + 1/R)``, is within the deadline: under a normal model,
one more run (the real broadcast) delivers k messages in time with probability ``level``.

**The answer** is the smallest count that meets, exactly: the same a scan of every count
with the same seeds would give. Replication r uses the same random numbers at every count
(attached to messages, see ``virtual.deliveries``), so counts differ only by their senders.
The bound is not monotone in S (a slower but steadier count can pass where a faster one
does not), so the search does not bisect. It rules out every count up to some L by proof,
the per-replication lower bounds of ``plan_eval`` put into the least bound of
``plan_bounds`` (a bound that only grows as L shrinks, so L is found by bisection without
running anything), and then evaluates the counts above L in increasing order until one
meets. Which counts are evaluated first is a guess from the work the goal needs (about
N * mean send time * attempts / deadline): a count that meets there gives every
replication's work, which usually rules out every count below but one or two.

**Sequential stopping.** A count's replications run in order and stop as soon as the
verdict of all R is certain (``plan_eval.Evaluation.settle``): a miss is often clear after
one or two runs, a meet needs all R. The verdict, and so the stated confidence, is the
fixed-R one. A run itself stops once the deadline has passed and its k-th delivery is
known, or at a horizon past which no run can meet.

``plan`` raises ``ConfigError`` for inputs it cannot plan (no seed, more senders than
``SENDERS_MAX`` to tabulate); a goal no count can meet is an answer (``min_senders`` None
and a one-line ``reason``), not an error. It never prints; ``progress`` receives snapshots.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sms_sim.clock import Clock, RealClock
from sms_sim.config import (
    SENDERS_MAX,
    DeliveryGoal,
    DeliveryTarget,
    ReceiptModel,
    SenderConfig,
    SimulationConfig,
)
from sms_sim.errors import ConfigError
from sms_sim.policy import mean_service_s, never_delivered_probability
from sms_sim.sim.plan_bounds import least_bound, surely_above
from sms_sim.sim.plan_eval import (
    Evaluation,
    Knowledge,
    PlanRow,
    Question,
    Runner,
    replication_seed,
)
from sms_sim.sim.plan_reasons import LOST_MESSAGES_MAX, impossible, nothing_meets
from sms_sim.sim.theory import expected_attempts
from sms_sim.sim.virtual.deliveries import run_deliveries

__all__ = ["PlanRow", "PlanResult", "PlanProgress", "plan", "replication_seed",
           "default_deliver", "first_guess", "sweep_around", "SWEEP_POINTS"]

SWEEP_POINTS = 20  # rows of a --table


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanProgress:
    """Where a plan stands: counts settled and runs made; every count up to
    ``ruled_out_to`` misses (0: none known); ``meets_at`` is the smallest count known to
    meet; ``current`` is being evaluated (``current_runs`` of ``replications`` done);
    ``eta_s`` estimates the wall time left for it (None before the first run)."""

    settled: int
    runs: int
    ruled_out_to: int
    meets_at: int | None
    current: int | None
    current_runs: int
    replications: int
    elapsed_s: float
    eta_s: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanResult:
    """The answer, the rows of the counts evaluated (ascending), and the effort."""

    goal: DeliveryGoal
    messages: int
    seed: int
    min_senders: int | None
    reason: str | None  # one line on why no count meets, when none does
    rows: tuple[PlanRow, ...]
    runs: int
    elapsed_s: float

    def to_dict(self) -> dict[str, object]:
        return {
            "min_senders": self.min_senders,
            "reason": self.reason,
            "messages": self.messages,
            "deliver": self.goal.deliver,
            "deadline_s": self.goal.deadline_s,
            "level": self.goal.level,
            "replications": self.goal.replications,
            "percentiles": list(self.goal.percentiles),
            "seed": self.seed,
            "runs": self.runs,
            "rows": [row.to_dict() for row in self.rows],
            **({} if self.goal.target is DeliveryTarget.ACCEPTED
               else {"target": str(self.goal.target)}),
        }


def default_deliver(
    base: SimulationConfig, sender: SenderConfig,
    goal_target: DeliveryTarget = DeliveryTarget.ACCEPTED,
) -> float | None:
    """1.0 when a run delivers every message but about once in a million (no failures, or
    retries that make a lost message that unlikely), else None: then what fraction counts
    is the user's to say."""
    lost = base.num_messages * never_delivered_probability(
        sender, base.retry.max_attempts, _receipts_of(base, goal_target))
    return 1.0 if lost <= LOST_MESSAGES_MAX else None


def _receipts_of(base: SimulationConfig, target: DeliveryTarget) -> ReceiptModel | None:
    """The receipts that decide delivery: the base's when the target is receipts."""
    return base.receipts if target is DeliveryTarget.RECEIVED else None


def first_guess(base: SimulationConfig, sender: SenderConfig, goal: DeliveryGoal) -> int:
    """Where the search starts: the senders that would do the goal's work (its
    deliveries' attempts, failed ones included) by the deadline if never idle."""
    success = 1 - never_delivered_probability(sender, base.retry.max_attempts,
                                              _receipts_of(base, goal.target))
    k = max(1, math.ceil(goal.deliver * base.num_messages - 1e-9))
    attempts = expected_attempts(sender.failure_rate + sender.throttle_rate,
                                 base.retry.max_attempts)
    fixed = None if base.content is None else base.content.fixed
    per_message = 1.0 if fixed is None else float(fixed.count)
    work_s = k / max(success, 1e-12) * attempts * mean_service_s(sender, per_message)
    return max(1, min(SENDERS_MAX, math.ceil(work_s / goal.deadline_s)))


def plan(
    base: SimulationConfig,
    sender: SenderConfig,
    goal: DeliveryGoal,
    *,
    jobs: int = 1,
    table_counts: Sequence[int] = (),
    sweep: bool = False,
    progress: Callable[[PlanProgress], None] = lambda snapshot: None,
    clock: Clock | None = None,
) -> PlanResult:
    """The fewest identical ``sender`` that meet ``goal`` for ``base`` (messages, arrivals,
    retries and seed; see the module docstring for the criterion), plus full rows for
    ``table_counts`` and, with ``sweep``, for about ``SWEEP_POINTS`` counts around the
    answer. ``jobs`` > 1 runs replications in that many processes (Ctrl-C reaches this
    process alone, which ends them and raises ``KeyboardInterrupt``)."""
    if base.seed is None:
        raise ConfigError("a plan needs a seed so that it can be repeated")
    if base.num_messages < 1:
        raise ConfigError(f"a plan needs messages >= 1 (got {base.num_messages})")
    if goal.target is DeliveryTarget.RECEIVED and base.receipts is None:
        raise ConfigError("a plan for received messages needs a receipt model")
    if any(not 1 <= count <= SENDERS_MAX for count in table_counts):
        raise ConfigError(f"sender counts to tabulate must be in 1..{SENDERS_MAX}")
    question = Question.of(base, sender, goal)
    clock = clock or RealClock()
    with Runner(jobs) as runner:
        search = _Search(question, runner, progress, clock)
        answer, reason = search.run()
        if answer is not None and answer > 1:
            search.evaluate(answer - 1, at_least=1)  # the count below, shown missing
        for count in sorted({*table_counts, *(sweep_around(answer) if sweep else ())}):
            search.evaluate(count, full=True)
    rows = tuple(evaluation.row(question)
                 for _, evaluation in sorted(search.evaluations.items())
                 if evaluation.runs)
    return PlanResult(goal=goal, messages=base.num_messages, seed=base.seed,
                      min_senders=answer, reason=reason, rows=rows, runs=search.runs,
                      elapsed_s=clock.monotonic() - search.started)


def sweep_around(answer: int | None) -> list[int]:
    """About SWEEP_POINTS counts from half to one and a half times the answer, the answer
    and the count below it included."""
    centre = answer or 1
    low, high = max(1, centre // 2), min(SENDERS_MAX, max(centre + 1, math.ceil(centre * 1.5)))
    step = max(1, math.ceil((high - low) / (SWEEP_POINTS - 1)))
    counts = set(range(low, high + 1, step))
    if answer is not None:
        counts.update({answer, max(1, answer - 1)})
    return sorted(counts)


class _Search:
    """The search of the module docstring, with what it has learnt so far."""

    def __init__(self, question: Question, runner: Runner,
                 progress: Callable[[PlanProgress], None], clock: Clock) -> None:
        self.question = question
        self.runner = runner
        self.progress = progress
        self.clock = clock
        self.started = clock.monotonic()
        replications = question.goal.replications
        self.knowledge = [Knowledge() for _ in range(replications)]
        self.evaluations: dict[int, Evaluation] = {}
        self.runs = 0
        self.batches = 0  # rounds of up to ``jobs`` runs in parallel
        # More senders than messages change nothing: nobody ever waits for one.
        self.top = min(SENDERS_MAX, question.base.num_messages)
        self.meets_at: int | None = None
        self._ruled_out = 0

    # -- the search ------------------------------------------------------------------------

    def run(self) -> tuple[int | None, str | None]:
        reason = impossible(self.question, self.knowledge, self.runner)
        if reason is not None:
            return None, reason
        question = self.question
        count = first_guess(question.base, question.sender, question.goal)
        step = 1
        while True:
            low = self.ruled_out()
            if low >= self.top:
                return None, nothing_meets(self.question, self.knowledge, self.top)
            if self.meets_at is None:
                # Upwards from the guess, in growing steps, until a count meets.
                count = min(max(count, low + 1), self.top)
                if self.evaluate(count).meets:
                    self.meets_at = count
                elif count == self.top:
                    self.meets_at = self.top + 1  # none above: scan what lies below
                else:
                    self._settle_top(count)
                    count, step = count + step, step * 2
                continue
            # Every count between the ruled-out ones and the meeting one, in order.
            pending = next((c for c in range(low + 1, self.meets_at)
                            if self.evaluations.get(c, Evaluation(c)).meets is None), None)
            if pending is None:
                if self.meets_at > self.top:
                    return None, nothing_meets(self.question, self.knowledge, self.top)
                return self.meets_at, None
            if self.evaluate(pending).meets:
                self.meets_at = pending
            else:
                self._settle_top(pending)

    def ruled_out(self) -> int:
        """The largest L such that every count up to L provably misses (0 if none)."""
        def proven(senders: int) -> bool:
            lower = [k.lower_bound_s(senders, self.question) for k in self.knowledge]
            return surely_above(least_bound([], lower, self.question.factor),
                                self.question.goal.deadline_s)

        low, high = self._ruled_out, self.top + 1  # proven(low) holds; proven(high) unknown
        if proven(self.top):
            low = self.top
        else:
            while high - low > 1:  # proven() only grows as the count shrinks
                middle = (low + high) // 2
                if proven(middle):
                    low = middle
                else:
                    high = middle
        self._ruled_out = low
        return low

    def _settle_top(self, count: int) -> None:
        """If no run at a missing ``count`` ever waited for a sender, more senders change
        nothing; run its remaining replications to be sure of that, then cap the search."""
        evaluation = self.evaluations[count]
        if count < self.top and not any(run.waited for run in evaluation.runs):
            self.evaluate(count, full=True)
            if not any(run.waited for run in evaluation.runs):
                self.top = count

    # -- evaluating a count ----------------------------------------------------------------

    def evaluate(self, senders: int, *, full: bool = False, at_least: int = 0) -> Evaluation:
        """Run replications of ``senders`` in order until the verdict is settled (all R
        with ``full``; at least ``at_least`` runs either way)."""
        question = self.question
        replications = question.goal.replications
        evaluation = self.evaluations.setdefault(senders, Evaluation(senders))
        if not evaluation.runs:
            evaluation.settle(question, self.knowledge)  # the bounds may settle it unrun

        def wanted() -> bool:
            return len(evaluation.runs) < replications and (
                full or evaluation.meets is None or len(evaluation.runs) < at_least)

        while wanted():
            first = len(evaluation.runs)
            batch = range(first, min(replications, first + self.runner.jobs))
            results = self.runner.map(run_deliveries,
                                      [question.model(senders, r) for r in batch])
            self.batches += 1
            for replication, result in zip(batch, results, strict=True):
                if not wanted():
                    break  # computed alongside, but the verdict was already settled
                self.knowledge[replication].learn(result, question)
                evaluation.runs.append(result)
                self.runs += 1
                evaluation.settle(question, self.knowledge)
            self._report(senders, len(evaluation.runs))
        return evaluation

    def _report(self, current: int | None, current_runs: int) -> None:
        elapsed = self.clock.monotonic() - self.started
        replications = self.question.goal.replications
        eta = None
        if self.batches and current is not None:
            # Runs go in rounds of ``jobs``; the rounds this count still needs if it meets.
            rounds_left = math.ceil((replications - current_runs) / self.runner.jobs)
            eta = elapsed / self.batches * rounds_left
        low = self._ruled_out  # and the evaluated misses right above it
        while (evaluation := self.evaluations.get(low + 1)) is not None and (
                evaluation.meets is False):
            low += 1
        self.progress(PlanProgress(
            settled=sum(1 for e in self.evaluations.values() if e.meets is not None),
            runs=self.runs, ruled_out_to=low,
            meets_at=min((c for c, e in self.evaluations.items() if e.meets), default=None),
            current=current, current_runs=current_runs, replications=replications,
            elapsed_s=elapsed, eta_s=eta,
        ))
