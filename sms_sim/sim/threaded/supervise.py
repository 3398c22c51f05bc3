"""The one thread group of the threaded modes: start, guard, wait, join within one budget.

Both the threaded simulation and the durable worker run as a handful of named threads under
one ``stop`` Event. What they share is the life cycle, so it is written once here:

* every thread runs under one guard: an exception is logged (one line for an ``SmsSimError``,
  which is a refusal such as a database error; the traceback for anything else, which is a
  bug), the thread's name is recorded, and ``stop`` is set, so a thread never dies silently;
* ``wait`` blocks the calling thread until the run should end and says why;
* ``join`` waits for threads against one deadline computed once by ``begin_shutdown``: sends
  in flight get ``grace_s``, then ``abort`` is set (or at once on a second stop request) and
  the threads get a last ``ABORT_BUDGET_S`` before they are reported alive by name.

Threads are daemons only as a safety net; correctness never depends on it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from sms_sim.clock import Clock
from sms_sim.errors import SmsSimError
from sms_sim.report import StopReason
from sms_sim.sim.threaded.limits import ThreadStartError

__all__ = ["ThreadGroup", "DEFAULT_GRACE_S", "ABORT_BUDGET_S", "JOIN_SLICE_S"]

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 5.0
# After the grace period (or a second stop request) in-flight sends are aborted; threads
# then have this long to exit before they are reported alive.
ABORT_BUDGET_S = 2.0
JOIN_SLICE_S = 0.05  # granularity at which waits notice a stop request or a failure


class ThreadGroup:
    """Named threads sharing one ``stop`` (end work) and one ``abort`` (cut sends short).

    ``stop_requests`` is the caller's count of stop requests (the CLI's signal count): one
    ends the run gracefully, two abort sends in flight. ``on_failure`` runs on the failing
    thread after ``stop`` is set (the worker uses it to wake its dispatcher). Thread-safe:
    guards on any thread record failures under a lock; everything else is for the one
    thread that owns the group.
    """

    def __init__(
        self,
        *,
        stop: threading.Event,
        abort: threading.Event,
        clock: Clock,
        stop_requests: Callable[[], int] = lambda: 0,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self.stop = stop
        self.abort = abort
        self._clock = clock
        self._requests = stop_requests
        self._on_failure = on_failure
        self._lock = threading.Lock()
        self._failed: list[str] = []
        self._threads: dict[str, threading.Thread] = {}
        self._grace_until = self._join_until = float("inf")

    @property
    def failed(self) -> tuple[str, ...]:
        """Names of the threads that died of an exception, in the order they died."""
        with self._lock:
            return tuple(self._failed)

    def start(self, name: str, target: Callable[[], None]) -> threading.Thread:
        """Start ``target`` on a daemon thread called ``name`` under the group's guard.

        Raises ``ThreadStartError`` when the OS refuses the thread ("can't start new
        thread"); the threads started before it keep running, and stopping them is the
        caller's part (it knows how to release them)."""
        if name in self._threads:
            raise ValueError(f"thread name {name!r} is already in this group")
        thread = threading.Thread(target=self._guarded(target, name), name=name, daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # the interpreter's "can't start new thread"
            raise ThreadStartError(
                f"this host refused to start thread {name} after {len(self._threads)} "
                f"others ({exc}); use fewer senders"
            ) from exc
        self._threads[name] = thread
        return thread

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the threads started so far, in start order."""
        return tuple(self._threads)

    def _guarded(self, target: Callable[[], None], name: str) -> Callable[[], None]:
        def guarded() -> None:
            try:
                target()
            except Exception as exc:
                if isinstance(exc, SmsSimError):  # a refusal (the database, say): one line
                    log.error("thread %s stopped: %s; stopping the run", name, exc)
                else:  # a bug: keep the traceback
                    log.exception("thread %s failed; stopping the run", name)
                with self._lock:
                    self._failed.append(name)
                self.stop.set()
                if self._on_failure is not None:
                    self._on_failure()

        return guarded

    def wait(
        self,
        *,
        finished: Callable[[], bool],
        watch: Callable[[], threading.Thread | None],
        output_closed: Callable[[], bool] = lambda: False,
        end_at: float | None = None,
    ) -> StopReason:
        """Block until the run should end and say why (checked in this order): a thread
        failed, the output was closed, a stop request came, ``end_at`` (monotonic) passed,
        or ``finished()``. Joins ``watch()`` (a thread whose end is likely what finishes
        the run) in slices, so completion is seen at once rather than at the next poll.
        """
        clock = self._clock
        while True:
            if self.failed:
                return StopReason.ERROR
            if output_closed():
                return StopReason.OUTPUT_CLOSED
            if self._requests() > 0:
                return StopReason.SIGNAL
            now = clock.monotonic()
            if end_at is not None and now >= end_at:
                return StopReason.DURATION
            if finished():
                return StopReason.COMPLETED
            timeout = JOIN_SLICE_S if end_at is None else max(0.0, min(JOIN_SLICE_S, end_at - now))
            thread = watch()
            if thread is None:
                self.stop.wait(timeout)
            else:
                thread.join(timeout)

    def begin_shutdown(self, grace_s: float) -> None:
        """Set ``stop`` and fix the one join budget: ``grace_s`` for sends in flight, then
        ``ABORT_BUDGET_S`` after ``abort``."""
        self.stop.set()
        self._grace_until = self._clock.monotonic() + grace_s
        self._join_until = self._grace_until + ABORT_BUDGET_S

    def _escalate(self) -> None:
        if not self.abort.is_set() and (
            self._requests() >= 2 or self._clock.monotonic() >= self._grace_until
        ):
            self.abort.set()

    def join(self, names: Sequence[str]) -> list[str]:
        """Join these threads, in order, within the budget ``begin_shutdown`` fixed;
        returns the names of those still alive. Sets ``abort`` when the grace period runs
        out or a second stop request arrives meanwhile."""
        clock = self._clock
        for name in names:
            thread = self._threads[name]
            while thread.is_alive():
                left = self._join_until - clock.monotonic()
                if left <= 0:
                    break
                self._escalate()
                thread.join(min(JOIN_SLICE_S, left))
        return [name for name in names if self._threads[name].is_alive()]

    def is_alive(self, name: str) -> bool:
        return self._threads[name].is_alive()

    def thread(self, name: str) -> threading.Thread:
        return self._threads[name]
