"""Prometheus metrics of one daemon, in its own registry.

Counters and histograms are updated where things happen (requests, reconciles,
workqueue); gauges of current state (containers by state, pool, sockets, engine) are
collected at scrape time from the daemon's in-memory state, so a scrape costs no I/O.
It must not change any state.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StateCollector(Collector):
    """Gauges read from the daemon at scrape time."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        state = self._read()
        containers = GaugeMetricFamily(
            "lightd_containers",
            "Containers by install state and runtime state",
            labels=["install_state", "state"],
        )
        for (install_state, runtime_state), count in sorted(state["containers"].items()):
            containers.add_metric([install_state, runtime_state], count)
        yield containers
        yield GaugeMetricFamily("lightd_pool_ports", "Ports in the pool", value=state["pool_size"])
        yield GaugeMetricFamily(
            "lightd_pool_ports_in_use", "Pool ports reserved or bound", value=state["pool_in_use"]
        )
        yield GaugeMetricFamily(
            "lightd_workqueue_depth", "Keys waiting for a reconcile", value=state["queue_depth"]
        )
        yield GaugeMetricFamily(
            "lightd_workqueue_retries", "Retries scheduled since start", value=state["retries"]
        )
        sockets = GaugeMetricFamily(
            "lightd_websocket_connections", "Open WebSocket connections", labels=["kind"]
        )
        sockets.add_metric(["container"], state["container_sockets"])
        sockets.add_metric(["watch"], state["watch_sockets"])
        yield sockets
        yield GaugeMetricFamily(
            "lightd_engine_up", "1 when the Docker engine answers", value=state["engine_up"]
        )
        usage = GaugeMetricFamily(
            "lightd_volume_disk_usage_bytes", "Bytes a volume uses", labels=["volume_id"]
        )
        limit = GaugeMetricFamily(
            "lightd_volume_disk_limit_bytes",
            "A volume's disk limit in bytes (0: none)",
            labels=["volume_id"],
        )
        for volume_id, used, limited in state.get("volumes", []):
            usage.add_metric([volume_id], used)
            limit.add_metric([volume_id], limited or 0)
        yield usage
        yield limit
        for name, help_text, value in state.get("extra", []):
            yield GaugeMetricFamily(name, help_text, value=value)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "lightd_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "lightd_http_request_duration_seconds",
            "HTTP request durations by route",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.reconciles = Counter(
            "lightd_reconcile_runs",
            "Reconcile runs by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "lightd_reconcile_duration_seconds",
            "Reconcile run durations by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.actions = Counter(
            "lightd_reconcile_actions",
            "Actions applied by kind",
            ["kind"],
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "lightd_event_loop_lag_seconds",
            "How late the event loop woke a sleeper that asked for a known time",
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )

        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Counts one HTTP request and its duration (label children cached per key)."""
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(method=method, route=route, status=str(status)),
                self.request_seconds.labels(method=method, route=route),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def watch_state(self, read: Callable[[], dict[str, Any]]) -> None:
        self.registry.register(StateCollector(read))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def count_states(pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    return dict(Tally(pairs))
