"""What operators and their tools ask without an API key: is the process up, can it take
work, what do the numbers say, and what does a problem type mean.

``/healthz`` answers from the process alone (a liveness probe must not fail because the
database is slow); ``/readyz`` asks the store to prove it takes writes, and is 503 with
``Retry-After`` when it cannot, so a load balancer sends submits elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sms_sim.api.auth import operator_service
from sms_sim.api.metrics import ApiMetrics
from sms_sim.api.openapi import problem_responses
from sms_sim.api.problems import (
    PROBLEM_TYPES,
    STORE_RETRY_AFTER_S,
    STORE_UNAVAILABLE,
    ProblemError,
)
from sms_sim.api.schemas import HealthOut
from sms_sim.api.times import rfc3339, rfc3339_or_none
from sms_sim.dispatch.service import DispatchService, Health

__all__ = ["router", "ReadinessProbe", "READY_WITHIN_S"]

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])
# A readiness probe is asked with a timeout of its own (Kubernetes' default is 1 s): it is
# answered within this, whatever writer holds the store (the store's own wait for a lock
# is 30 s, for submits that may queue behind a long one).
READY_WITHIN_S = 1.0
_SLUGS = {kind.slug: kind for kind in PROBLEM_TYPES}


class ReadinessProbe:
    """``/readyz``'s answer within ``within_s``, whatever the store does: the read before
    the write check waits for the store as long as any request (30 s for a lock held on
    PostgreSQL, or for a server that is down), which a probe with a timeout of its own saw
    as a hang. One check runs at a time (an app's probes join it), so a store that does not
    answer holds one thread, not one per probe."""

    def __init__(self, within_s: float = READY_WITHIN_S) -> None:
        self.within_s = within_s
        self._running: asyncio.Future[Health] | None = None

    async def ask(self, service: DispatchService) -> Health | None:
        """The store's readiness, or None if it did not answer in time."""
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(
                run_in_threadpool(service.ready, within_s=self.within_s))
        try:
            return await asyncio.wait_for(asyncio.shield(self._running), self.within_s)
        except TimeoutError:
            return None


@router.get("/healthz", response_model=HealthOut, summary="Liveness: the process answers",
            operation_id="healthz", responses=problem_responses(),
            response_model_exclude_none=True)
def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get("/readyz", response_model=HealthOut, summary="Readiness: the store takes writes",
            operation_id="readyz", responses=problem_responses(503),
            response_model_exclude_none=True)
async def readyz(request: Request,
                 service: Annotated[DispatchService, Depends(operator_service)]) -> HealthOut:
    probe: ReadinessProbe = request.app.state.readiness
    health = await probe.ask(service)
    if health is None:
        raise ProblemError(STORE_UNAVAILABLE, f"the store did not answer within "
                                              f"{probe.within_s:g} s",
                           headers={"Retry-After": str(STORE_RETRY_AFTER_S)})
    if not health.ok:
        log.warning("not ready: %s", health.error)
        raise ProblemError(STORE_UNAVAILABLE, "the store does not take writes now (the "
                                              "server log says why)",
                           headers={"Retry-After": str(STORE_RETRY_AFTER_S)})
    return HealthOut(status="ready", checked_at=rfc3339(health.checked_at),
                     next_due_at=rfc3339_or_none(health.next_due_at), behind_s=health.behind_s)


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics",
            operation_id="metrics", responses={
                **problem_responses(),
                200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}})
def metrics(request: Request) -> PlainTextResponse:
    """Deliveries by status, leased claims, the oldest due work's age (read from the store
    now), and request latency by route, in the Prometheus text format."""
    found: ApiMetrics = request.app.state.metrics
    return PlainTextResponse(generate_latest(found.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/problems/{slug}", include_in_schema=False)
def problem_type(slug: Annotated[str, Path()]) -> PlainTextResponse:
    """What a problem ``type`` means, where its relative URI resolves."""
    kind = _SLUGS.get(slug)
    if kind is None:
        raise ProblemError(_SLUGS["not-found"], f"no problem type {slug!r}")
    return PlainTextResponse(f"{kind.title} (HTTP {kind.status})\n\n{kind.meaning}\n")
