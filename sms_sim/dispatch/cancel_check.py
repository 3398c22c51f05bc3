"""The re-check before every send that makes a cancel act at once.

A worker holds claimed deliveries for a while before it sends them. Without a re-check, 140
SMS went out after "cancelled": they were queued in a worker, not being sent. So each send
asks ``CancelCheck.is_cancelled`` just before it reaches the provider, and the answer comes
from a store read that began after the question was asked: once a cancel has committed, only
sends that had already passed their check (at most one per sender) can still go out.

Concurrent askers share one read (the store is asked about every message any of them holds),
so the cost is one small read per round of sends, not one per send. A message once seen
cancelled stays cancelled: it is never read again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection

__all__ = ["CancelCheck"]


class CancelCheck:
    """Thread-safe; ``read`` is the store's ``cancelled(message_ids)``."""

    def __init__(self, read: Callable[[Collection[int]], set[int]]) -> None:
        self._read = read
        self._cond = threading.Condition()
        self._known: set[int] = set()  # seen cancelled: final
        self._asked: set[int] = set()  # to ask about in the next read
        self._started = 0  # reads begun
        self._finished = 0  # the newest read whose answer is in ``_known``
        self._reading = False

    def is_cancelled(self, message_id: int) -> bool:
        """True if ``message_id`` was cancelled before this call (or during it); raises what
        the store raises if it cannot be read."""
        with self._cond:
            if message_id in self._known:
                return True
            self._asked.add(message_id)
            needed = self._started + 1  # a read that begins after this moment
            while self._finished < needed:
                if self._reading:
                    self._cond.wait()
                    continue
                self._read_for_all()
            return message_id in self._known

    def _read_for_all(self) -> None:
        """Run one read for everything asked so far (condition held on entry and exit)."""
        self._reading = True
        self._started += 1
        ticket = self._started
        ids, self._asked = self._asked, set()
        self._cond.release()
        try:
            found = self._read(ids)
        except BaseException:
            self._cond.acquire()
            self._asked |= ids  # whoever reads next asks again
            self._reading = False
            self._cond.notify_all()
            raise
        self._cond.acquire()
        self._known |= found
        self._finished = ticket
        self._reading = False
        self._cond.notify_all()
