"""Validated configuration for a simulation: the senders and the run as a whole.

Validation lives here and only here, so the CLI, the library, the threaded and the virtual mode
reject the same values with the same one-line messages.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from sms_sim.checks import RATE_MIN_PER_S as _RATE_MIN_PER_S
from sms_sim.checks import TIME_MAX_S
from sms_sim.checks import check_finite as _check_finite
from sms_sim.checks import check_int as _check_int
from sms_sim.checks import check_time as _check_time
from sms_sim.errors import ConfigError
from sms_sim.sms_config import (
    SEGMENTS_MAX,
    SENDER_TYPE_RATES_PER_S,
    Content,
    DeliveryTarget,
    ReceiptModel,
    SenderType,
)

__all__ = [
    "SenderConfig",
    "SimulationConfig",
    "ServiceDistribution",
    "RetryPolicy",
    "Jitter",
    "Arrivals",
    "ArrivalKind",
    "DEFAULT_QUEUE_SIZE",
    "TIME_MAX_S",
    "SENDERS_MAX",
    "MESSAGES_MAX",
    "check_sender_total",
    "DeliveryGoal",
    "ReceiptModel",
    "REPLICATIONS_MAX",
    "Content",
    "SEGMENTS_MAX",
    "SenderType",
    "SENDER_TYPE_RATES_PER_S",
    "DeliveryTarget",
]

DEFAULT_QUEUE_SIZE = 1024
# Upper bounds that keep every run startable (TIME_MAX_S, in ``checks``, keeps every sum of
# times finite): 1e11 senders cannot be held in memory (each has its own random stream,
# about 2.5 KB).
SENDERS_MAX = 100_000  # all sources together: identical senders, --sender, senders files
MESSAGES_MAX = 10**12
REPLICATIONS_MAX = 10_000


def check_sender_total(total: int, *, maximum: int = SENDERS_MAX) -> None:
    """Refuse more than ``maximum`` senders in all (``SENDERS_MAX`` unless a mode needs
    fewer). Call it with the sum of every source before building the list of senders: a
    count such as 1e11 must be refused, not materialised."""
    if total > maximum:
        raise ConfigError(f"senders must be <= {maximum} in all (got {total})")


class ServiceDistribution(enum.StrEnum):
    """How a sender's send time is distributed around its mean."""

    UNIFORM = "uniform"  # uniform on [mean - deviation, mean + deviation]
    CONSTANT = "constant"  # always the mean
    EXPONENTIAL = "exponential"  # memoryless, with the given mean (M/M/c models)
    LOGNORMAL = "lognormal"  # long-tailed; deviation is the standard deviation


