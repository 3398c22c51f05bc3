"""Who is asking: the bearer token of a ``/v1`` request names its tenant.

Every ``/v1`` route depends on ``tenant_service``: without ``Authorization: Bearer <API
key>`` the answer is 401 with a ``WWW-Authenticate`` challenge, and with a key the route
gets the service's view of that key's tenant, so another tenant's messages do not exist
for it (404, with the same words as an unknown id).

Looking the key up reads the store, so it blocks; ``bearer_token`` checks only that a
token was sent (on the event loop), leaving the lookup to a caller that can do it in the
same thread-pool trip as its own store work (submit: issue 12's benchmark).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sms_sim.api.problems import BEARER_CHALLENGE, STORE_UNAVAILABLE, UNAUTHORIZED, ProblemError
from sms_sim.clock import Clock
from sms_sim.dispatch.service import DispatchService
from sms_sim.dispatch.validation import InvalidRequestError

__all__ = ["BEARER", "operator_service", "app_clock", "bearer_token", "BearerToken",
           "bearer_from_header", "tenant_view", "tenant_service", "TenantService",
           "provider_service", "ProviderService", "known_query", "refuse_unknown_query",
           "query_names", "asks_for_key"]

BEARER = HTTPBearer(auto_error=False, scheme_name="bearer", bearerFormat="sms_sim API key",
                    description="An API key, `smsk_<key id>_<secret>`, from `sms_sim apikey "
                                "create --tenant NAME`; it acts for that tenant alone.")


def operator_service(request: Request) -> DispatchService:
    """The app's service, which sees every tenant (for health and metrics): 503 before the
    app has started (its store is opened at startup)."""
    service = getattr(request.app.state, "service", None)
    if not isinstance(service, DispatchService):
        raise ProblemError(STORE_UNAVAILABLE, "the store is not open yet (the app is starting "
                                              "or stopping)", headers={"Retry-After": "1"})
    return service


def app_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


async def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> str:
    """The bearer token sent, not yet checked against the store; 401 with a challenge
    when there is none. Async: it reads only the request."""
    if credentials is None:
        raise _no_token()
    return credentials.credentials


def bearer_from_header(authorization: str | None) -> str:
    """What ``bearer_token`` answers for this ``Authorization`` header, read by hand as
    ``BEARER`` reads it (the scheme in any case, the token stripped): for a route that
    reads its own parameters (``messages``' submit)."""
    token = _bearer(authorization)
    if token is None:
        raise _no_token()
    return token


def _bearer(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if token and scheme.lower() == "bearer" else None


def _no_token() -> ProblemError:
    return ProblemError(UNAUTHORIZED, "send Authorization: Bearer <API key>",
                        headers={"WWW-Authenticate": BEARER_CHALLENGE})


BearerToken = Annotated[str, Depends(bearer_token)]


def tenant_view(service: DispatchService, token: str) -> DispatchService:
    """``service`` as the tenant of the key ``token`` sees it (blocking: it reads the
    key's record); ``UnauthorizedError``/``ForbiddenError`` for a key that may not."""
    return service.for_tenant(service.authenticate(token))


def tenant_service(request: Request, token: BearerToken) -> DispatchService:
    """The service as the request's tenant sees it (blocking: it reads the key's record)."""
    return tenant_view(operator_service(request), token)


TenantService = Annotated[DispatchService, Depends(tenant_service)]


def provider_service(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> DispatchService:
    """The operator's service for a request made with a provider key (``apikey create
    --provider``): 401 without a valid key, 403 (``ForbiddenError``) for a tenant's key."""
    if credentials is None:
        raise ProblemError(UNAUTHORIZED, "send Authorization: Bearer <provider API key>",
                           headers={"WWW-Authenticate": BEARER_CHALLENGE})
    service = operator_service(request)
    service.authenticate_provider(credentials.credentials)
    return service


ProviderService = Annotated[DispatchService, Depends(provider_service)]


async def known_query(request: Request) -> None:
    """Refuse a query parameter the route does not take, or one given twice (422 naming
    it), once the request carries a key if the route needs one (401 first): a misspelt
    ``?limt=5`` silently ignored would answer a different question than was asked, and of
    ``?after=5&after=900`` FastAPI would quietly use the last (every parameter here takes
    one value). Async: it reads only the request, and a plain function would cost every
    request a trip through the thread pool."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    if _bearer(request.headers.get("authorization")) is None and asks_for_key(dependant):
        return  # 401 comes first: the route's key check answers, whatever the query
    refuse_unknown_query(request, query_names(dependant))


def refuse_unknown_query(request: Request, known: Collection[str]) -> None:
    """``known_query``'s check, for the query parameters ``known`` (``query_names``)."""
    if not request.scope.get("query_string"):
        return  # the common case: no query at all
    for name in request.query_params:
        if name not in known:
            raise InvalidRequestError(
                f"query parameter {name!r} is not one this operation takes"
                + (f" (it takes {', '.join(sorted(known))})" if known else ""))
        if len(request.query_params.getlist(name)) > 1:
            raise InvalidRequestError(f"query parameter {name!r} is given more than once")


def asks_for_key(dependant: Dependant) -> bool:
    """Whether a route (or one of its dependencies) reads the bearer key."""
    return any(sub.call is BEARER or asks_for_key(sub) for sub in dependant.dependencies)


def query_names(dependant: Dependant) -> set[str]:
    """The query parameters a route declares, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= query_names(sub)
    return names
