"""The ``KeyStore`` half of ``SqliteStore``: API keys in the ``api_keys`` table.

Helpers take an open connection inside the caller's transaction; none commits.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sms_sim.dispatch.errors import ConflictError, NotFoundError
from sms_sim.dispatch.keys import ApiKey, KeyRole

__all__ = ["add_key", "find_key", "revoke_key", "list_keys"]

_COLUMNS = "key_id, tenant, created_at, revoked_at, role"


def add_key(conn: sqlite3.Connection, key: ApiKey, secret_hash: str) -> None:
    inserted = conn.execute(
        "INSERT OR IGNORE INTO api_keys (key_id, tenant, secret_hash, created_at, revoked_at, "
        "role) VALUES (?, ?, ?, ?, ?, ?)",
        (key.key_id, key.tenant, secret_hash, key.created_at, key.revoked_at,
         str(key.role))).rowcount
    if not inserted:
        raise ConflictError(f"an API key with id {key.key_id!r} exists already")


def find_key(conn: sqlite3.Connection, key_id: str) -> tuple[ApiKey, str] | None:
    row = conn.execute(f"SELECT {_COLUMNS}, secret_hash FROM api_keys WHERE key_id = ?",
                       (key_id,)).fetchone()
    return None if row is None else (_key(row), str(row[5]))


def revoke_key(conn: sqlite3.Connection, key_id: str, now: float) -> ApiKey:
    conn.execute("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE key_id = ?",
                 (now, key_id))
    found = find_key(conn, key_id)
    if found is None:
        raise NotFoundError(f"no API key with id {key_id!r}")
    return found[0]


def list_keys(conn: sqlite3.Connection, tenant: str | None) -> list[ApiKey]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE ?1 IS NULL OR tenant = ?1 "
                        "ORDER BY created_at, key_id", (tenant,)).fetchall()
    return [_key(row) for row in rows]


def _key(row: tuple[Any, ...]) -> ApiKey:
    key_id, tenant, created_at, revoked_at, role = row[:5]
    return ApiKey(key_id=key_id, tenant=tenant, created_at=created_at, revoked_at=revoked_at,
                  role=KeyRole(role))
