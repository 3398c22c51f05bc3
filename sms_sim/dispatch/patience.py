"""A worker's patience with its store: it is a daemon, and a store is sometimes busy.

A worker exited for good after 30 s waiting for SQLite's write lock, while a large submit
held it. Now a failing store call is logged and tried again with backoff; only a store that
fails every call, for reasons other than "busy", for longer than a stated limit ends the run.
A damaged store never reaches here: the dispatch loop lets ``StoreDamagedError`` through.
"""

from __future__ import annotations

import logging

from sms_sim.clock import Clock
from sms_sim.dispatch.errors import StoreBusyError, StoreError

__all__ = ["StorePatience", "STORE_RETRY_FIRST_S", "STORE_RETRY_CAP_S"]

log = logging.getLogger(__name__)

# The pause after a failed store call, doubling up to the cap while failures go on.
STORE_RETRY_FIRST_S = 0.1
STORE_RETRY_CAP_S = 5.0


class StorePatience:
    """Backoff and the outage limit for one worker (``owner``), on its ``clock``.

    Busy (the write lock held by a large submit or another process) never counts against
    ``limit_s``: a locked store is working, just not for us yet.
    """

    def __init__(self, clock: Clock, limit_s: float, owner: str) -> None:
        self._clock = clock
        self._limit_s = limit_s
        self._owner = owner
        self._failing = False
        self._since: float | None = None  # the first failure, other than busy, in a row
        self._pause_s = STORE_RETRY_FIRST_S

    def answered(self) -> None:
        """A store call succeeded: the backoff and the outage clock start again."""
        if self._failing:
            log.warning("%s: the store answers again", self._owner)
        self._failing = False
        self._since = None
        self._pause_s = STORE_RETRY_FIRST_S

    def failed(self, exc: StoreError) -> float:
        """The pause before the next try; re-raises ``exc`` once failures other than busy
        have lasted ``limit_s``."""
        now = self._clock.monotonic()
        self._failing = True
        if not isinstance(exc, StoreBusyError):
            if self._since is None:
                self._since = now
            elif now - self._since >= self._limit_s:
                log.error("%s: the store failed every call for %.0f s; giving up",
                          self._owner, now - self._since)
                raise exc
        log.warning("%s: %s; trying again in %.1f s", self._owner, exc, self._pause_s)
        pause_s, self._pause_s = self._pause_s, min(2 * self._pause_s, STORE_RETRY_CAP_S)
        return pause_s
