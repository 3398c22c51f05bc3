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


# A finished send: the job and None if the provider accepted it, else why not.
Completion = tuple[SendJob, SendFailure | None]


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
    no simulated latency. What the benchmarks and the unit tests run."""

    def __init__(self, transmit: Callable[[SendJob], SendFailure | None]) -> None:
        self._transmit = transmit
        self._done: list[Completion] = []

    def room(self) -> int:
        return sys.maxsize

    def submit(self, jobs: Sequence[SendJob]) -> None:
        transmit, done = self._transmit, self._done
        for job in jobs:
            done.append((job, transmit(job)))

    def completed(self) -> list[Completion]:
        done, self._done = self._done, []
        return done

    def in_flight(self) -> int:
        return len(self._done)
