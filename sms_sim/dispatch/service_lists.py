"""The operations of ``DispatchService`` on what surrounds the messages: API keys, each
tenant's opt-out list and delivery receipts (issue 14). ``DispatchService`` is made of
this and its message operations; see it for the errors every operation raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sms_sim.clock import Clock
from sms_sim.dispatch.contract import DispatchStore, DlrReport, DlrResult, OptOut, OptOutResult
from sms_sim.dispatch.keys import (
    ApiKey,
    ForbiddenError,
    IssuedKey,
    KeyRole,
    UnauthorizedError,
    issue_key,
    parse_token,
    secret_matches,
    validate_key_id,
)
from sms_sim.dispatch.optouts import validate_opt_out_phones
from sms_sim.dispatch.tenants import DEFAULT_TENANT, validate_tenant
from sms_sim.dispatch.validation import InvalidRequestError, validate_limit, validate_phone

__all__ = ["ListsService"]


class ListsService:
    """API keys, opt-outs and receipts over ``_store``, as ``_tenant`` (None: the operator)."""

    _store: DispatchStore
    _clock: Clock
    _tenant: str | None

    # --- API keys ------------------------------------------------------------------------

    def create_api_key(self, tenant: str, *, provider: bool = False) -> IssuedKey:
        """Issue a key for ``tenant`` (``provider``: a provider key, which may only post
        delivery receipts); its token is in the result and nowhere else, ever."""
        role = KeyRole.PROVIDER if provider else KeyRole.TENANT
        issued, secret_hash = issue_key(tenant, self._clock.now(), role)
        self._store.add_api_key(issued.key, secret_hash)
        return issued

    def revoke_api_key(self, key_id: str) -> ApiKey:
        """Refuse the key from now on (``authenticate`` raises); revoking twice is harmless.
        ``NotFoundError`` for an unknown key id."""
        return self._store.revoke_api_key(validate_key_id(key_id), self._clock.now())

    def api_keys(self) -> list[ApiKey]:
        """Every key (of this view's tenant), oldest first, revoked ones included."""
        return self._store.api_keys(tenant=self._tenant)

    def authenticate(self, token: str) -> str:
        """The tenant a tenant key's ``token`` acts for; ``UnauthorizedError`` (one line,
        never repeating the token) if it is malformed, unknown or revoked, and
        ``ForbiddenError`` for a provider key."""
        key = self._key(token)
        if key.role is not KeyRole.TENANT:
            raise ForbiddenError(f"API key {key.key_id} is a provider key: it may only post "
                                 "delivery receipts")
        return key.tenant

    def authenticate_provider(self, token: str) -> ApiKey:
        """The provider key ``token`` is; as ``authenticate``, and ``ForbiddenError`` for a
        tenant's key (a tenant must not report its own deliveries delivered)."""
        key = self._key(token)
        if key.role is not KeyRole.PROVIDER:
            raise ForbiddenError(f"API key {key.key_id} is a tenant's key; delivery receipts "
                                 "need a provider key (apikey create --provider)")
        return key

    def _key(self, token: str) -> ApiKey:
        key_id, secret = parse_token(token)
        found = self._store.api_key(key_id)
        if found is None or not secret_matches(secret, found[1]):
            raise UnauthorizedError("unknown API key")
        if found[0].is_revoked:
            raise UnauthorizedError(f"API key {key_id} was revoked")
        return found[0]

    # --- opt-outs ------------------------------------------------------------------------

    def add_opt_outs(self, phones: Iterable[object], *,
                     tenant: str | None = None) -> OptOutResult:
        """Put ``phones`` (any accepted form; each checked, repeats dropped) on the
        tenant's opt-out list: from the commit on none of them is sent to by the tenant's
        messages (not-yet-leased deliveries become ``suppressed`` at once; see
        ``OptOutStore.add_opt_outs``). Idempotent. ``tenant``: the operator's choice
        (default ``default``); a tenant's view always acts for its own."""
        numbers = validate_opt_out_phones(phones)
        return self._store.add_opt_outs(self._list_tenant(tenant), numbers, self._clock.now())

    def remove_opt_out(self, phone: object, *, tenant: str | None = None) -> bool:
        """Take ``phone`` off the list (False: it was not on it); what was suppressed stays
        suppressed."""
        return self._store.remove_opt_out(self._list_tenant(tenant), validate_phone(phone, 1))

    def opt_outs(self, *, after: str | None = None, limit: int = 1000,
                 tenant: str | None = None) -> list[OptOut]:
        """Up to ``limit`` listed numbers in stored-form order, after the cursor
        ``after`` (the last number of the page before, in either form: +15550300005 is
        555-030-0005, as everywhere else)."""
        if after is not None:
            if not isinstance(after, str):
                raise InvalidRequestError(f"after must be a number as listed (got {after!r})")
            after = validate_phone(after, 1, where="after")
        return self._store.opt_outs(self._list_tenant(tenant), after=after,
                                    limit=validate_limit(limit))

    def _list_tenant(self, tenant: str | None) -> str:
        if self._tenant is not None:
            return self._tenant
        return DEFAULT_TENANT if tenant is None else validate_tenant(tenant)

    # --- delivery receipts -----------------------------------------------------------------

    def record_dlrs(self, reports: Sequence[DlrReport]) -> DlrResult:
        """Record delivery receipts (``DlrStore.record_dlrs``: idempotent, held when they
        arrive before the send is recorded, unknown keys reported), received now. Every
        tenant's: the operator's (and a provider key's), not a tenant view's."""
        if self._tenant is not None:
            raise InvalidRequestError("delivery receipts are the provider's to report, not "
                                      "a tenant's")
        return self._store.record_dlrs(list(reports), self._clock.now())
