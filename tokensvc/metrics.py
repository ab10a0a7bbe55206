"""Prometheus metrics of one app instance (its own registry, so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("tokensvc_requests_total", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("tokensvc_request_duration_seconds", "HTTP request latency by route",
                                 ["route"], registry=self.registry,
                                 buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
        self.tokens_issued = Counter("tokensvc_tokens_issued_total", "Access tokens issued", registry=self.registry)
        self.users_provisioned = Counter("tokensvc_users_provisioned_total",
                                         "Users created on first encounter", registry=self.registry)
        self.auth_failures = Counter("tokensvc_auth_failures_total", "Failed authentications by kind",
                                     ["kind"], registry=self.registry)
        self.presence_writes = Counter("tokensvc_presence_writes_total",
                                       "Presence transactions by kind (join, leave, heartbeat, sweep, repair)",
                                       ["kind"], registry=self.registry)
        self.open_connections = Gauge("tokensvc_open_connections", "Open client WebSocket connections",
                                      registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
