"""Prometheus metrics, derived from the same per-request event as the audit line (one source of truth).

gateway_requests_total{route,status,decision}     decision: allowed, denied, refused, public
gateway_request_seconds{route}                    whole request as the gateway saw it
gateway_overhead_seconds{route}                   the gateway's own share (total minus upstream)
gateway_upstream_seconds{route}                   the upstream's share, for forwarded requests
gateway_upstream_in_flight{route}                 upstream requests under way (pool usage)
gateway_policy_version, gateway_policy_rules      the policy snapshot being served
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.proxy.audit import AuditEvent

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self, policy_version: Callable[[], float], policy_rules: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "gateway_requests", "Proxied requests.", ["route", "status", "decision"], registry=self.registry
        )
        self._total = Histogram(
            "gateway_request_seconds",
            "Time to answer a proxied request.",
            ["route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self._overhead = Histogram(
            "gateway_overhead_seconds",
            "The gateway's own time per request.",
            ["route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self._upstream = Histogram(
            "gateway_upstream_seconds",
            "The upstream's time per forwarded request.",
            ["route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "gateway_upstream_in_flight", "Upstream requests under way.", ["route"], registry=self.registry
        )
        Gauge("gateway_policy_version", "Version of the policy being served.", registry=self.registry).set_function(
            policy_version
        )
        Gauge("gateway_policy_rules", "Lines in the policy being served.", registry=self.registry).set_function(
            policy_rules
        )
        # prometheus_client's .labels() takes a lock and builds a key each call; keep the children.
        self._children: dict[tuple[str, str, str], tuple[Counter, Histogram, Histogram, Histogram]] = {}

    def observe(self, event: AuditEvent) -> None:
        route = event.route or "none"
        if event.granted:
            decision = "public" if event.subject is None else "allowed"
        else:
            decision = "denied" if event.decision_id else "refused"
        key = (route, str(event.status), decision)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self._requests.labels(*key),
                self._total.labels(route),
                self._overhead.labels(route),
                self._upstream.labels(route),
            )
        requests, total, overhead, upstream = children
        requests.inc()
        total.observe(event.duration_ms / 1000)
        if event.upstream_ms is not None:
            upstream.observe(event.upstream_ms / 1000)
            overhead.observe(max(event.duration_ms - event.upstream_ms, 0.0) / 1000)
        else:
            overhead.observe(event.duration_ms / 1000)

    def render(self) -> bytes:
        return generate_latest(self.registry)
