"""The provider port (``Transport``) and the in-memory simulated provider, which deduplicates
by idempotency key like a real one; ``ledger`` has the one shared by processes.

A real provider that honours idempotency keys accepts a repeated key without delivering
again. That is the second half of "never sent twice": the store's fencing stops a stale
worker from *recording* a send, and the key stops a resend after a crash from *reaching the
phone* twice. Every provider here keeps a ledger of every attempt, outside the store under
test, so a test can count effective duplicates (a recipient of one message handed to the
phone network more than once) independently of what the store believes.

A refusal carries its class (``model.ErrorClass``), decided where the provider's answer is
read, because only there is it known whether trying again can help: a permanent one goes
dead at once, a throttled one waits out the provider's retry-after and slows the route, a
transient one backs off. Providers that say nothing are transient, as before.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

from sms_sim.errors import SmsSimError
from sms_sim.model import ErrorClass

__all__ = [
    "Transport",
    "TransportError",
    "MemoryProvider",
    "LedgerSummary",
]


class TransportError(SmsSimError):
    """The provider refused or failed one send; the message says why (kept as last_error).

    ``error_class`` decides what happens next (``policy.retry_delay_after``): TRANSIENT by
    default, so a provider that does not classify keeps the plain backoff. ``retry_after_s``
    is the provider's own "not before" (seconds from now, None if it gave none); it counts
    for THROTTLED only.
    """

    def __init__(self, message: str, error_class: ErrorClass = ErrorClass.TRANSIENT,
                 retry_after_s: float | None = None) -> None:
        # Every argument goes to ``args``, so a copy or an unpickled one keeps its class.
        super().__init__(message, error_class, retry_after_s)
        self.error_class = error_class
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        return str(self.args[0])


class Transport(Protocol):
    """Where a delivery goes. ``send`` blocks until the provider answers.

    ``key`` is the idempotency key: the same on every attempt of one (message, recipient).
    Returns normally when the provider has the message (newly or by key), with the
    provider's own message id if it gave one (None otherwise; the engine does not store it
    yet: receipts are matched by ``key``); raises ``TransportError`` when it refused. Must
    be safe to call from several threads.
    """

    def send(self, key: str, recipient: str, content: str) -> str | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerSummary:
    """What a provider's ledger says happened.

    ``attempts``: every send call. ``delivered``: sends handed to the phone network.
    ``absorbed``: repeats of a known key, accepted without delivering. ``effective_duplicates``:
    deliveries beyond the first of one (message, recipient), the number that must be 0.
    """

    attempts: int
    delivered: int
    absorbed: int
    effective_duplicates: int
    recipients_delivered: int
    max_resend_gap_s: float = 0.0  # longest time between two attempts of one target


class MemoryProvider:
    """In-process provider with a set of seen keys behind a lock; zero latency.

    It keeps counts rather than a per-target tally, so ``send`` stays a few set operations
    (it is inside the dispatch benchmark's loop) and ``summary`` is O(1) (benchmarks poll it).
    """

    def __init__(self, *, dedup: bool = True) -> None:
        self._dedup = dedup
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._targets: set[str] = set()  # every "message_id:recipient" delivered to
        self.attempts = 0
        self.absorbed = 0
        self._delivered = 0
        self._duplicates = 0

    def send(self, key: str, recipient: str, content: str) -> None:
        with self._lock:
            self.attempts += 1
            if self._dedup:
                if key in self._seen:
                    self.absorbed += 1
                    return
                self._seen.add(key)
            self._delivered += 1
            target = key.partition("#")[0]  # as ``ledger._target``, inline: once per send
            if target in self._targets:
                self._duplicates += 1
            else:
                self._targets.add(target)

    def summary(self) -> LedgerSummary:
        with self._lock:
            return LedgerSummary(
                attempts=self.attempts,
                delivered=self._delivered,
                absorbed=self.absorbed,
                effective_duplicates=self._duplicates,
                recipients_delivered=len(self._targets),
            )
