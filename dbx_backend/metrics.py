"""Prometheus metrics: one registry per application, so several apps (tests) never collide."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from dbx_backend.engine.memory import MemoryBudget

_WAREHOUSE_STATES = frozenset(
    {"UNKNOWN", "STOPPED", "STARTING", "RUNNING", "STOPPING", "DELETING", "DELETED"}
)
CACHE_RESULTS = ("hit", "miss", "stale", "coalesced", "bypass")
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
        # The result cache, coalescing and cold starts.
        # Counted in a plain dict (a hit must cost next to nothing) and read at scrape time.
        self.cache_answers: dict[str, int] = dict.fromkeys(CACHE_RESULTS, 0)
        r.register(_CacheAnswers(self.cache_answers))
        self.cache_refreshes = Counter(
            "dbx_cache_refreshes", "Stale entries refreshed in the background.", registry=r
        )
        self.cache_evictions = Gauge(
            "dbx_cache_evictions", "In-process entries evicted to stay in bytes.", registry=r
        )
        self.cache_bytes = Gauge(
            "dbx_cache_bytes", "Bytes held by the in-process cache.", registry=r
        )
        self.cache_backend_errors = Counter(
            "dbx_cache_backend_errors",
            "Redis (CACHE_URL) calls that failed or timed out; answered per process.",
            registry=r,
        )
        self.warehouse_starts = Counter(
            "dbx_warehouse_starts", "Warehouse starts issued by this process.", registry=r
        )
        self.warehouse_state = Gauge(
            "dbx_warehouse_state",
            "1 for the warehouse's last known state (UNKNOWN before any look).",
            ["state"],
            registry=r,
        )
        self._warehouse_state: Callable[[], str] = lambda: "UNKNOWN"
        # The memory budget (MEMORY_BUDGET_MB).
        self.memory_budget = Gauge(
            "dbx_memory_budget_bytes", "The memory budget (MEMORY_BUDGET_MB).", registry=r
        )
        self.memory_reserved = Gauge(
            "dbx_memory_reserved_bytes",
            "Bytes reserved now by buffered answers in flight and streams' windows.",
            registry=r,
        )
        self.memory_cached = Gauge(
            "dbx_memory_cache_bytes", "Bytes the result cache holds in the budget.", registry=r
        )
        self.memory_waits = Counter(
            "dbx_memory_waits", "Requests that waited for room in the memory budget.", registry=r
        )
        self.memory_refusals = Counter(
            "dbx_memory_refusals",
            "Requests refused (503 SERVICE_BUSY): no room within MEMORY_WAIT_S.",
            registry=r,
        )
        self.memory_truncations = Counter(
            "dbx_memory_truncations",
            "Answers larger than the whole budget, cut at it (truncated).",
            registry=r,
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

    def cache_answered(self, status: str) -> None:
        """One answer of a cacheable route: hit, miss, stale, coalesced or bypass."""
        self.cache_answers[status] = self.cache_answers.get(status, 0) + 1

    def cache_refreshed(self) -> None:
        """A stale entry was refreshed in the background."""
        self.cache_refreshes.inc()

    def cache_backend_failed(self) -> None:
        """A Redis call failed; the process answered on its own."""
        self.cache_backend_errors.inc()

    def warehouse_start_issued(self) -> None:
        """This process called the Warehouses API's start."""
        self.warehouse_starts.inc()

    def track_cache(
        self,
        bytes_held: Callable[[], int],
        evictions: Callable[[], int],
        warehouse_state: Callable[[], str],
    ) -> None:
        """Read the cache's size and the warehouse's state at scrape time."""
        self.cache_bytes.set_function(bytes_held)
        self.cache_evictions.set_function(evictions)
        self._warehouse_state = warehouse_state

    def track_memory(self, budget: MemoryBudget) -> None:
        """Read the memory budget's figures at scrape time."""
        self.memory_budget.set_function(lambda: budget.total)
        self.memory_reserved.set_function(lambda: budget.reserved)
        self.memory_cached.set_function(lambda: budget.cached)

    def memory_waited(self) -> None:
        """A request waits for room in the memory budget."""
        self.memory_waits.inc()

    def memory_refused(self) -> None:
        """A request found no room within MEMORY_WAIT_S."""
        self.memory_refusals.inc()

    def memory_truncated(self) -> None:
        """An answer was cut at the whole budget."""
        self.memory_truncations.inc()

    def render(self) -> bytes:
        """The text exposition format."""
        current = self._warehouse_state()
        for state in sorted(_WAREHOUSE_STATES):
            self.warehouse_state.labels(state).set(1 if state == current else 0)
        if current not in _WAREHOUSE_STATES:
            self.warehouse_state.labels(current).set(1)
        return generate_latest(self.registry)


class _CacheAnswers(Collector):
    """`dbx_cache_answers_total{result}` from the counts the cache keeps."""

    def __init__(self, counts: dict[str, int]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "dbx_cache_answers",
            "Answers to cacheable routes, by how they were come by.",
            labels=["result"],
        )
        for result, count in self._counts.items():
            family.add_metric([result], count)
        yield family
