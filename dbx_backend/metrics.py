"""Prometheus metrics: one registry per application, so several apps (tests) never collide."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """The service's metrics; also the warehouse client's `CallObserver`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "dbx_http_requests", "HTTP requests served.", ["route", "method", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "dbx_http_request_duration_seconds",
            "HTTP request latency.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.statements = Counter(
            "dbx_statements", "Statements run, by final state.", ["state"], registry=r
        )
        self.warehouse_calls = Counter(
            "dbx_warehouse_calls",
            "Calls to the warehouse API.",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.warehouse_seconds = Histogram(
            "dbx_warehouse_call_duration_seconds",
            "Warehouse API call latency.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "dbx_warehouse_retries", "Warehouse calls retried.", ["endpoint"], registry=r
        )
        self.rows = Counter("dbx_rows_returned", "Result rows returned to callers.", registry=r)
        self.bytes = Counter("dbx_response_bytes", "Response body bytes written.", registry=r)
        self.in_flight = Gauge("dbx_queries_in_flight", "Queries running now.", registry=r)
        self.token_refreshes = Gauge(
            "dbx_token_refreshes", "Access tokens fetched (OAuth) since start.", registry=r
        )

    def call_finished(self, endpoint: str, outcome: str, seconds: float) -> None:
        """One warehouse call ended with `outcome` (an HTTP status or "error")."""
        self.warehouse_calls.labels(endpoint, outcome).inc()
        self.warehouse_seconds.labels(endpoint).observe(seconds)

    def retried(self, endpoint: str) -> None:
        """A warehouse call is about to be retried."""
        self.retries.labels(endpoint).inc()

    def statement_finished(self, state: str) -> None:
        """A statement reached its final state as the service saw it."""
        self.statements.labels(state).inc()

    def track(self, in_flight: Callable[[], int], token_refreshes: Callable[[], int]) -> None:
        """Read live values at scrape time."""
        self.in_flight.set_function(in_flight)
        self.token_refreshes.set_function(token_refreshes)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
