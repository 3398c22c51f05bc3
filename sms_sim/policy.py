"""Pure policy shared by every mode: arrival times, send time, failure, retry backoff.

Draws take the sender's own ``random.Random`` and are always made in the same order
(latency, then failure), so a sender's stream yields the same outcomes whichever mode
consumes it. The virtual mode draws a retry's backoff from the failing sender's stream
too; the threaded mode from ``retry_rng`` (which sender takes which message depends on
thread timing there, so its outcomes are not reproducible anyway). ``latency_sampler``
builds a specialised closure once per sender because the virtual-time loop calls it
millions of times a second; the real-time sender uses the very same closure. Arrival
times come from their own stream (``arrivals_rng``), so one seed gives one arrival
sequence in both modes.

The SMS model (issue 14) adds: ``send_classifier`` (the one failure draw partitioned into
error classes), ``send_slot_s`` (segments, rate limits in segments/s and a throttle's pause),
``retry_delay_after`` (the delay per class), the receipt draws (``receipt_sampler`` from each
sender's ``receipt_rng``, ``receipt_at`` for validity) and ``never_delivered_probability``
for the planner. Every mode calls these, so the model is written once.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import cast

from sms_sim.config import (
    TIME_MAX_S,
    ArrivalKind,
    Arrivals,
    Jitter,
    ReceiptModel,
    RetryPolicy,
    SenderConfig,
    ServiceDistribution,
)
from sms_sim.model import SIMULATED_FAILURE, ErrorClass, ReceiptStatus

__all__ = [
    "arrival_times",
    "arrivals_rng",
    "retry_rng",
    "latency_sampler",
    "sender_rng",
    "backoff_before_jitter_s",
    "retry_delay_s",
    "retry_delay_after",
    "receipt_sampler",
    "receipt_at",
    "mean_service_s",
    "capacity_per_s",
    "send_classifier",
    "send_slot_s",
    "receipt_rng",
    "FAILURE_ERRORS",
    "error_class_of",
    "never_delivered_probability",
]

# The error a simulated failed send reports, per class: the transient one keeps the text
# it had before classes existed, so default runs and the dispatch worker are unchanged.
FAILURE_ERRORS: dict[ErrorClass, str] = {
    ErrorClass.TRANSIENT: SIMULATED_FAILURE,
    ErrorClass.PERMANENT: "simulated permanent failure",
    ErrorClass.THROTTLED: "simulated throttling",
}
_CLASS_OF_ERROR = {error: error_class for error_class, error in FAILURE_ERRORS.items()}


def error_class_of(error: str | None) -> ErrorClass:
    """The class of a failed simulated send's error (an unknown text counts as transient:
    the safe default, retried with the backoff)."""
    return _CLASS_OF_ERROR.get(error or "", ErrorClass.TRANSIENT)


def send_classifier(sender: SenderConfig) -> Callable[[float], ErrorClass | None]:
    """A function from one uniform draw in [0, 1) to the send's outcome: None when the
    provider accepts it, else its ``ErrorClass``. The unit interval is partitioned
    transient (``failure_rate``), permanent, throttled, accepted, in that order: one draw per
    send, so every mode and every mix of rates consumes the stream alike, and with only
    ``failure_rate`` set the outcome is the ``draw >= failure_rate`` of every earlier run."""
    transient = sender.failure_rate
    permanent = transient + sender.permanent_rate
    throttled = permanent + sender.throttle_rate
    TRANSIENT, PERMANENT, THROTTLED = (ErrorClass.TRANSIENT, ErrorClass.PERMANENT,
                                       ErrorClass.THROTTLED)

    def classify(draw: float) -> ErrorClass | None:
        if draw >= throttled:
            return None
        if draw < transient:
            return TRANSIENT
        return PERMANENT if draw < permanent else THROTTLED

    return classify


def send_slot_s(
    sender: SenderConfig, send_s: float, segments: int, error_class: ErrorClass | None
) -> float:
    """How long after a send starts its sender may start the next one: the send itself,
    at least ``segments`` slots of the rate limit (limits count segments), and after a
    throttled send, its end plus the provider's ``retry_after_s`` (a throttled route is
    given the pause it asked for, not only the message)."""
    slot = max(send_s, segments * sender.min_interval_s)
    if error_class is ErrorClass.THROTTLED:
        slot = max(slot, send_s + sender.retry_after_s)
    return slot


def never_delivered_probability(
    sender: SenderConfig, max_attempts: int, receipts: ReceiptModel | None = None
) -> float:
    """The probability a message is never delivered: every attempt fails (transient or
    throttled r per attempt), or one fails permanently first (``permanent_rate`` p), or
    with ``receipts``, it was accepted but its receipt never says delivered.
    ``r ** K + p * (1 - r ** K) / (1 - r)``; exactly ``failure_rate ** K`` without the SMS
    fields (computed so, not as ``1 - success``, which would round tiny values to 0)."""
    retryable = sender.failure_rate + sender.throttle_rate
    all_failed = retryable ** max_attempts
    if sender.permanent_rate:
        runs = (max_attempts if retryable == 1
                else (1 - all_failed) / (1 - retryable))
        all_failed += sender.permanent_rate * runs
    if receipts is None:
        return all_failed
    lost = receipts.lost_rate + receipts.undelivered_rate
    return all_failed + (1 - all_failed) * lost


def receipt_rng(seed: int, index: int) -> random.Random:
    """The stream sender ``index``'s delivery receipts are drawn from under ``seed``: its
    own, so turning receipts on leaves every send outcome of a seed as it was."""
    return random.Random(f"sms_sim:{seed}:receipts:{index}")


def latency_sampler(rng: random.Random, sender: SenderConfig) -> Callable[[], float]:
    """A zero-argument function drawing one send time (seconds, never negative) from ``rng``."""
    mean, deviation = sender.mean_s, sender.deviation_s
    distribution = sender.distribution
    if distribution is ServiceDistribution.UNIFORM:
        if deviation == 0:
            return lambda: mean
        low, span, uniform01 = mean - deviation, 2 * deviation, rng.random
        return lambda: low + span * uniform01()
    if distribution is ServiceDistribution.CONSTANT or mean == 0:
        return lambda: mean
    if distribution is ServiceDistribution.EXPONENTIAL:
        return lambda: -mean * math.log(1.0 - rng.random())
    # Lognormal with the given mean m and standard deviation s:
    # sigma^2 = ln(1 + s^2 / m^2), mu = ln(m) - sigma^2 / 2.
    sigma = math.sqrt(math.log1p((deviation / mean) ** 2))
    mu = math.log(mean) - sigma * sigma / 2
    return lambda: rng.lognormvariate(mu, sigma)


def mean_service_s(sender: SenderConfig, segments: float = 1.0) -> float:
    """The mean time one send of ``segments`` segments (a mean, for a mix) occupies the
    sender, rate limit included only approximately: ``max(mean + segments * per_segment,
    segments / rate)``, exact when the send time is constant."""
    return max(sender.mean_s + segments * sender.per_segment_s,
               segments * sender.min_interval_s)


def capacity_per_s(senders: Sequence[SenderConfig], segments: float = 1.0) -> float:
    """Sends (of ``segments`` segments, a mean for a mix) per second the senders complete
    together when never short of work (a sender that takes no time counts as a billion
    per second, so the sum stays finite)."""
    return sum(1.0 / max(mean_service_s(s, segments), 1e-9) for s in senders)


def sender_rng(seed: int, index: int) -> random.Random:
    """The independent, reproducible random stream of sender ``index`` under ``seed``.

    Seeding from a string hashes it with SHA-512, so neighbouring indices give unrelated
    streams (seeding with ``seed + index`` would make runs with adjacent seeds share streams).
    """
    return random.Random(f"sms_sim:{seed}:sender:{index}")


def arrivals_rng(seed: int) -> random.Random:
    """The reproducible stream the arrival process of a run under ``seed`` draws from."""
    return random.Random(f"sms_sim:{seed}:arrivals")


def retry_rng(seed: int) -> random.Random:
    """A stream for the threaded mode's retry delays under ``seed``.

    The virtual-time mode draws a retry's delay from the failing sender's own stream, right
    after its latency and failure draws, which is what makes a seed fix every outcome there.
    The threaded mode cannot reproduce outcomes anyway (which sender takes which message
    depends on thread timing), so its monitor draws every delay from this one stream.
    """
    return random.Random(f"sms_sim:{seed}:retries")


def arrival_times(
    arrivals: Arrivals, num_messages: int, rng: random.Random
) -> Iterator[tuple[float, int]]:
    """Yield ``(at_s, count)`` batches of arrivals in time order, ``at_s`` in seconds from
    the start of the run; the counts add up to ``num_messages``.

    A burst is one batch at 0; Poisson arrivals are one message each, with exponential gaps
    drawn from ``rng`` (one draw per message, lazily); a schedule yields its non-empty rows
    (``Arrivals`` checks that they add up). Both modes call this with ``arrivals_rng(seed)``.
    """
    if arrivals.kind is ArrivalKind.BURST:
        if num_messages:
            yield 0.0, num_messages
    elif arrivals.kind is ArrivalKind.POISSON:
        rate = cast(float, arrivals.rate_per_s)  # Arrivals checked it is a positive number
        expovariate = rng.expovariate
        t = 0.0
        for _ in range(num_messages):
            t += expovariate(rate)
            yield t, 1
    else:
        for at_s, count in arrivals.schedule:
            if count:
                yield at_s, count


def backoff_before_jitter_s(policy: RetryPolicy, attempt: int) -> float:
    """Delay before retry number ``attempt`` (1 = the first retry), before jitter.

    Never decreases with ``attempt`` and never exceeds ``cap_s``. Computed without
    overflow for any attempt number.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1 (got {attempt!r})")
    if policy.base_s == 0:
        return 0.0
    if policy.factor == 1:
        return min(policy.cap_s, policy.base_s)
    # Compare exponents in log space: factor ** (attempt - 1) overflows for large attempts.
    if (attempt - 1) * math.log(policy.factor) >= math.log(policy.cap_s / policy.base_s):
        return policy.cap_s
    return min(policy.cap_s, policy.base_s * policy.factor ** (attempt - 1))


