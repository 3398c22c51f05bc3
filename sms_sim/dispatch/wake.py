"""Wake-ups pushed by a store: an optional capability, so idle workers need not poll.

A worker with nothing due sleeps until the next due time, at most ``idle_recheck_s``, because
another process may submit meanwhile. A store that can tell it so (PostgreSQL's
``LISTEN/NOTIFY``) lets that cap be long without delaying new work: the store sends a signal
when work may have appeared or moved earlier (a submit, an edit, a cancel, a requeue; never
per delivery), and the worker's listener thread turns it into the dispatcher's ``wake``
event. Stores without the capability (memory, SQLite) change nothing: the worker polls at
``idle_recheck_s`` as before.

A channel may be down (the listening connection lost, or none to be had behind a pooler);
while it is, ``is_listening`` is False and the dispatcher caps its idle wait at
``DispatchConfig.fallback_poll_s``, so a lost connection costs latency, never work. A channel
sets ``wake`` whenever it goes down or comes back, so a waiting dispatcher recomputes its wait
at once (and looks for what was submitted while nobody listened).

This is not part of ``DispatchStore``: nothing in the contract depends on it, and a store
that does not offer it is complete.
"""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

__all__ = ["WakeChannel", "WakeSource", "wake_channel_of", "idle_recheck_for",
           "WOKEN_IDLE_RECHECK_S"]

# An idle worker's longest wait when its store wakes it on every submit, edit, cancel and
# requeue: what is left to look for then is a lease another worker took after this one went
# idle and that ran out (its holder died), rescued within this long of its end. With the
# 0.05 s meant for stores that cannot wake anyone, idle workers claimed 20 times a second.
WOKEN_IDLE_RECHECK_S = 5.0


class WakeChannel(Protocol):
    """One listener's connection to a store's wake-up signal.

    ``run`` is a thread's body (the worker's ``listener`` thread); ``is_listening`` and
    ``close`` may be called from any thread.
    """

    def run(self, wake: threading.Event) -> None:
        """Listen until ``close``: set ``wake`` on every signal, and whenever listening stops
        or (re)starts. Reconnects by itself with backoff; returns only after ``close`` and
        raises nothing for a lost or refused connection (it logs one line per outage)."""
        ...

    def is_listening(self) -> bool:
        """True while a signal sent now would reach ``run``'s ``wake``."""
        ...

    def close(self) -> None:
        """Make ``run`` return soon (at once if it is waiting); idempotent."""
        ...


@runtime_checkable
class WakeSource(Protocol):
    """A store that can push wake-ups (``PostgresStore``)."""

    def wake_channel(self) -> WakeChannel | None:
        """A new channel for one worker, or None when this store was opened without one
        (behind a transaction-pooling PgBouncer, where a listening session is not kept)."""
        ...


def wake_channel_of(store: object) -> WakeChannel | None:
    """``store``'s new wake channel if it offers one, else None (poll)."""
    return store.wake_channel() if isinstance(store, WakeSource) else None


def idle_recheck_for(store: object, polling_s: float) -> float:
    """The default longest idle wait over ``store``: ``WOKEN_IDLE_RECHECK_S`` when it wakes
    its workers, else ``polling_s``."""
    channel = wake_channel_of(store)
    if channel is None:
        return polling_s
    channel.close()
    return WOKEN_IDLE_RECHECK_S
