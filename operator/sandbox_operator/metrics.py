"""Prometheus metrics of the operator; label values are bounded (languages from the catalogue, phases)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EXECUTIONS = Counter(
    "sandbox_operator_executions_total",
    "Executions that reached a terminal phase.",
    ["language", "status"],
)
PHASE_SECONDS = Histogram(
    "sandbox_operator_phase_seconds",
    "Time spent in each phase: pending (created to running), running (running to finished), total.",
    ["phase"],
    buckets=(0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 60, 120, 300),
)
IN_FLIGHT = Gauge(
    "sandbox_operator_executions_in_flight",
    "Executions currently pending or running, as seen by this operator.",
)