def retry_delay_s(policy: RetryPolicy, attempt: int, rng: random.Random) -> float:
    """The jittered delay before retry number ``attempt``; within [0, cap_s] always."""
    delay = backoff_before_jitter_s(policy, attempt)
    if policy.jitter is Jitter.FULL:
        return delay * rng.random()
    if policy.jitter is Jitter.EQUAL:
        return delay / 2 + delay / 2 * rng.random()
    return delay


def retry_delay_after(
    policy: RetryPolicy,
    attempts: int,
    error_class: ErrorClass,
    rng: random.Random,
    *,
    retry_after_s: float | None = None,
) -> float | None:
    """The delay before the next attempt after attempt number ``attempts`` failed with
    ``error_class``, or None when there is none: a permanent error, or the last attempt.

    Transient errors wait the jittered backoff; throttled ones at least the provider's
    ``retry_after_s`` (the backoff when it said nothing, or said less). Draws from ``rng``
    only when it retries, so a seed gives the same stream of draws in every mode.
    """
    if error_class is ErrorClass.PERMANENT or attempts >= policy.max_attempts:
        return None
    delay_s = retry_delay_s(policy, attempts, rng)
    if error_class is ErrorClass.THROTTLED and retry_after_s is not None:
        delay_s = max(delay_s, min(retry_after_s, TIME_MAX_S))
    return delay_s


