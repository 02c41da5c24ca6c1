"""The service's Prometheus metrics (``prometheus_client``), in a registry of their own per app.

Each ``create_app`` makes one ``Metrics``, so several apps in one process (the tests, the served check
of ``gigdispatch export``) count apart and never collide in ``prometheus_client``'s global registry.
``GET /metrics`` answers ``render()`` with ``CONTENT_TYPE``.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
KNOWN_PATHS = ("/v1/dispatch", "/v1/reposition", "/v1/quote", "/healthz", "/metrics", "/docs", "/openapi.json")
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Request counts by endpoint and status, error counts and a latency histogram by endpoint.

    Paths outside ``KNOWN_PATHS`` count as ``endpoint="other"`` (a scanner cannot grow the label set).
    """

    def __init__(self) -> None:
        self.registry = reg = CollectorRegistry()
        self.requests = Counter(
            "gigdispatch_requests_total",
            "HTTP requests by endpoint and status code.",
            ["endpoint", "status"],
            registry=reg,
        )
        self.errors = Counter("gigdispatch_errors_total", "HTTP requests answered with a status >= 400.", registry=reg)
        self.policy_errors = Counter(
            "gigdispatch_policy_errors_total",
            "Requests on which the policy (or translating its decision) failed (answered 500).",
            registry=reg,
        )
        self.internal_errors = Counter(
            "gigdispatch_internal_errors_total",
            "Requests answered 500: an unexpected exception while handling them (logged with its error id).",
            registry=reg,
        )
        self.latency = Histogram(
            "gigdispatch_request_seconds",
            "Request latency in the server (body read to response sent).",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )

    def observe(self, path: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        endpoint = path if path in KNOWN_PATHS else "other"
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value, 0 before it exists: e.g. ``value("gigdispatch_errors_total")``."""
        v = self.registry.get_sample_value(name, labels)
        return 0.0 if v is None else float(v)
