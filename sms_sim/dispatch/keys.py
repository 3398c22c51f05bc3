"""API keys: how a request proves which tenant it acts for.

A key is shown once, when it is issued, as a token ``smsk_<key id>_<secret>``; stores keep
the key id, the tenant and a SHA-256 hash of the secret, never the secret. The secret is 32
random bytes from ``secrets``, so a plain hash is enough (a slow password hash protects
guessable secrets, and these are not guessable); comparison is constant-time. The key id
is public: it names the key in listings, logs and ``apikey revoke`` without revealing it.

A key has a role: a ``tenant`` key acts for its tenant on the message operations; a
``provider`` key (``apikey create --provider``) may only post delivery receipts, for any
tenant's deliveries (a worker sends every tenant's messages through one provider account,
and a receipt names its delivery by a key unique across tenants). Its tenant is recorded
but grants nothing. Each refuses the other's operations (``ForbiddenError``).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Protocol

from sms_sim.dispatch.tenants import validate_tenant
from sms_sim.dispatch.validation import InvalidRequestError
from sms_sim.errors import SmsSimError

__all__ = [
    "ApiKey",
    "ForbiddenError",
    "IssuedKey",
    "KeyRole",
    "KeyStore",
    "UnauthorizedError",
    "issue_key",
    "parse_token",
    "secret_matches",
    "validate_key_id",
]

_PREFIX = "smsk"
_KEY_ID_RE = re.compile(r"[0-9a-f]{12}")
_TOKEN_RE = re.compile(rf"{_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})")


class UnauthorizedError(SmsSimError):
    """A token is malformed, unknown or revoked. The message never repeats the token."""


class ForbiddenError(UnauthorizedError):
    """A valid key asked for an operation its role does not allow."""


class KeyRole(enum.StrEnum):
    TENANT = "tenant"  # the message operations of its tenant
    PROVIDER = "provider"  # delivery receipts only, for every tenant


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    key_id: str
    tenant: str
    created_at: float
    revoked_at: float | None = None
    role: KeyRole = KeyRole.TENANT

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedKey:
    """A key just issued, with the only copy of its token there will ever be."""

    key: ApiKey
    token: str


class KeyStore(Protocol):
    """Where API keys are kept: every ``DispatchStore``, in the same database as the
    messages they give access to. Each call is atomic, like the store's own."""

    def add_api_key(self, key: ApiKey, secret_hash: str) -> None:
        """Keep a new key; a key id already kept raises ``ConflictError``."""
        ...

    def api_key(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key and its secret's hash, or None if no key has this id."""
        ...

    def revoke_api_key(self, key_id: str, now: float) -> ApiKey:
        """Revoke a key from ``now`` on; a key already revoked keeps its first revocation
        time. Raises ``NotFoundError`` for an unknown key id."""
        ...

    def api_keys(self, *, tenant: str | None = None) -> list[ApiKey]:
        """Every key (of one tenant), oldest first, revoked ones included."""
        ...


def issue_key(tenant: str, now: float,
              role: KeyRole = KeyRole.TENANT) -> tuple[IssuedKey, str]:
    """A new key for ``tenant`` and the hash of its secret, which is what a store keeps."""
    key = ApiKey(key_id=secrets.token_hex(6), tenant=validate_tenant(tenant), created_at=now,
                 role=role)
    secret = secrets.token_urlsafe(32)
    return IssuedKey(key=key, token=f"{_PREFIX}_{key.key_id}_{secret}"), _hash(secret)


def parse_token(token: str) -> tuple[str, str]:
    """The key id and secret of a token; ``UnauthorizedError`` if it is not one."""
    found = _TOKEN_RE.fullmatch(token)
    if found is None:
        raise UnauthorizedError(f"not an sms_sim API key (expected {_PREFIX}_<key id>_<secret>)")
    return found.group(1), found.group(2)


def secret_matches(secret: str, secret_hash: str) -> bool:
    """Whether ``secret`` is the one hashed, compared in constant time."""
    return hmac.compare_digest(_hash(secret), secret_hash)


def validate_key_id(key_id: object) -> str:
    """A key id as ``apikey revoke`` takes it: 12 hex digits (the part after ``smsk_``)."""
    if not isinstance(key_id, str) or _KEY_ID_RE.fullmatch(key_id) is None:
        raise InvalidRequestError(f"key id must be 12 hex digits (got {key_id!r})")
    return key_id


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()