@dataclass(frozen=True, slots=True)
class SenderConfig:
    """One sender's behaviour: how long a send takes, how often it fails, how fast it may go.

    Positional order is (mean, deviation, failure_rate), as on the command line. By default
    a send takes a time uniform on [mean - deviation, mean + deviation] seconds; with
    ``distribution`` LOGNORMAL, ``deviation_s`` is the standard deviation instead, and
    CONSTANT and EXPONENTIAL take no deviation. ``rate_limit_per_s`` caps how many sends the
    sender may start per second (an SMS long code allows about 1, a short code about 100).

    The SMS fields (issue 14; all 0 by default, which is the model before it): a rate limit
    counts *segments* (a k-segment message takes k slots of ``1 / rate_limit_per_s``);
    ``per_segment_s`` is added to a send's drawn time for each of its segments (a constant,
    so it costs no random draw). ``failure_rate`` is the transient share of sends (retried
    with the backoff), ``permanent_rate`` the share that fail for good at once and
    ``throttle_rate`` the share the provider throttles: those retry no sooner than
    ``retry_after_s`` and pause the sender for it. One uniform draw per send is partitioned
    transient / permanent / throttled / ok in that order, so adding a class never shifts the
    random stream.
    """

    mean_s: float
    deviation_s: float
    failure_rate: float
    distribution: ServiceDistribution = ServiceDistribution.UNIFORM
    rate_limit_per_s: float | None = None
    per_segment_s: float = 0.0
    permanent_rate: float = 0.0
    throttle_rate: float = 0.0
    retry_after_s: float = 0.0

    def __post_init__(self) -> None:
        _check_time("mean", self.mean_s)
        _check_time("deviation", self.deviation_s)
        _check_finite("failure_rate", self.failure_rate)
        if self.failure_rate > 1:
            raise ConfigError(f"failure_rate must be in [0, 1] (got {self.failure_rate!r})")
        try:
            object.__setattr__(self, "distribution", ServiceDistribution(self.distribution))
        except ValueError:
            choices = ", ".join(d.value for d in ServiceDistribution)
            raise ConfigError(
                f"distribution must be one of {choices} (got {self.distribution!r})"
            ) from None
        if self.distribution is ServiceDistribution.UNIFORM and self.deviation_s > self.mean_s:
            raise ConfigError(
                f"deviation must be <= mean "
                f"(got deviation {self.deviation_s!r} > mean {self.mean_s!r})"
            )
        if (
            self.distribution in (ServiceDistribution.CONSTANT, ServiceDistribution.EXPONENTIAL)
            and self.deviation_s != 0
        ):
            raise ConfigError(
                f"deviation must be 0 for the {self.distribution} distribution "
                f"(got {self.deviation_s!r})"
            )
        if self.distribution is ServiceDistribution.LOGNORMAL and self.mean_s <= 0:
            raise ConfigError(
                f"mean must be > 0 for the lognormal distribution (got {self.mean_s!r})"
            )
        if self.rate_limit_per_s is not None:
            _check_finite("rate_limit", self.rate_limit_per_s, maximum=1 / _RATE_MIN_PER_S)
            if self.rate_limit_per_s < _RATE_MIN_PER_S:
                raise ConfigError(f"rate_limit must be >= {_RATE_MIN_PER_S:g} per second "
                                  f"(got {self.rate_limit_per_s!r})")
        _check_time("per_segment", self.per_segment_s)
        _check_time("retry_after", self.retry_after_s)
        for name, rate in (("permanent_rate", self.permanent_rate),
                           ("throttle_rate", self.throttle_rate)):
            _check_finite(name, rate)
            if rate > 1:
                raise ConfigError(f"{name} must be in [0, 1] (got {rate!r})")
        if self.failure_rate + self.permanent_rate + self.throttle_rate > 1:
            raise ConfigError(
                f"failure_rate + permanent_rate + throttle_rate must be <= 1 (got "
                f"{self.failure_rate!r} + {self.permanent_rate!r} + {self.throttle_rate!r})"
            )

    @property
    def min_interval_s(self) -> float:
        """The least time between the starts of two one-segment sends (0 without a rate
        limit); a k-segment send takes k times this."""
        return 0.0 if self.rate_limit_per_s is None else 1.0 / self.rate_limit_per_s

    @property
    def has_sms_fields(self) -> bool:
        """Whether any field of issue 14 is set (per-segment time, permanent or throttled
        failures): the simulators then take their SMS path."""
        return bool(self.per_segment_s or self.permanent_rate or self.throttle_rate)

    @property
    def failed_rate(self) -> float:
        """The share of sends that fail, whatever the class."""
        return self.failure_rate + self.permanent_rate + self.throttle_rate


