"""Capacity planning: how many senders finish N messages within a deadline, and how sure we are.

For each sender count the virtual-time model is replicated R times with common random
numbers (replication r uses the same seed whatever the sender count, so differences between
rows come from the sender count, not from luck). A count "meets the deadline with 95 %
confidence" when the one-sided 95 % upper prediction bound of its makespan, mean + t s
sqrt(1 + 1/R), is within the deadline: a further run would finish in time with probability
about 0.95 (normal model). The smallest such count is found by bisection, since more
senders never make a burst slower on average.
"""

from __future__ import annotations

import dataclasses
import math
import signal
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from statistics import fmean

from sms_sim.config import SenderConfig, SimulationConfig
from sms_sim.errors import ConfigError
from sms_sim.policy import mean_service_s
from sms_sim.sim.theory import expected_attempts, mean_confidence_interval, upper_prediction_bound
from sms_sim.sim.virtual.run import simulate

__all__ = ["PlanRow", "PlanResult", "plan", "replication_seed", "SWEEP_POINTS"]

SWEEP_POINTS = 20
_NO_GAIN = 0.99  # doubling the senders must cut the makespan bound by more than 1 %
_MAX_SENDERS = 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanRow:
    """One sender count, summarised over its replications (times in seconds)."""

    senders: int
    replications: int
    makespan_mean_s: float
    makespan_ci_s: float  # half-width of the two-sided confidence interval of the mean
    makespan_upper_s: float  # one-sided upper prediction bound for one more run
    p50_send_s: float
    p95_send_s: float
    p99_send_s: float
    utilisation: float
    failed_attempts: float  # mean per replication
    dead_lettered: float  # mean per replication
    meets_deadline: bool

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanResult:
    deadline_s: float
    level: float
    min_senders: int | None  # None: no count up to the search limit meets the deadline
    rows: tuple[PlanRow, ...]
    seed: int

    def to_dict(self) -> dict[str, object]:
        return {
            "deadline_s": self.deadline_s,
            "level": self.level,
            "seed": self.seed,
            "min_senders": self.min_senders,
            "rows": [row.to_dict() for row in self.rows],
        }


@dataclass(frozen=True, slots=True)
class _Replication:
    makespan_s: float
    p50_s: float
    p95_s: float
    p99_s: float
    utilisation: float
    failed_attempts: int
    dead_lettered: int


def replication_seed(seed: int, replication: int) -> int:
    """Seed of replication ``r``: the same for every sender count (common random numbers)."""
    return (seed * 1_000_003 + replication) % (2**63)


def _replicate(config: SimulationConfig) -> _Replication:
    """One virtual run, reduced to what a plan row needs (small, so cheap to pickle)."""
    report = simulate(config, output=None)
    virtual = report.virtual
    assert virtual is not None  # simulate always fills it
    return _Replication(virtual.makespan_s, virtual.p50_send_s, virtual.p95_send_s,
                        virtual.p99_send_s, virtual.utilisation, virtual.failed_attempts,
                        report.dead_lettered)


class _Evaluator:
    """Runs and caches rows; replications go through ``executor`` when one is given."""

    def __init__(
        self,
        base: SimulationConfig,
        sender: SenderConfig,
        *,
        deadline_s: float,
        replications: int,
        level: float,
        seed: int,
        executor: Executor | None,
        progress: Callable[[str], None],
    ) -> None:
        self._base = base
        self._sender = sender
        self._deadline_s = deadline_s
        self._replications = replications
        self._level = level
        self._seed = seed
        self._executor = executor
        self._progress = progress
        self.rows: dict[int, PlanRow] = {}

    def row(self, senders: int) -> PlanRow:
        if senders not in self.rows:
            self.rows[senders] = self._evaluate(senders)
        return self.rows[senders]

    def prefetch(self, counts: Iterable[int]) -> None:
        """Evaluate several counts, all their replications in flight at once."""
        todo = [s for s in dict.fromkeys(counts) if s not in self.rows]
        configs = [self._config(s, r) for s in todo for r in range(self._replications)]
        results = list(self._map(configs))
        for index, senders in enumerate(todo):
            chunk = results[index * self._replications:(index + 1) * self._replications]
            self.rows[senders] = self._summarise(senders, chunk)

    def _config(self, senders: int, replication: int) -> SimulationConfig:
        return dataclasses.replace(self._base, senders=(self._sender,) * senders,
                                   seed=replication_seed(self._seed, replication))

    def _map(self, configs: Sequence[SimulationConfig]) -> Iterable[_Replication]:
        if self._executor is None:
            return map(_replicate, configs)
        return self._executor.map(_replicate, configs)

    def _evaluate(self, senders: int) -> PlanRow:
        configs = [self._config(senders, r) for r in range(self._replications)]
        return self._summarise(senders, list(self._map(configs)))

    def _summarise(self, senders: int, runs: Sequence[_Replication]) -> PlanRow:
        makespans = [run.makespan_s for run in runs]
        mean, half_width = mean_confidence_interval(makespans, self._level)
        upper = upper_prediction_bound(makespans, self._level)
        row = PlanRow(
            senders=senders,
            replications=len(runs),
            makespan_mean_s=mean,
            makespan_ci_s=half_width,
            makespan_upper_s=upper,
            p50_send_s=fmean(run.p50_s for run in runs),
            p95_send_s=fmean(run.p95_s for run in runs),
            p99_send_s=fmean(run.p99_s for run in runs),
            utilisation=fmean(run.utilisation for run in runs),
            failed_attempts=fmean(run.failed_attempts for run in runs),
            dead_lettered=fmean(run.dead_lettered for run in runs),
            meets_deadline=upper <= self._deadline_s,
        )
        self._progress(
            f"plan: {senders} senders: makespan {mean:.3f}s +/- {half_width:.3f}s "
            f"(upper {upper:.3f}s) {'meets' if row.meets_deadline else 'misses'} the deadline"
        )
        return row


