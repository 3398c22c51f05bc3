"""Concrete ``DispatchStore`` implementations: ``MemoryStore`` (reference) and ``SqliteStore``."""

from sms_sim.stores.memory import MemoryStore
from sms_sim.stores.sqlite import SqliteStore

__all__ = ["MemoryStore", "SqliteStore"]
