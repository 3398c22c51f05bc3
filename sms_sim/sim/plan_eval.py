"""Evaluating sender counts for the planner: running replications (in this process or a
pool of them), settling a count's verdict as early as it is certain, and what every run
teaches about the counts not yet run.

**The verdict.** A count meets the goal when all R replications deliver the goal's k
messages and the prediction bound of their k-th delivery times (``plan_bounds``) is within
the deadline. Replications run in order r = 1, 2, ... and the verdict is settled after the
first n of them as soon as the rest cannot change it: "misses" once a run can never deliver
k messages, or once even the least bound the remaining runs allow (each at least its
lower bound, below) exceeds the deadline; "meets" only after all R. This is curtailment,
not a looser test: the verdict is always the one all R runs would give, so the stated
confidence holds exactly, and it does not depend on how many processes ran them (results
computed in parallel beyond the deciding run are set aside).

**Lower bounds per replication**, each true at every count up to S, so they shrink as S
grows: the k-th delivery cannot precede the k-th arrival plus the shortest possible send;
S senders busy until then have done at least the first-attempt work of the message prefix
holding the k-th deliverable message, less one send each still in flight
(``prefix_work / S - prefix_max``); and without retries, a run at any larger count already
evaluated (a replication is monotone in S, see ``virtual.deliveries``). A plan that targets
receipts adds the receipt delays: ``virtual.receipt_bound``. A run stopped at
the horizon is only known to be later than it.

**With a validity** (``valid_for_s``) expiry only removes deliveries, so the k-th delivery
comes no sooner than the k-th arrival plus the shortest send, and a replication whose
messages can never be delivered even when each starts as it becomes ready
(``deliveries.ever_delivered``) short of k misses at every count: both bounds stay. The
prefix-work and receipt bounds count the work of every earlier message, which expired
messages never do, so the runs do not report them then; and the comparison with larger
counts is off (``Question.monotone``).
"""

from __future__ import annotations

import math
import multiprocessing
import signal
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.pool import Pool
from statistics import fmean
from types import TracebackType
from typing import Self, TypeVar

from sms_sim.config import (
    ArrivalKind,
    DeliveryGoal,
    DeliveryTarget,
    SenderConfig,
    ServiceDistribution,
    SimulationConfig,
)
from sms_sim.policy import arrival_times, arrivals_rng
from sms_sim.sim.plan_bounds import (
    least_bound,
    prediction_bound,
    prediction_factor,
    rounded_deadline,
    surely_above,
)
from sms_sim.sim.virtual.deliveries import DeliveryModel, DeliveryRun
from sms_sim.sim.virtual.receipt_bound import ReceiptBound

__all__ = ["PlanRow", "Question", "Runner", "Knowledge", "Evaluation", "replication_seed",
           "kth_arrival_s"]


Item = TypeVar("Item")
Result = TypeVar("Result")


def replication_seed(seed: int, replication: int) -> int:
    """Seed of replication ``r``: the same for every sender count (common random numbers)."""
    return (seed * 1_000_003 + replication) % (2**63)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanRow:
    """One sender count as far as it was evaluated (times in seconds).

    ``runs`` may be fewer than ``replications`` when the verdict was settled early; then
    ``upper_s`` is None and ``least_upper_s`` is the least the bound could still have been.
    Means are over the runs made. A time is ``inf`` when some run had not reached it by the
    time it stopped (the horizon, past the deadline). Delivered fractions count deliveries
    by the deadline; failed attempts and dead letters are counted up to where each run
    stopped (the deadline, or later if the goal's deliveries came later).
    """

    senders: int
    replications: int
    runs: int
    meets: bool
    time_mean_s: float
    upper_s: float | None
    least_upper_s: float
    delivered_mean: float
    delivered_min: float
    percentile_times_s: tuple[float, ...]
    failed_attempts: float
    dead: float

    def to_dict(self) -> dict[str, object]:
        return {
            "senders": self.senders, "replications": self.replications, "runs": self.runs,
            "meets": self.meets, "time_mean_s": _json_time(self.time_mean_s),
            "upper_s": None if self.upper_s is None else _json_time(self.upper_s),
            "least_upper_s": _json_time(self.least_upper_s),
            "delivered_mean": self.delivered_mean, "delivered_min": self.delivered_min,
            "percentile_times_s": [_json_time(t) for t in self.percentile_times_s],
            "failed_attempts": self.failed_attempts, "dead": self.dead,
        }


def _json_time(value: float) -> float | None:
    """JSON has no infinity: a time never reached is null."""
    return None if math.isinf(value) else value


