"""The operator dashboard: ``GET /`` (a tenant's messages with live progress) and
``GET /messages/{id}`` (one message and its deliveries), behind a sign-in with an API key.

The key is entered once and kept in a session cookie: HttpOnly (no script can read it),
SameSite=Strict (no other site's page can make the browser send it), without Max-Age (it
ends with the browser session), Secure when the page came over HTTPS. Every request checks
it again with ``service.authenticate``, so a revoked key signs the browser out at its next
reload, and the same key works on every server process (nothing is kept in memory). Sign-in
and sign-out refuse a POST whose ``Origin`` names another host than the request's ``Host``
(a proxy in front must pass ``Host`` on unchanged).

Pages are scoped by ``service.for_tenant``: another tenant's message is the same 404 as a
message that does not exist. The store is read in FastAPI's thread pool (plain ``def``
routes), never on the event loop. None of these routes is in the OpenAPI document: they are
pages for people, not API operations.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from sms_sim.api.dashboard_html import dashboard_page, error_page, login_page, message_page
from sms_sim.dispatch.contract import DeliveryStatus, InvalidRequestError
from sms_sim.dispatch.errors import NotFoundError, StoreError
from sms_sim.dispatch.keys import UnauthorizedError
from sms_sim.dispatch.service import DispatchService
from sms_sim.dispatch.validation import parse_status

__all__ = ["dashboard_router", "SESSION_COOKIE", "MESSAGES_PER_PAGE", "DELIVERIES_PER_PAGE",
           "wants_page", "page_error"]

SESSION_COOKIE = "sms_sim_session"
MESSAGES_PER_PAGE = 25
DELIVERIES_PER_PAGE = 100
_ID = re.compile(r"[0-9]{1,18}")  # an id or cursor as the pages write it
_LOGIN_FORM_MAX_BYTES = 4096  # a key and a little form encoding
_RETRY_AFTER_S = 5
# No script at all, styles only inline, forms only to us, never framed.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    # Not "no-referrer": Chromium then sends "Origin: null" with our own sign-in form,
    # which the same-origin check below would have to accept from anyone.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # a tenant's messages must not stay in a shared cache
}


_R = TypeVar("_R", bound=Response)


@dataclass(frozen=True, slots=True)
class _Session:
    tenant: str
    service: DispatchService  # scoped to ``tenant``


def dashboard_router() -> APIRouter:
    """The dashboard's routes; the app keeps its ``DispatchService`` on ``app.state.service``."""
    router = APIRouter(include_in_schema=False)

    @router.get("/", response_class=HTMLResponse)
    def messages(request: Request) -> Response:
        return _signed_in(request, lambda session: _messages(request, session))

    @router.get("/messages/{message_id}", response_class=HTMLResponse)
    def message(request: Request, message_id: str) -> Response:
        return _signed_in(request, lambda session: _message(request, session, message_id))

    @router.post("/login")
    async def login(request: Request) -> Response:
        if not _same_origin(request):
            return _html(error_page("refused", "sign-in from another site is refused"), 403)
        body = await request.body()
        if len(body) > _LOGIN_FORM_MAX_BYTES:
            return _html(login_page("that is not an API key (too long)"), 400)
        fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        token = (fields.get("key") or [""])[0].strip()
        if not token:
            return _html(login_page("enter an API key"), 400)
        try:
            await run_in_threadpool(_root(request).authenticate, token)
        except UnauthorizedError:
            return _html(login_page("that API key is not valid (unknown or revoked)"), 401)
        except StoreError:
            return _unavailable()
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
        return _secured(response)

    @router.get("/login")
    @router.get("/logout")
    def back_to_the_dashboard() -> Response:
        """Typed into the address bar, or a bookmark: the page, which signs in if need be
        (signing out is a POST, so no link or image elsewhere can do it)."""
        return _secured(RedirectResponse("/", status_code=303))

    @router.post("/logout")
    def logout(request: Request) -> Response:
        if not _same_origin(request):
            return _html(error_page("refused", "sign-out from another site is refused"), 403)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return _secured(response)

    return router


