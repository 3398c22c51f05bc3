"""Concrete ``DispatchStore`` implementations: ``MemoryStore`` (reference) and ``SqliteStore``."""

from sms_sim.dispatch.stores.memory import MemoryStore
from sms_sim.dispatch.stores.sqlite.store import SqliteStore

__all__ = ["MemoryStore", "SqliteStore"]