@dataclass(frozen=True, slots=True, kw_only=True)
class Question:
    """Everything fixed for one plan: the model, the goal and what follows from them."""

    base: SimulationConfig
    sender: SenderConfig
    goal: DeliveryGoal
    k: int  # deliveries the goal needs: ceil(deliver * N)
    ranks: tuple[int, ...]  # k and the percentiles' ranks, ascending, distinct
    factor: float  # c of the prediction bound
    horizon_s: float  # a run still short of k by then cannot meet (see ``horizon``)
    shortest_send_s: float  # no delivery comes sooner after its arrival

    @classmethod
    def of(cls, base: SimulationConfig, sender: SenderConfig, goal: DeliveryGoal) -> Self:
        n = base.num_messages
        k = max(1, math.ceil(goal.deliver * n - 1e-9))
        percentile_ranks = [max(1, math.ceil(p / 100 * n - 1e-9)) for p in goal.percentiles]
        factor = prediction_factor(goal.level, goal.replications)
        return cls(base=base, sender=sender, goal=goal, k=k,
                   ranks=tuple(sorted({k, *percentile_ranks})), factor=factor,
                   horizon_s=horizon(goal.deadline_s, goal.replications, factor),
                   shortest_send_s=_shortest_send_s(sender))

    def goal_time_s(self, run: DeliveryRun) -> float:
        """When ``run`` delivered its k-th message (``inf``: not by its end)."""
        return run.rank_times_s[self.ranks.index(self.k)]

    @property
    def monotone(self) -> bool:
        """Whether a replication's k-th delivery never comes later with more senders
        (proved for one attempt per message, see ``virtual.deliveries``). Not claimed with
        a validity: a message that expires at S senders but is sent at S + 1 holds a sender
        there that was free at S, so the free-time argument no longer goes through."""
        return self.base.retry.max_attempts == 1 and self.base.valid_for_s is None

    def model(self, senders: int, replication: int) -> DeliveryModel:
        config = replace(self.base, senders=(self.sender,),
                         seed=replication_seed(self._seed, replication))
        return DeliveryModel(config=config, sender=self.sender, senders=senders,
                             ranks=self.ranks, prefix_rank=self.k,
                             deadline_s=rounded_deadline(self.goal.deadline_s),
                             horizon_s=self.horizon_s,
                             received=self.goal.target is DeliveryTarget.RECEIVED)

    @property
    def _seed(self) -> int:
        assert self.base.seed is not None  # plan() checks
        return self.base.seed


def horizon(deadline_s: float, replications: int, factor: float) -> float:
    """How long a run must go on before "not yet" may be read as "misses": if one run is
    still short of k deliveries at h, the least bound over every value of the others is
    h * min(1, 1/R + c/sqrt(R)) (the others all at 0, or all at h), so h above
    deadline / min(1, 1/R + c/sqrt(R)) makes that run alone a miss."""
    share = min(1.0, 1 / replications + factor / math.sqrt(replications))
    return deadline_s / share * (1 + 1e-9) + 1e-9


def _shortest_send_s(sender: SenderConfig) -> float:
    """The shortest send: the least draw plus one segment's ``per_segment_s`` (a message
    has at least one; a receipt only comes later)."""
    if sender.distribution is ServiceDistribution.UNIFORM:
        least = sender.mean_s - sender.deviation_s
    elif sender.distribution is ServiceDistribution.CONSTANT:
        least = sender.mean_s
    else:
        least = 0.0  # exponential and lognormal send times can be arbitrarily short
    return least + sender.per_segment_s


def kth_arrival_s(model: DeliveryModel) -> float:
    """When the ``prefix_rank``-th message arrives in the replication (inf if fewer do):
    the arrivals stream alone, cheap next to a run."""
    config, k = model.config, model.prefix_rank
    assert config.seed is not None
    arrived = 0
    for at_s, count in arrival_times(config.arrivals, config.num_messages,
                                     arrivals_rng(config.seed)):
        arrived += count
        if arrived >= k:
            return at_s
    return math.inf


@dataclass(slots=True)
class Knowledge:
    """What runs have shown about one replication, the same at every count."""

    kth_arrival_s: float | None = None
    prefix_work_s: float | None = None
    prefix_max_s: float | None = None
    deliverable: int | None = None
    times_s: dict[int, float] = field(default_factory=dict)  # count -> k-th delivery (inf
    # censored), kept only for monotone models
    receipts: ReceiptBound | None = None  # the most-drawn run's, for received targets
    _receipt_bounds: dict[int, float] = field(default_factory=dict)  # count -> its bound

    def learn(self, run: DeliveryRun, question: Question) -> None:
        if run.kth_arrival_s is not None:
            self.kth_arrival_s = run.kth_arrival_s
        if run.prefix_work_s is not None:
            self.prefix_work_s, self.prefix_max_s = run.prefix_work_s, run.prefix_max_s
        if run.deliverable is not None:
            self.deliverable = run.deliverable
        if question.monotone:
            self.times_s[run.senders] = question.goal_time_s(run)
        bound = run.receipt_bound
        if bound is not None and (self.receipts is None or bound.drawn > self.receipts.drawn):
            self.receipts = bound
            self._receipt_bounds.clear()

    def lower_bound_s(self, senders: int, question: Question) -> float:
        """A time the k-th delivery cannot beat with ``senders`` or fewer senders."""
        if self.deliverable is not None and self.deliverable < question.k:
            return math.inf
        bound = (self.kth_arrival_s or 0.0) + question.shortest_send_s
        if self.prefix_work_s is not None and self.prefix_max_s is not None:
            bound = max(bound, self.prefix_work_s / senders - self.prefix_max_s)
        for count, time_s in self.times_s.items():
            if count >= senders:
                bound = max(bound, question.horizon_s if math.isinf(time_s) else time_s)
        if self.receipts is not None:
            if senders not in self._receipt_bounds:
                self._receipt_bounds[senders] = self.receipts.kth_lower_s(question.k, senders)
            bound = max(bound, self._receipt_bounds[senders])
        return bound