def fluid_estimate(base: SimulationConfig, sender: SenderConfig, deadline_s: float) -> int:
    """Senders needed if every one worked flat out with no end effects: a starting point."""
    work_s = base.num_messages * mean_service_s(sender) * expected_attempts(
        sender.failure_rate, base.retry.max_attempts
    )
    return max(1, math.ceil(work_s / deadline_s))


def plan(
    base: SimulationConfig,
    sender: SenderConfig,
    *,
    deadline_s: float,
    replications: int = 10,
    level: float = 0.95,
    sender_counts: Sequence[int] | None = None,
    jobs: int = 1,
    progress: Callable[[str], None] = lambda line: None,
) -> PlanResult:
    """Find the fewest identical ``sender`` that finish ``base`` within ``deadline_s``, and
    tabulate a sweep of sender counts around it (or ``sender_counts`` if given).

    ``base`` gives the messages, arrivals, retry policy and seed (``None`` is not allowed:
    a plan must be repeatable). ``jobs`` > 1 runs replications in that many processes.
    Raises ``ConfigError`` for bad arguments.
    """
    if base.seed is None:
        raise ConfigError("a plan needs a seed so that it can be repeated")
    if not math.isfinite(deadline_s) or deadline_s <= 0:
        raise ConfigError(f"deadline must be > 0 (got {deadline_s!r})")
    if replications < 2:
        raise ConfigError(
            f"replications must be >= 2 for a confidence interval (got {replications})"
        )
    if not 0 < level < 1:
        raise ConfigError(f"level must be in (0, 1) (got {level!r})")
    if sender_counts is not None and (not sender_counts or min(sender_counts) < 1):
        raise ConfigError(f"sender counts must be >= 1 (got {list(sender_counts)!r})")
    # Workers ignore SIGINT: the parent alone handles Ctrl-C (and shuts them down).
    executor = ProcessPoolExecutor(jobs, initializer=_ignore_sigint) if jobs > 1 else None
    try:
        evaluator = _Evaluator(base, sender, deadline_s=deadline_s, replications=replications,
                               level=level, seed=base.seed, executor=executor,
                               progress=progress)
        minimum = _search_minimum(evaluator, fluid_estimate(base, sender, deadline_s))
        counts = list(sender_counts) if sender_counts else _sweep_around(minimum)
        if minimum is not None and minimum not in counts:
            counts.append(minimum)  # the answer always has its row
        evaluator.prefetch(counts)
        rows = tuple(evaluator.rows[count] for count in sorted(set(counts)))
    finally:
        if executor is not None:
            executor.shutdown()
    return PlanResult(deadline_s=deadline_s, level=level, min_senders=minimum, rows=rows,
                      seed=base.seed)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _search_minimum(evaluator: _Evaluator, estimate: int) -> int | None:
    """Smallest count meeting the deadline: bracket it from the estimate, then bisect.

    Invariant of the bisection: ``low`` misses the deadline (0 senders always does) and
    ``high`` meets it.
    """
    low, high = 0, estimate
    while not (row := evaluator.row(high)).meets_deadline:
        if high >= _MAX_SENDERS:
            return None
        previous_upper = row.makespan_upper_s
        low, high = high, min(_MAX_SENDERS, high * 2)
        # Doubling the senders hardly helps: the makespan is bounded by something senders
        # cannot shorten (the last arrival, one long send), so no count will do.
        if evaluator.row(high).makespan_upper_s > _NO_GAIN * previous_upper:
            return None if not evaluator.row(high).meets_deadline else high
    if low == 0:
        probe = high // 2
        while probe > 0 and evaluator.row(probe).meets_deadline:
            high, probe = probe, probe // 2
        low = probe
    while high - low > 1:
        middle = (low + high) // 2
        if evaluator.row(middle).meets_deadline:
            high = middle
        else:
            low = middle
    return high


def _sweep_around(minimum: int | None) -> list[int]:
    """About SWEEP_POINTS counts from half to one and a half times the answer."""
    centre = minimum or 1
    low, high = max(1, centre // 2), max(centre + 1, math.ceil(centre * 1.5))
    step = max(1, math.ceil((high - low) / (SWEEP_POINTS - 1)))
    counts = list(range(low, high + 1, step))
    if minimum is not None and minimum not in counts:
        counts.append(minimum)
    return sorted(counts)
