"""What a send that did not go through leads to: its class, its settlement, the throttle gate.

A provider's answer is classified once, where it is read (``TransportError.error_class``;
``simulated_failure`` for the simulator's own draws), and travels with the completion as a
``SendFailure``. ``settlement_for`` turns it into the store's next step with the same
``policy.retry_delay_after`` every mode uses: a permanent error is dead at once (another try
cannot help and would cost money), a transient one backs off, a throttled one waits at least
the provider's retry-after. A throttle also closes the worker's ``ThrottleGate``: the route
asked for less traffic, so no new send starts on it until the retry-after has passed, instead
of every other queued send collecting its own 429.

Outcomes of sends that never reached the provider (lease expired, message cancelled, route
throttled) are ``SendFailure``s too, with the reasons below, so the settling code has one
type to look at; they are given back (attempt not counted) or, for an expired lease, not
reported at all.
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass

from sms_sim.clock import Clock
from sms_sim.config import RetryPolicy, SenderConfig
from sms_sim.dispatch.contract import Claim, SettleKind, Settlement
from sms_sim.model import ErrorClass
from sms_sim.policy import backoff_before_jitter_s, retry_delay_after

__all__ = [
    "SendFailure",
    "ThrottleGate",
    "settlement_for",
    "simulated_failure",
    "throttle_pause_s",
    "LEASE_EXPIRED",
    "CANCELLED_UNSENT",
    "UNCHECKED",
    "THROTTLED_UNSENT",
    "VALIDITY_ENDED",
    "NOT_ATTEMPTED",
    "NOT_SENT",
    "MAX_THROTTLE_PAUSE_S",
]

LEASE_EXPIRED = "lease expired before the send started"
CANCELLED_UNSENT = "message cancelled before the send started"
UNCHECKED = "could not check for a cancel before the send; not sent"
THROTTLED_UNSENT = "provider route throttled; given back unsent"
# Never sent late: given back unsent, and the next claim marks it expired.
VALIDITY_ENDED = "message validity ended before the send started"
# Outcomes of sends that never reached the provider: given back, the attempt not counted.
NOT_ATTEMPTED = frozenset({CANCELLED_UNSENT, UNCHECKED, THROTTLED_UNSENT, VALIDITY_ENDED})
# Every outcome of a send that never happened (an expired lease is not reported at all).
NOT_SENT = NOT_ATTEMPTED | {LEASE_EXPIRED}
# The longest a throttle pauses a worker's route, whatever the provider asked: a mistyped
# Retry-After (or a date a year out) must not park a worker silently for a year. The
# delivery's own retry still waits the full retry-after (capped by the policy at TIME_MAX_S).
MAX_THROTTLE_PAUSE_S = 3600.0


@dataclass(frozen=True, slots=True)
class SendFailure:
    """Why one send did not go through: ``reason`` is kept as the delivery's last_error;
    ``retry_after_s`` (seconds from when it was received) counts for THROTTLED only."""

    reason: str
    error_class: ErrorClass = ErrorClass.TRANSIENT
    retry_after_s: float | None = None


def simulated_failure(error: str, sender: SenderConfig | None) -> SendFailure:
    """The class of a failure the simulator drew itself (the sender never called the
    provider): transient, for every simulated failure so far.

    The one place a simulated failure is classified: when ``SenderConfig`` draws permanent
    and throttled failures too, map their errors here (``sender``, the config of the
    sender that drew it when known, then gives the retry-after of a simulated throttle).
    """
    del sender  # one class only, for now
    return SendFailure(error, ErrorClass.TRANSIENT)


def throttle_pause_s(failure: SendFailure, policy: RetryPolicy) -> float:
    """How long a throttle closes the route: the provider's retry-after, or, when it gave
    none, the policy's first backoff (before jitter); never more than
    ``MAX_THROTTLE_PAUSE_S``."""
    pause_s = failure.retry_after_s
    if pause_s is None or not math.isfinite(pause_s):
        pause_s = backoff_before_jitter_s(policy, 1) if pause_s is None else MAX_THROTTLE_PAUSE_S
    return min(max(pause_s, 0.0), MAX_THROTTLE_PAUSE_S)


class ThrottleGate:
    """Closed while a provider route has asked for less traffic; open otherwise.

    One per worker (the worker sends to one provider): a throttled answer on any sender
    closes it until the retry-after has passed (``close_for``; a later, longer one extends
    it, a shorter one never shortens it). While it is closed the dispatcher claims nothing
    and senders give their held jobs back unsent. Reads ``clock.monotonic`` only, so a fake
    clock drives it; safe to call from any thread (the lock guards the one update that
    reads before it writes).
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._until = -math.inf  # monotonic seconds
        self.closures = 0  # how many throttles closed or extended it

    def close_for(self, pause_s: float) -> None:
        """Keep new sends from starting for ``pause_s`` seconds from now."""
        until = self._clock.monotonic() + pause_s
        with self._lock:
            if until > self._until:
                self._until = until
                self.closures += 1

    def is_open(self) -> bool:
        until = self._until
        if until == -math.inf:  # never throttled, or reopened: no clock read (once per send)
            return True
        if self._clock.monotonic() < until:
            return False
        with self._lock:
            if self._until == until:  # not extended meanwhile: back to the fast case
                self._until = -math.inf
        return True

    def remaining_s(self) -> float:
        """Seconds until the gate opens (0 when open)."""
        return max(0.0, self._until - self._clock.monotonic())


def settlement_for(claim: Claim, failure: SendFailure | None, *, policy: RetryPolicy,
                   rng: random.Random, now: float) -> Settlement:
    """SENT for no failure; RELEASE for a send that never reached the provider (its message
    was cancelled, that could not be checked, or the route was throttled); otherwise what
    ``policy.retry_delay_after`` says for this reported attempt and class: RETRY at ``now``
    plus the delay, or DEAD (a permanent error, or the last attempt). The reason is kept
    either way.

    Attempts count reported ones only: an attempt whose lease ran out may never have
    reached the provider, and has a budget of its own (``DispatchConfig.max_lease_losses``).
    Draws from ``rng`` only for a retry.
    """
    if failure is None:
        return Settlement(delivery_id=claim.delivery_id, attempts=claim.attempts,
                          kind=SettleKind.SENT)
    if failure.reason in NOT_ATTEMPTED:
        return Settlement(delivery_id=claim.delivery_id, attempts=claim.attempts,
                          kind=SettleKind.RELEASE)
    reported = claim.attempts - claim.lease_losses  # this one included
    delay_s = retry_delay_after(policy, reported, failure.error_class, rng,
                                retry_after_s=failure.retry_after_s)
    if delay_s is None:
        return Settlement(delivery_id=claim.delivery_id, attempts=claim.attempts,
                          kind=SettleKind.DEAD, error=failure.reason)
    return Settlement(delivery_id=claim.delivery_id, attempts=claim.attempts,
                      kind=SettleKind.RETRY, error=failure.reason, next_attempt_at=now + delay_s)