class Runner:
    """Runs replications in order: in this process (``jobs`` 1) or in a pool of ``jobs``
    processes that ignore SIGINT, so Ctrl-C reaches only this one, which terminates them.
    A context manager: leaving it (normally or by an exception) ends the pool."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self._pool: Pool | None = None

    def __enter__(self) -> Self:
        if self.jobs > 1:
            self._pool = multiprocessing.get_context().Pool(self.jobs,
                                                            initializer=_worker_signals)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def map(self, function: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
        """``function`` of each item, in order (pickled to the pool's processes)."""
        if self._pool is None or len(items) == 1:
            return [function(item) for item in items]
        pending = self._pool.map_async(function, items, chunksize=1)
        while True:  # a wait with a timeout, so Ctrl-C is seen at once
            try:
                return pending.get(timeout=0.2)
            except multiprocessing.TimeoutError:
                continue


def _worker_signals() -> None:
    """A pool worker leaves Ctrl-C to its parent, and ends at once on SIGTERM (the pool's
    ``terminate``) rather than run whatever handler the parent had installed when it
    forked (the CLI's raises an exception, which printed a traceback per worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@dataclass(slots=True)
class Evaluation:
    """One count: the runs used so far (replications 0..n-1) and its verdict."""

    senders: int
    runs: list[DeliveryRun] = field(default_factory=list)
    meets: bool | None = None  # None: not settled yet
    least_upper_s: float = 0.0

    def settle(self, question: Question, knowledge: Sequence[Knowledge]) -> None:
        """Settle the verdict if the runs so far decide it (see the module docstring)."""
        goal = question.goal
        replications = goal.replications
        known: list[float] = []
        lower: list[float] = []
        for index, run in enumerate(self.runs):
            time_s = question.goal_time_s(run)
            if not math.isinf(time_s):
                known.append(time_s)
            elif knowledge[index].lower_bound_s(self.senders, question) == math.inf:
                self.meets, self.least_upper_s = False, math.inf  # can never deliver k
                return
            else:
                lower.append(question.horizon_s)  # censored: later than the horizon
        lower.extend(knowledge[r].lower_bound_s(self.senders, question)
                     for r in range(len(self.runs), replications))
        if len(known) == replications:
            bound = prediction_bound(known, question.factor)
            self.meets, self.least_upper_s = bound <= rounded_deadline(goal.deadline_s), bound
            return
        self.least_upper_s = least_bound(known, lower, question.factor)
        if surely_above(self.least_upper_s, goal.deadline_s):
            self.meets = False
        elif len(self.runs) == replications:
            # Only censored runs are open, and the horizon makes any of them a miss.
            raise AssertionError("a censored run left the verdict open: horizon too short")

    def row(self, question: Question) -> PlanRow:
        runs = self.runs
        n = question.base.num_messages
        goal = question.goal
        complete = len(runs) == goal.replications
        times = [question.goal_time_s(run) for run in runs]
        upper = self.least_upper_s if complete else None
        rank_index = {rank: i for i, rank in enumerate(question.ranks)}
        percentile_ranks = [max(1, math.ceil(p / 100 * n - 1e-9)) for p in goal.percentiles]
        return PlanRow(
            senders=self.senders, replications=goal.replications, runs=len(runs),
            meets=bool(self.meets), time_mean_s=_mean(times), upper_s=upper,
            least_upper_s=self.least_upper_s,
            delivered_mean=fmean(run.delivered_by_deadline / n for run in runs),
            delivered_min=min(run.delivered_by_deadline / n for run in runs),
            percentile_times_s=tuple(_mean([run.rank_times_s[rank_index[rank]] for run in runs])
                                     for rank in percentile_ranks),
            failed_attempts=fmean(run.failed_attempts for run in runs),
            dead=fmean(run.dead for run in runs),
        )


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return math.inf if any(math.isinf(v) for v in values) else fmean(values)


def first_arrival_bound(question: Question) -> list[float] | None:
    """The k-th arrival of every replication when it costs nothing to know (a burst, a
    schedule), else None (Poisson: drawn by ``Runner.arrivals``)."""
    arrivals = question.base.arrivals
    if arrivals.kind is ArrivalKind.BURST:
        return [0.0] * question.goal.replications
    if arrivals.kind is ArrivalKind.SCHEDULE:
        at_s = kth_arrival_s(question.model(1, 0))
        return [at_s] * question.goal.replications
    return None
