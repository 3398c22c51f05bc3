"""Time, injected: the only module that reads the system clock or sleeps.

Everything that waits takes a ``Clock`` so tests can drive it with ``VirtualClock`` and
never sleep. ``sleep`` always takes the shared stop ``Event`` so that no wait can outlive a
shutdown request.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

__all__ = ["Clock", "RealClock", "VirtualClock", "VIRTUAL_EPOCH_S"]

# An odd, fixed epoch (2001-09-09T01:46:40Z plus a fraction): a virtual timestamp that leaks
# into real-time arithmetic, or the reverse, produces an obviously wrong number.
VIRTUAL_EPOCH_S = 1_000_000_000.125


class Clock(Protocol):
    """What every mode needs from time: persisted now, intervals, interruptible sleep."""

    def now(self) -> float:
        """Epoch seconds: for timestamps that are stored or compared across processes."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards: for intervals and deadlines only."""
        ...

    def sleep(self, seconds: float, stop: threading.Event) -> bool:
        """Wait ``seconds`` or until ``stop`` is set; return True if stopped."""
        ...


# Waits up to this long use time.sleep and check ``stop`` after: a thousand senders each
# calling stop.wait would all contend on the Event's one lock, and Condition.wait removes its
# waiter from a list in O(waiters) on every timeout. Longer waits use stop.wait.
SHORT_SLEEP_S = 0.02


class RealClock:
    """Wall-clock time. A sleep longer than ``SHORT_SLEEP_S`` is ``stop.wait`` and ends at
    once when ``stop`` is set; a shorter one may finish before noticing the stop."""

    # The system's functions themselves, not methods calling them: a worker reads the
    # clock several times a send.
    now = staticmethod(time.time)
    monotonic = staticmethod(time.monotonic)

    def sleep(self, seconds: float, stop: threading.Event) -> bool:
        if seconds <= 0:
            return stop.is_set()
        if seconds <= SHORT_SLEEP_S:
            time.sleep(seconds)
            return stop.is_set()
        return stop.wait(seconds)


class VirtualClock:
    """A clock that moves only when told to; for single-threaded use (tests, virtual mode).

    ``sleep`` advances instantly unless ``stop`` is already set, in which case time stands
    still and it reports the stop, as an interrupted real sleep would.
    """

    def __init__(self, start_s: float = VIRTUAL_EPOCH_S) -> None:
        self._now = start_s

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward; raises ``ValueError`` for a negative move."""
        if seconds < 0:
            raise ValueError(f"cannot move a VirtualClock backwards (got {seconds!r} s)")
        self._now += seconds

    def advance_to(self, when: float) -> None:
        """Move time forward to ``when``; raises ``ValueError`` if that is in the past."""
        self.advance(when - self._now)

    def sleep(self, seconds: float, stop: threading.Event) -> bool:
        if stop.is_set():
            return True
        self.advance(max(0.0, seconds))
        return stop.is_set()
