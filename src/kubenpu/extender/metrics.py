"""Prometheus metrics of the extender, in its own registry (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Latency buckets (seconds): a decision is meant to take milliseconds.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ExtenderMetrics:
    """Decisions by verb and result, latency, failures by reason, cache size, readiness."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "kubenpu_extender_decisions",
            "Extender calls by verb and result (ok, unschedulable, error).",
            ["verb", "result"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "kubenpu_extender_latency_seconds",
            "Time to answer an extender call, by verb.",
            ["verb"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.failures = Counter(
            "kubenpu_extender_failures",
            "Pods not placed (filter: the commonest node reason) or not bound, by reason.",
            ["verb", "reason"],
            registry=self.registry,
        )
        self.cache_objects = Gauge(
            "kubenpu_extender_cache_objects",
            "Objects in the cache: nodes, pods, placements (pods holding capacity on a node).",
            ["kind"],
            registry=self.registry,
        )
        self.cache_problems = Gauge(
            "kubenpu_extender_cache_problems",
            "Should stay 0, counted since start: Node and Pod updates the cache could not "
            "translate (node, pod) and recorded placements that did not fit it (conflict).",
            ["kind"],
            registry=self.registry,
        )
        self.ready = Gauge(
            "kubenpu_extender_ready", "1 when synced with the API server.", registry=self.registry
        )
        self.resyncs = Counter(
            "kubenpu_extender_relists",
            "Full lists of a kind (start, 410 Gone, lost connection).",
            ["kind"],
            registry=self.registry,
        )

    def count(self, verb: str, result: str, reason: str = "") -> None:
        """One call answered; ``reason``: a bounded label of why it failed, if it did."""
        self.decisions.labels(verb, result).inc()
        if reason:
            self.failures.labels(verb, reason).inc()

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
