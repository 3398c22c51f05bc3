"""Who is asking: the bearer token of a ``/v1`` request names its tenant.

Every ``/v1`` route depends on ``tenant_service``: without ``Authorization: Bearer <API
key>`` the answer is 401 with a ``WWW-Authenticate`` challenge, and with a key the route
gets the service's view of that key's tenant, so another tenant's messages do not exist
for it (404, with the same words as an unknown id).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sms_sim.api.problems import BEARER_CHALLENGE, STORE_UNAVAILABLE, UNAUTHORIZED, ProblemError
from sms_sim.clock import Clock
from sms_sim.dispatch.service import DispatchService

__all__ = ["BEARER", "operator_service", "app_clock", "tenant_service", "TenantService"]

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