def _root(request: Request) -> DispatchService:
    service = request.app.state.service
    if not isinstance(service, DispatchService):
        raise TypeError("app.state.service must be the app's DispatchService")
    return service


def _signed_in(request: Request, page: Callable[[_Session], Response]) -> Response:
    """``page`` for the tenant whose key the session cookie holds; the sign-in form when
    there is none or it no longer authenticates (then the cookie is cleared). Refusals of
    the store become pages: unknown message 404, bad query 400, store down 503."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return _html(login_page(), 200 if request.url.path == "/" else 401)
    try:
        tenant = _root(request).authenticate(token)
    except UnauthorizedError:
        response = _html(login_page("your API key is no longer valid: sign in again"), 401)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response
    except StoreError:
        return _unavailable()
    session = _Session(tenant=tenant, service=_root(request).for_tenant(tenant))
    try:
        return page(session)
    except NotFoundError as exc:
        return _html(error_page("not found", str(exc), tenant=tenant), 404)
    except InvalidRequestError as exc:
        return _html(error_page("bad request", str(exc), tenant=tenant), 400)
    except StoreError:
        return _unavailable()


def _messages(request: Request, session: _Session) -> Response:
    before = _query_int(request, "before")
    page = session.service.message_page(limit=MESSAGES_PER_PAGE, before=before)
    shown = [(view, session.service.progress(view)) for view in page.messages]
    counts = session.service.delivery_counts()
    return _html(dashboard_page(session.tenant, shown, counts, next_before=page.next_before,
                                paged=before is not None))


def _message(request: Request, session: _Session, message_id: str) -> Response:
    # ASCII digits only, as the API's ids: ``int()`` also reads "1_5", " 1", "+1" and
    # other scripts' digits, which gave one message several addresses.
    if not _ID.fullmatch(message_id):
        raise NotFoundError(f"no message with id {message_id!r}")
    view = session.service.get(int(message_id))
    text = request.query_params.get("status")
    status = None if not text else parse_status(DeliveryStatus, text)
    after = _query_int(request, "after")
    found = session.service.deliveries(view.id, status=status, limit=DELIVERIES_PER_PAGE + 1,
                                       after=after)
    shown = found[:DELIVERIES_PER_PAGE]
    next_after = shown[-1].id if len(found) > DELIVERIES_PER_PAGE else None
    return _html(message_page(session.tenant, view, session.service.progress(view), shown,
                              status=status, next_after=next_after, paged=after is not None))


def _query_int(request: Request, name: str) -> int | None:
    """A cursor from the query string (a non-negative integer), None when absent."""
    text = request.query_params.get(name)
    if not text:
        return None
    if not _ID.fullmatch(text):
        raise InvalidRequestError(f"{name} must be a delivery or message id (got {text!r})")
    return int(text)


def _same_origin(request: Request) -> bool:
    """False when the browser says the form was posted from a page of another site: its
    ``Origin`` names another host than the one asked (the scheme is not compared, so a
    proxy that ends TLS in front of us changes nothing). No ``Origin``: not a browser."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urllib.parse.urlsplit(origin).netloc == request.headers.get("host")


def wants_page(request: Request) -> bool:
    """Whether a refusal of ``request`` should be a page, not a problem document: a
    browser's navigation (it asks for HTML) outside the API's ``/v1``."""
    return (not request.url.path.startswith("/v1/")
            and "text/html" in request.headers.get("accept", ""))


def page_error(title: str, detail: str, status_code: int,
               headers: dict[str, str] | None = None) -> HTMLResponse:
    """An error page as the dashboard's own (its headers included)."""
    response = _html(error_page(title, detail), status_code)
    response.headers.update(headers or {})
    return response


def _html(text: str, status_code: int = 200) -> HTMLResponse:
    return _secured(HTMLResponse(text, status_code=status_code))


def _secured(response: _R) -> _R:
    response.headers.update(_HEADERS)
    return response


def _unavailable() -> HTMLResponse:
    response = _html(error_page("unavailable", "the message store cannot be reached just "
                                               "now; this page will work again once it can"),
                     503)
    response.headers["Retry-After"] = str(_RETRY_AFTER_S)
    return response