def receipt_sampler(
    rng: random.Random, model: ReceiptModel
) -> Callable[[], tuple[ReceiptStatus, float]]:
    """A zero-argument function drawing what a send's receipt will say and after how many
    seconds: ``(DELIVERED | UNDELIVERED, delay_s)``, or ``(UNKNOWN, inf)`` for a receipt that
    never comes. Always two draws (the kind, then the delay), so the stream stays aligned
    whichever kind comes out. ``receipt_at`` applies the validity period."""
    undelivered, lost = model.undelivered_rate, model.lost_rate
    mu, sigma = math.log(model.median_s), model.sigma
    uniform01, lognormal = rng.random, rng.lognormvariate

    def draw() -> tuple[ReceiptStatus, float]:
        kind = uniform01()
        delay_s = lognormal(mu, sigma)
        if kind < lost:
            return ReceiptStatus.UNKNOWN, math.inf
        if kind < lost + undelivered:
            return ReceiptStatus.UNDELIVERED, delay_s
        return ReceiptStatus.DELIVERED, delay_s

    return draw


def receipt_at(
    sent_at: float, drawn: tuple[ReceiptStatus, float], valid_until: float | None
) -> tuple[ReceiptStatus, float]:
    """The receipt a send made at ``sent_at`` gets and when, given its draw: a send still on
    the network when its validity ends (``valid_until``, None for no limit) is reported
    expired at that moment instead; a lost receipt stays unknown."""
    status, delay_s = drawn
    if status is ReceiptStatus.UNKNOWN:
        return drawn
    at = sent_at + delay_s
    if valid_until is not None and at > valid_until:
        return ReceiptStatus.EXPIRED, max(valid_until, sent_at)
    return status, at