class Jitter(enum.StrEnum):
    """How a retry delay is randomised so that failed sends do not retry in lockstep."""

    NONE = "none"  # exactly the exponential delay
    FULL = "full"  # uniform on [0, delay] (spreads retries most)
    EQUAL = "equal"  # uniform on [delay / 2, delay] (keeps at least half the delay)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """At most ``max_attempts`` attempts per message, the n-th retry after about
    ``min(cap_s, base_s * factor ** (n - 1))`` seconds, randomised by ``jitter``.

    ``max_attempts=1`` (the default) means no retries: a failed send is final. The same
    policy object drives both simulation modes and the dispatch engine.
    """

    max_attempts: int = 1
    base_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 300.0
    jitter: Jitter = Jitter.FULL

    def __post_init__(self) -> None:
        _check_int("max_attempts", self.max_attempts, minimum=1)
        _check_time("base", self.base_s)
        _check_finite("factor", self.factor, minimum=1.0, maximum=TIME_MAX_S)
        _check_time("cap", self.cap_s)
        if self.cap_s < self.base_s:
            raise ConfigError(
                f"cap must be >= base (got cap {self.cap_s!r} < base {self.base_s!r})"
            )
        try:
            object.__setattr__(self, "jitter", Jitter(self.jitter))
        except ValueError:
            choices = ", ".join(j.value for j in Jitter)
            raise ConfigError(f"jitter must be one of {choices} (got {self.jitter!r})") from None


class ArrivalKind(enum.StrEnum):
    """When messages enter the queue."""

    BURST = "burst"  # all present at t = 0 (a broadcast; the seed's case)
    POISSON = "poisson"  # independent arrivals at a constant mean rate
    SCHEDULE = "schedule"  # given counts at given times


@dataclass(frozen=True, slots=True, kw_only=True)
class Arrivals:
    """The arrival process. ``schedule`` holds ``(at_s, count)`` pairs, times relative to the
    start of the run, non-decreasing; its counts must add up to the run's message count."""

    kind: ArrivalKind = ArrivalKind.BURST
    rate_per_s: float | None = None
    schedule: tuple[tuple[float, int], ...] = ()

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", ArrivalKind(self.kind))
        except ValueError:
            choices = ", ".join(k.value for k in ArrivalKind)
            raise ConfigError(f"arrivals must be one of {choices} (got {self.kind!r})") from None
        if self.kind is ArrivalKind.POISSON:
            if self.rate_per_s is None:
                raise ConfigError("poisson arrivals need a rate (messages per second)")
            _check_finite("arrival rate", self.rate_per_s, maximum=1 / _RATE_MIN_PER_S)
            if self.rate_per_s < _RATE_MIN_PER_S:
                raise ConfigError(f"arrival rate must be >= {_RATE_MIN_PER_S:g} per second "
                                  f"(got {self.rate_per_s!r})")
        elif self.rate_per_s is not None:
            raise ConfigError(f"an arrival rate applies to poisson arrivals only (got {self.kind})")
        object.__setattr__(self, "schedule", tuple(tuple(row) for row in self.schedule))
        if self.kind is ArrivalKind.SCHEDULE:
            if not self.schedule:
                raise ConfigError("schedule arrivals need at least one (time, count) row")
            previous = 0.0
            for number, row in enumerate(self.schedule, start=1):
                if len(row) != 2:
                    raise ConfigError(f"schedule row {number} must be (time, count) (got {row!r})")
                at_s, count = row
                _check_time(f"schedule row {number} time", at_s)
                _check_int(f"schedule row {number} count", count, minimum=0,
                           maximum=MESSAGES_MAX)
                if at_s < previous:
                    raise ConfigError(
                        f"schedule times must not decrease (row {number}: {at_s!r} < {previous!r})"
                    )
                previous = at_s
        elif self.schedule:
            raise ConfigError(f"a schedule applies to schedule arrivals only (got {self.kind})")

    @property
    def scheduled_count(self) -> int:
        return sum(count for _, count in self.schedule)


