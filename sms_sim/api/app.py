"""The app factory: one FastAPI app over one store, with no state outside the app.

The store is opened when the app starts (its lifespan) and closed when it stops, with
``create=True``: the server creates a missing SQLite database at startup, as ``init`` does,
instead of on the first submit, so a server that started is a server that can take work,
and a typo in the URL shows up as a new empty file next to where the operator looked
rather than as a request that fails later. Several apps may live in one process (tests):
each has its own service, clock and metrics registry, on ``app.state``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.concurrency import run_in_threadpool

from sms_sim.api import dead_letters, messages, operations, optouts, receipts
from sms_sim.api.auth import known_query
from sms_sim.api.dashboard import dashboard_router
from sms_sim.api.docs import install_docs
from sms_sim.api.head import HeadAsGet
from sms_sim.api.metrics import ApiMetrics, LatencyMiddleware
from sms_sim.api.openapi import DESCRIPTION, install_openapi
from sms_sim.api.problems import install_problem_handlers
from sms_sim.clock import Clock, RealClock
from sms_sim.dispatch.service import DispatchService
from sms_sim.dispatch.stores import is_transient, open_store
from sms_sim.version import __version__

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def _open(store_url: str, clock: Clock) -> DispatchService:
    if is_transient(store_url):
        log.warning("serving %r: messages last only as long as this process, and each "
                    "worker process has its own", store_url)
    return DispatchService(open_store(store_url, create=True), clock)


def create_app(store_url: str, *, clock: Clock | None = None,
               service: DispatchService | None = None) -> FastAPI:
    """The HTTP API over the store at ``store_url`` (see ``stores.open_store``).

    The store is opened at startup and closed at shutdown. ``service``, if given, is used
    instead (``store_url`` then only names it) and left open: its owner closes it. ``clock``
    (default the real one) stamps every time the API records and times each request.
    """
    used_clock = clock or RealClock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if service is not None:
            yield
            return
        opened = await run_in_threadpool(_open, store_url, used_clock)
        app.state.service = opened
        try:
            yield
        finally:
            app.state.service = None
            await run_in_threadpool(opened.close)

    app = FastAPI(title="sms_sim", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json",
                  # A 307 to the path without its slash is a silent no-op for a client
                  # that does not follow redirects (``curl -X POST`` exits 0 on it): a 404
                  # that names the right path instead (``problems``).
                  redirect_slashes=False)
    app.state.store_url = store_url
    app.state.clock = used_clock
    app.state.service = service
    app.state.metrics = ApiMetrics(lambda: app.state.service)
    app.state.readiness = operations.ReadinessProbe()
    app.add_middleware(LatencyMiddleware, metrics=app.state.metrics, clock=used_clock)
    app.add_middleware(HeadAsGet)  # outermost: a HEAD is timed and routed as its GET
    install_problem_handlers(app)
    # The API's operations refuse a query parameter they do not take (``known_query``);
    # probes and pages ignore one (a cache-busting ``?t=`` on /healthz must not fail it;
    # the dashboard reads its own ``status``, ``before`` and ``after``).
    for router in (messages.router, dead_letters.router, optouts.router, receipts.router):
        app.include_router(router, dependencies=[Depends(known_query)])
    app.include_router(operations.router)
    app.include_router(dashboard_router())
    install_docs(app)
    install_openapi(app)
    return app
