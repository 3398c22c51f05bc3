"""What a dispatcher hands its senders: ``SendJob``s, the ``SendPool`` port they go through,
and ``InlinePool``, the pool that sends on the dispatcher's own thread.

Apart from ``dispatcher`` so that a pool (``sender_pool``, a test's) needs only these, not
the claim/settle loop.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from sms_sim.dispatch.contract import Claim
from sms_sim.dispatch.failures import SendFailure

__all__ = ["SendJob", "SendPool", "InlinePool", "Completion"]


class SendJob(NamedTuple):
    """One delivery to send: what the provider needs, and the claim its outcome settles.

    ``key`` is the provider's idempotency key (``Dispatcher.provider_key``). The content is
    the message's own text (1-1600 Unicode characters), which is why this is not the
    simulator's ``Message``.
    """

    recipient: str
    content: str
    key: str
    claim: Claim


# A finished send: the job; None if the provider accepted it, else why not; and when the
# provider accepted it (the dispatcher's clock; None if it did not). The store records that
# moment as the delivery's ``sent_at``, not the settle's, which comes a claim round later
# (longer while the store is unreachable).
Completion = tuple[SendJob, SendFailure | None, float | None]


class SendPool(Protocol):
    """Where a dispatcher's sends happen. Called only from the dispatcher's thread."""

    def room(self) -> int:
        """How many more jobs it takes now (never negative)."""
        ...

    def submit(self, jobs: Sequence[SendJob]) -> None:
        """Take these jobs; each is sent through ``Dispatcher.transmit`` exactly once, or
        given back unstarted when the pool stops."""
        ...

    def completed(self) -> list[Completion]:
        """The sends finished since the last call (each returned once), without blocking."""
        ...

    def in_flight(self) -> int:
        """Jobs submitted whose completion has not been returned yet."""
        ...


class InlinePool:
    """Sends each job on the dispatcher's own thread as it is submitted: no sender threads,
    no simulated latency. What the benchmarks and the unit tests run. ``now`` stamps each
    accepted send."""

    def __init__(self, transmit: Callable[[SendJob], SendFailure | None],
                 now: Callable[[], float]) -> None:
        self._transmit = transmit
        self._now = now
        self._done: list[Completion] = []

    def room(self) -> int:
        return sys.maxsize

    def submit(self, jobs: Sequence[SendJob]) -> None:
        transmit, done, now = self._transmit, self._done, self._now
        for job in jobs:
            failure = transmit(job)
            done.append((job, failure, None if failure is not None else now()))

    def completed(self) -> list[Completion]:
        done, self._done = self._done, []
        return done

    def in_flight(self) -> int:
        return len(self._done)
