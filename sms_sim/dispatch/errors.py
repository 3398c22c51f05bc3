"""The dispatch engine's typed errors: what a store or the service refuses, and why.

The edges map them (the CLI to exit codes, an HTTP API to statuses); every message is one
line. ``InvalidRequestError`` (a bad request, before any store is asked) lives with the
checks in ``validation``.
"""

from __future__ import annotations

from sms_sim.errors import SmsSimError

__all__ = [
    "StoreError",
    "StoreBusyError",
    "NoStoreError",
    "StoreDamagedError",
    "NotFoundError",
    "ConflictError",
    "KeyReusedError",
    "StillSubmittingError",
    "LockedError",
]


class StoreError(SmsSimError):
    """The store could not do what was asked (disk full, read-only, not an sms_sim database).

    Wraps the driver's exception (``raise ... from exc``); the message is one line.
    """


class NoStoreError(StoreError):
    """Nothing is stored there yet: no database file, or a database without the sms_sim
    schema. An edge that only looks (is this a repeat?) may take it for "nothing known";
    every other refusal of the store is a real failure."""


class StoreBusyError(StoreError):
    """Another connection held the store's write lock for longer than the store waits.

    Transient by nature: a worker logs it and tries again, it never exits for it.
    """


class StoreDamagedError(StoreError):
    """The database file is damaged (corrupt pages, or no longer a database at all).

    Never retried: every command stops with one line, and ``sms_sim check`` says more.
    ``reason``, when set, is the database's own words without the advice around them
    (``check`` itself must not advise running ``check``).
    """

    reason: str | None = None


class NotFoundError(SmsSimError, LookupError):
    """No message has the given id."""


class ConflictError(SmsSimError):
    """A request contradicts the stored state: an edit named a version other than the current
    one, or a submit reused an idempotency key for a different message. The message names
    both sides."""


class KeyReusedError(ConflictError):
    """A submit reused an idempotency key for a different request (content, recipients, time
    or priority): nothing was created. An HTTP edge answers 422, as the IETF draft says."""


class StillSubmittingError(ConflictError):
    """A submit repeated an idempotency key whose first submit has not finished: nothing was
    created, and the repeat may be sent again later. An HTTP edge answers 409."""


class LockedError(SmsSimError):
    """An edit was refused because the message is no longer ``scheduled``."""
