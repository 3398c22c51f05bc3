"""``/metrics`` for Prometheus: request latency, and the store's state read at each scrape.

Each app has its own ``CollectorRegistry`` (several apps in one process, as in tests, never
share or collide). The store's numbers are read when Prometheus scrapes, not kept up to
date between scrapes: deliveries by status (every tenant), how many are leased to workers
now, and how long the oldest due work has waited (what to alert on: it grows without bound
when no worker is claiming). A store that cannot be read gives ``sms_sim_store_up 0`` and
nothing else from it, never a failed scrape. Latency is labelled by route template
(``/v1/messages/{message_id}``), so ids never become label values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sms_sim.clock import Clock
from sms_sim.dispatch.contract import DeliveryStatus
from sms_sim.dispatch.errors import StoreError
from sms_sim.dispatch.service import DispatchService

__all__ = ["ApiMetrics", "LatencyMiddleware"]

log = logging.getLogger(__name__)

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                      10.0, 30.0)


class _StoreCollector(Collector):
    """The store's state, read at scrape time through ``service`` (None before startup)."""

    def __init__(self, service: Callable[[], DispatchService | None]) -> None:
        self._service = service

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Named without reading the store: registering must not touch it.
        return iter(self._families())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        service = self._service()
        up = GaugeMetricFamily("sms_sim_store_up", "1 if the store answered this scrape.")
        if service is None:
            up.add_metric([], 0)
            return iter([up])
        try:
            counts = service.delivery_counts()
            health = service.health()
        except StoreError as exc:
            log.warning("metrics: store unreadable: %s", exc)
            up.add_metric([], 0)
            return iter([up])
        up.add_metric([], 1 if health.ok else 0)
        deliveries, leased, behind = self._families()[1:]
        for status in DeliveryStatus:
            deliveries.add_metric([str(status)], counts.get(status, 0))
        leased.add_metric([], counts.get(DeliveryStatus.LEASED, 0))
        behind.add_metric([], health.behind_s)
        return iter([up, deliveries, leased, behind])

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily("sms_sim_store_up", "1 if the store answered this scrape."),
            GaugeMetricFamily("sms_sim_deliveries", "Deliveries by status, every tenant.",
                              labels=["status"]),
            GaugeMetricFamily("sms_sim_claims_leased",
                              "Deliveries leased to workers now (claimed, not yet settled)."),
            GaugeMetricFamily("sms_sim_oldest_due_age_seconds",
                              "How long the earliest due work has waited; 0 when none is "
                              "overdue."),
        ]


class ApiMetrics:
    """One app's registry: the latency histogram and the store collector."""

    def __init__(self, service: Callable[[], DispatchService | None]) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "sms_sim_http_request_duration_seconds", "HTTP request latency by route template.",
            ["method", "route", "status"], buckets=_LATENCY_BUCKETS_S, registry=self.registry)
        self.registry.register(_StoreCollector(service))


class LatencyMiddleware:
    """Times every HTTP request on the app's clock into ``ApiMetrics.latency``. Pure ASGI,
    so a streamed body passes through untouched."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics, clock: Clock) -> None:
        self.app = app
        self.metrics = metrics
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = self.clock.monotonic()
        status = 500  # unless a response starts: an exception escaping is answered 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # The router put the matched route in the scope; an unmatched path has none.
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.latency.labels(scope["method"], route, str(status)).observe(
                max(0.0, self.clock.monotonic() - started))
