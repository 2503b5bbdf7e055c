"""Prometheus metrics, derived from the same per-request event as the audit line (one source of truth).

gateway_requests_total{route,status,decision}     decision: allowed, denied, refused, public
gateway_request_seconds{route}                    whole request as the gateway saw it
gateway_overhead_seconds{route}                   the gateway's own share (total minus upstream)
gateway_upstream_seconds{route}                   the upstream's share, for forwarded requests
gateway_upstream_in_flight{route}                 upstream requests under way (pool usage)
gateway_policy_version, gateway_policy_rules      the policy snapshot being served
gateway_password_hashes_in_flight, _queued        Argon2 runs under way, callers waiting for one
gateway_password_hashes_shed_total                callers refused at once (503) because the queue was full
gateway_password_hashes_total                     Argon2 runs started
gateway_shadow_compared_total                     with a shadow policy attached: requests it also decided
gateway_shadow_differences_total{route,org,kind}  ... and would decide otherwise (would_deny, would_allow)
gateway_audit_webhook_delivered_total             audit events the webhook acknowledged (with `[audit] webhook_url`)
gateway_audit_webhook_failures_total              failed webhook deliveries (each is retried)
gateway_audit_webhook_lag_events                  audit events not delivered yet

The request path only adds to plain counters (one event loop owns them, so no locks); prometheus_client turns
them into its text format when /metrics is scraped (a custom collector), the reference exposition code.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.access.audit import AuditEvent
from gateway.identity.passwords import HashGate
from gateway.policy.shadow import Tally

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = "text/plain; version=0.0.4"
"""Prometheus text format 0.0.4 (the framework adds `; charset=utf-8`, once)."""


class Histogram:
    """Counts per bucket (not cumulative) and the sum of what was observed."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        running, out = 0, []
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out


class RouteStats:
    """Everything counted for one route."""

    __slots__ = ("in_flight", "overhead", "total", "upstream")

    def __init__(self) -> None:
        self.total = Histogram()
        self.overhead = Histogram()
        self.upstream = Histogram()
        self.in_flight = 0


class DeliveryStats:
    """What the audit webhook's deliverer counts in this process (the lag is the shared trail's, as last seen)."""

    __slots__ = ("delivered", "failures", "lag")

    def __init__(self) -> None:
        self.delivered = 0
        self.failures = 0
        self.lag = 0


class Metrics(Collector):
    def __init__(
        self,
        policy_version: Callable[[], float],
        policy_rules: Callable[[], float],
        hashing: HashGate | None = None,
        shadow: Callable[[], Tally | None] | None = None,
    ) -> None:
        self._shadow = shadow
        self._policy_version = policy_version
        self._policy_rules = policy_rules
        self._hashing = hashing
        self._routes: dict[str, RouteStats] = {}
        self._requests: dict[tuple[str, int, str], int] = {}
        self.webhook: DeliveryStats | None = None
        """Set when an audit webhook is configured."""
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def route(self, route: str) -> RouteStats:
        """The counters of `route` (created on first use)."""
        stats = self._routes.get(route)
        if stats is None:
            stats = self._routes[route] = RouteStats()
        return stats

    def observe(self, event: AuditEvent) -> None:
        route = event.route or "none"
        if event.granted:
            decision = "public" if event.subject is None else "allowed"
        else:
            decision = "denied" if event.decision_id else "refused"
        key = (route, event.status, decision)
        self._requests[key] = self._requests.get(key, 0) + 1
        stats = self.route(route)
        stats.total.observe(event.duration_ms / 1000)
        if event.upstream_ms is not None:
            stats.upstream.observe(event.upstream_ms / 1000)
            stats.overhead.observe(max(event.duration_ms - event.upstream_ms, 0.0) / 1000)
        else:
            stats.overhead.observe(event.duration_ms / 1000)

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("gateway_requests", "Proxied requests.", labels=["route", "status", "decision"])
        for (route, status, decision), count in sorted(self._requests.items()):
            requests.add_metric([route, str(status), decision], count)
        yield requests
        for name, documentation, field in (
            ("gateway_request_seconds", "Time to answer a proxied request.", "total"),
            ("gateway_overhead_seconds", "The gateway's own time per request.", "overhead"),
            ("gateway_upstream_seconds", "The upstream's time per forwarded request.", "upstream"),
        ):
            family = HistogramMetricFamily(name, documentation, labels=["route"])
            for route, stats in sorted(self._routes.items()):
                histogram: Histogram = getattr(stats, field)
                family.add_metric([route], histogram.cumulative(), histogram.sum)
            yield family
        in_flight = GaugeMetricFamily("gateway_upstream_in_flight", "Upstream requests under way.", labels=["route"])
        for route, stats in sorted(self._routes.items()):
            in_flight.add_metric([route], stats.in_flight)
        yield in_flight
        yield GaugeMetricFamily("gateway_policy_version", "Version of the policy being served.", self._policy_version())
        yield GaugeMetricFamily("gateway_policy_rules", "Lines in the policy being served.", self._policy_rules())
        if self._hashing is not None:
            gate = self._hashing
            yield GaugeMetricFamily("gateway_password_hashes_in_flight", "Argon2 runs under way.", gate.running)
            yield GaugeMetricFamily("gateway_password_hashes_queued", "Callers waiting to hash.", gate.waiting)
            yield CounterMetricFamily(
                "gateway_password_hashes_shed", "Callers refused because the hashing queue was full.", gate.shed
            )
            yield CounterMetricFamily("gateway_password_hashes", "Argon2 runs started.", gate.runs)
            yield GaugeMetricFamily(
                "gateway_password_hashing_allowance_cpus",
                "CPUs' worth of hashing allowed now (follows the event loop's load).",
                gate.budget.rate,
            )
        tally = self._shadow() if self._shadow is not None else None
        if tally is not None:
            yield CounterMetricFamily(
                "gateway_shadow_compared", "Proxied requests also decided by the shadow policy.", tally.compared
            )
            differences = CounterMetricFamily(
                "gateway_shadow_differences",
                "Proxied requests the shadow policy would decide otherwise.",
                labels=["route", "org", "kind"],
            )
            for (route, org, kind), count in sorted(tally.totals.items()):
                differences.add_metric([route, org, kind], count)
            yield differences
        if self.webhook is not None:
            webhook = self.webhook
            yield CounterMetricFamily(
                "gateway_audit_webhook_delivered", "Audit events the webhook acknowledged.", webhook.delivered
            )
            yield CounterMetricFamily(
                "gateway_audit_webhook_failures", "Failed audit webhook deliveries (retried).", webhook.failures
            )
            yield GaugeMetricFamily("gateway_audit_webhook_lag_events", "Audit events not delivered yet.", webhook.lag)

    def render(self) -> bytes:
        return generate_latest(self.registry)
