"""Prometheus metrics of the API, in a registry per app; label values are bounded sets."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # route is the route template (or "unmatched"), never the raw path: bounded cardinality.
        self.requests = Counter(
            "sandbox_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        # language is a catalogue name, status one of the six statuses.
        self.executions = Counter(
            "sandbox_executions", "Executions finished", ["language", "status"], registry=self.registry
        )
        self.duration = Histogram(
            "sandbox_execution_duration_seconds",
            "Time from submission to result",
            ["language"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        # phase: "headers" (connection closed) or "body" (answered 408).
        self.slow_clients = Counter(
            "sandbox_slow_clients", "Requests cut off for sending their headers or body too slowly", ["phase"],
            registry=self.registry,
        )
        self.in_flight = Gauge("sandbox_executions_in_flight", "Executions accepted and not finished", registry=self.registry)