def _default_senders() -> tuple[SenderConfig, ...]:
    return (SenderConfig(0.01, 0.001, 0.2),) * 4


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationConfig:
    """A whole run: how many messages, which senders, how often to report, which seed,
    how messages arrive and how failed sends are retried.

    ``seed=None`` draws a fresh seed; the report records the seed that was used so any run can
    be repeated. ``duration_s`` (optional) stops the run after that many seconds.
    ``queue_size`` bounds the producer's queue, which is what keeps memory flat in
    ``num_messages``.

    The SMS model (issue 14, all off by default): ``content`` counts segments (None: every
    message is one segment, as before); ``receipts`` draws a delivery receipt after each
    accepted send; ``valid_for_s`` is each message's validity from its arrival: a message
    not started by then is expired and never sent, and a receipt due after it says expired.
    """

    num_messages: int = 1000
    senders: Sequence[SenderConfig] = field(default_factory=_default_senders)
    monitor_interval_s: float = 1.0
    seed: int | None = None
    duration_s: float | None = None
    queue_size: int = DEFAULT_QUEUE_SIZE
    arrivals: Arrivals = field(default_factory=Arrivals)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    content: Content | None = None
    receipts: ReceiptModel | None = None
    valid_for_s: float | None = None

    def __post_init__(self) -> None:
        _check_int("num_messages", self.num_messages, minimum=0, maximum=MESSAGES_MAX)
        if self.content is not None and not isinstance(self.content, Content):
            raise ConfigError(f"content must be a Content value (got {self.content!r})")
        if self.receipts is not None and not isinstance(self.receipts, ReceiptModel):
            raise ConfigError(f"receipts must be a ReceiptModel value (got {self.receipts!r})")
        if self.valid_for_s is not None:
            _check_time("valid_for", self.valid_for_s)
            if self.valid_for_s <= 0:
                raise ConfigError(f"valid_for must be > 0 (got {self.valid_for_s!r})")
        object.__setattr__(self, "senders", tuple(self.senders))
        if len(self.senders) < 1:
            raise ConfigError(f"senders must be >= 1 (got {len(self.senders)})")
        check_sender_total(len(self.senders))
        for sender in self.senders:
            if not isinstance(sender, SenderConfig):
                raise ConfigError(f"senders must hold SenderConfig values (got {sender!r})")
        _check_time("monitor_interval", self.monitor_interval_s)
        if self.monitor_interval_s <= 0:
            raise ConfigError(f"monitor_interval must be > 0 (got {self.monitor_interval_s!r})")
        if self.seed is not None:
            _check_int("seed", self.seed, minimum=None)
        if self.duration_s is not None:
            _check_time("duration", self.duration_s)
        _check_int("queue_size", self.queue_size, minimum=1)
        if not isinstance(self.arrivals, Arrivals):
            raise ConfigError(f"arrivals must be an Arrivals value (got {self.arrivals!r})")
        if not isinstance(self.retry, RetryPolicy):
            raise ConfigError(f"retry must be a RetryPolicy value (got {self.retry!r})")
        if (
            self.arrivals.kind is ArrivalKind.SCHEDULE
            and self.arrivals.scheduled_count != self.num_messages
        ):
            raise ConfigError(
                f"the schedule holds {self.arrivals.scheduled_count} messages but num_messages "
                f"is {self.num_messages}"
            )

    @property
    def is_sms(self) -> bool:
        """Whether any part of the SMS model is on: the report then shows segments, error
        classes, expiry and receipts, and the virtual mode takes its general loop."""
        return (self.content is not None or self.receipts is not None
                or self.valid_for_s is not None
                or any(s.has_sms_fields for s in self.senders))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryGoal:
    """What a capacity plan must show: at least ``deliver`` of the messages delivered (sent
    successfully, not merely attempted; with ``target`` RECEIVED, confirmed by a delivery
    receipt) within ``deadline_s`` of the start, with
    ``level`` confidence, judged on ``replications`` runs per sender count.
    ``percentiles`` (each in (0, 100]) are extra delivery times to report: when that
    percentage of the messages had been delivered.

    ``level`` must be at least 0.5: below it the bound falls under the mean, which no reader
    would call confidence.
    """

    deadline_s: float
    deliver: float = 1.0
    level: float = 0.95
    replications: int = 10
    percentiles: tuple[float, ...] = ()
    target: DeliveryTarget = DeliveryTarget.ACCEPTED

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "target", DeliveryTarget(self.target))
        except ValueError:
            choices = ", ".join(t.value for t in DeliveryTarget)
            raise ConfigError(f"target must be one of {choices} (got {self.target!r})") from None
        _check_time("deadline", self.deadline_s)
        if self.deadline_s <= 0:
            raise ConfigError(f"deadline must be > 0 (got {self.deadline_s!r})")
        _check_finite("deliver", self.deliver)
        if not 0 < self.deliver <= 1:
            raise ConfigError(f"deliver must be in (0, 1] (got {self.deliver!r})")
        _check_finite("confidence", self.level)
        if not 0.5 <= self.level < 1:
            raise ConfigError(f"confidence must be in [0.5, 1) (got {self.level!r})")
        _check_int("replications", self.replications, minimum=2, maximum=REPLICATIONS_MAX)
        object.__setattr__(self, "percentiles", tuple(self.percentiles))
        for percentile in self.percentiles:
            _check_finite("percentile", percentile)
            if not 0 < percentile <= 100:
                raise ConfigError(f"percentile must be in (0, 100] (got {percentile!r})")
