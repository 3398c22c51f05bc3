"""What the threaded producer releases, and when: new arrivals and failed messages due again.

The two time-ordered sources the producer merges (see ``Producer``), apart from the queues
the senders read: ``ArrivalCursor`` walks the arrival process over the message stream, and
``RetryHandoff`` carries failed messages from the monitor, which judges each failed attempt,
back to the producer with the time their retry is due.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterable
from itertools import islice
from random import Random
from typing import Final, Generic, TypeVar

from sms_sim.config import RetryPolicy
from sms_sim.model import ErrorClass
from sms_sim.policy import retry_delay_after

__all__ = ["ArrivalCursor", "RetryHandoff"]

Item = TypeVar("Item")
_INF: Final = math.inf


class ArrivalCursor(Generic[Item]):
    """The arrival process laid over the message stream, for the producer: ``next_at`` is
    when the next message arrives (monotonic: ``started_at`` plus its ``at_s``; ``inf`` once
    the arrivals or the messages run out) and ``take`` hands it over. ``arrivals=None`` is a
    burst: every message of the stream at ``started_at``. Single-threaded (the producer's)."""

    def __init__(
        self,
        arrivals: Iterable[tuple[float, int]] | None,
        messages: Iterable[Item],
        started_at: float,
    ) -> None:
        self._batches = iter(((0.0, -1),) if arrivals is None else arrivals)  # -1: all
        self._messages = iter(messages)
        self._started_at = started_at
        self._left = 0
        self.next_at = _INF
        self._next_batch()

    def _next_batch(self) -> None:
        for at_s, batch_count in self._batches:
            if batch_count:
                self.next_at, self._left = self._started_at + at_s, batch_count
                return
        self.next_at, self._left = _INF, 0

    def take(self, into: list[Item], most: int) -> None:
        """Append up to ``most`` messages of the batch now due to ``into``; when the
        messages run out, there are no more arrivals."""
        wanted = most if self._left < 0 else min(most, self._left)
        before = len(into)
        into.extend(islice(self._messages, wanted))
        taken = len(into) - before
        if taken < wanted:
            self._batches = iter(())
            self.next_at, self._left = _INF, 0
        elif self._left > 0:
            self._left -= taken
            if self._left == 0:
                self._next_batch()


class RetryHandoff(Generic[Item]):
    """Failed messages on their way back from the monitor to the producer, and the retry or
    dead-letter decision for each failed attempt (for ``max_attempts`` of 2 or more; with one
    attempt a failure is final and counted ``failed``, so no handoff is needed).

    ``failed`` decides: a message with attempts left is retried after
    ``retry_delay_s(policy, attempt, rng)`` (backoff and jitter, the policy function of the
    virtual-time mode) and goes on ``due`` as ``(due_at, item)``, ``due_at`` monotonic; after
    ``max_attempts`` failed attempts it is dead-lettered. The delays come from ``rng`` (the
    run passes ``policy.retry_rng(seed)``), not from the failing sender's stream as in virtual
    time: threaded outcomes are not reproducible anyway, since which sender takes which
    message depends on thread timing.

    Attempts are counted per message object, by identity (user-supplied messages may repeat
    ids, and equal messages compare equal), and only from a message's first failure to its
    final outcome, so nothing is kept for a message that is sent at once. The same object
    queued several times at once would share one count: each copy is still accounted for,
    but may get more or fewer attempts.

    Threads: only the monitor (the one thread draining outcomes) calls ``succeeded`` and
    ``failed`` and writes the counters; only the producer takes from ``due``. ``settled``
    counts messages whose outcome is final (sent or dead): the producer ends the input once
    that equals what it produced. ``wake`` is what the producer waits on: the monitor sets it
    after each drain that moved anything, and whoever sets the run's ``stop`` must set it too
    (``run`` does, and so does the monitor when its loop ends).
    """

    def __init__(self, policy: RetryPolicy, rng: Random) -> None:
        if policy.max_attempts < 2:
            raise ValueError(f"a retry handoff needs max_attempts >= 2 (got {policy.max_attempts})")
        self.policy = policy
        self._rng = rng
        self.due: queue.SimpleQueue[tuple[float, Item]] = queue.SimpleQueue()
        self.wake = threading.Event()
        self.settled = 0
        self.dead = 0
        self.expired = 0
        self._failed_attempts: dict[int, int] = {}  # id(item) -> failed attempts so far

    def succeeded(self, item: Item) -> None:
        """Record that ``item`` was sent: its outcome is final."""
        self._failed_attempts.pop(id(item), None)
        self.settled += 1

    def failed(
        self, item: Item, now: float, error_class: ErrorClass = ErrorClass.TRANSIENT, *,
        retry_after_s: float | None = None, valid_until: float = _INF,
    ) -> float | None:
        """Record a failed attempt of ``item`` at monotonic time ``now``; returns when its
        retry is due (and queues it on ``due``), or None if it is now final: dead-lettered
        (a permanent error, or the last attempt) or expired (the retry would come due at or
        after ``valid_until``). The delay is ``policy.retry_delay_after``'s for the class."""
        key = id(item)
        attempts = self._failed_attempts.pop(key, 0) + 1
        delay_s = retry_delay_after(self.policy, attempts, error_class, self._rng,
                                    retry_after_s=retry_after_s)
        if delay_s is None or now + delay_s >= valid_until:
            if delay_s is None:
                self.dead += 1
            else:
                self.expired += 1
            self.settled += 1
            return None
        self._failed_attempts[key] = attempts
        due_at = now + delay_s
        self.due.put((due_at, item))
        return due_at

    def expire(self, item: Item) -> None:
        """Record that ``item``'s validity ended before a sender could start it: final."""
        self._failed_attempts.pop(id(item), None)
        self.settled += 1

    def take_due(self) -> list[tuple[float, Item]]:
        """Empty ``due``: the producer collecting retries, or the run counting the ones
        never collected (unsent) at the end."""
        pairs: list[tuple[float, Item]] = []
        get = self.due.get_nowait
        while True:
            try:
                pairs.append(get())
            except queue.Empty:
                return pairs
