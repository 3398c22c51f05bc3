"""Who is asking: the bearer token of a ``/v1`` request names its tenant.

Every ``/v1`` route depends on ``tenant_service``: without ``Authorization: Bearer <API
key>`` the answer is 401 with a ``WWW-Authenticate`` challenge, and with a key the route
gets the service's view of that key's tenant, so another tenant's messages do not exist
for it (404, with the same words as an unknown id).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sms_sim.api.problems import BEARER_CHALLENGE, STORE_UNAVAILABLE, UNAUTHORIZED, ProblemError
from sms_sim.clock import Clock
from sms_sim.dispatch.service import DispatchService
from sms_sim.dispatch.validation import InvalidRequestError

__all__ = ["BEARER", "operator_service", "app_clock", "tenant_service", "TenantService",
           "provider_service", "ProviderService", "known_query"]

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


def tenant_service(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> DispatchService:
    """The service as the request's tenant sees it (blocking: it reads the key's record)."""
    if credentials is None:
        raise ProblemError(UNAUTHORIZED, "send Authorization: Bearer <API key>",
                           headers={"WWW-Authenticate": BEARER_CHALLENGE})
    service = operator_service(request)
    return service.for_tenant(service.authenticate(credentials.credentials))


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
    it): a misspelt ``?limt=5`` silently ignored would answer a different question than was
    asked, and of ``?after=5&after=900`` FastAPI would quietly use the last (every
    parameter here takes one value). Async: it reads only the request, and a plain
    function would cost every request a trip through the thread pool."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = _query_names(dependant)
    for name in request.query_params:
        if name not in known:
            raise InvalidRequestError(
                f"query parameter {name!r} is not one this operation takes"
                + (f" (it takes {', '.join(sorted(known))})" if known else ""))
        if len(request.query_params.getlist(name)) > 1:
            raise InvalidRequestError(f"query parameter {name!r} is given more than once")


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names
