"""Prometheus metrics of the console: the cluster's NPUs as the cache accounts them,
computed from the store at scrape time (served at ``/metrics``).

What the device plugin and the extender cannot say on their own: per node and model how
many NPUs are allocated whole, shared, free and unhealthy, how many pods share each device
and how much of it they hold, the fragmented free compute, and the NPU pods that wait.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kubenpu.console.store import ConsoleStore
from kubenpu.console.views import cluster_view, pending_view

#: Device states of ``kubenpu_console_npus`` (``views.DeviceCell.kind``).
STATES = ("whole", "shared", "free", "unhealthy")


class ConsoleCollector(Collector):
    """Gauges over one ``ConsoleStore``."""

    def __init__(self, store: ConsoleStore) -> None:
        self._store = store

    def describe(self) -> list[GaugeMetricFamily]:
        """The families (names, help, labels) without reading the store."""
        return list(self._families())

    def _families(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "kubenpu_console_npus",
            "NPUs per node and model by state: whole (held by one pod), shared (held in "
            "shares), free, unhealthy.",
            labels=["node", "model", "state"],
        )
        yield GaugeMetricFamily(
            "kubenpu_console_npu_capacity",
            "NPUs per node and model (every device, healthy or not).",
            labels=["node", "model"],
        )
        yield GaugeMetricFamily(
            "kubenpu_console_npu_allocated",
            "NPU compute held by pods per node and model, in NPUs (a 30% share counts 0.3).",
            labels=["node", "model"],
        )
        yield GaugeMetricFamily(
            "kubenpu_console_device_shares",
            "Pods holding a share of each device (0: free or held whole).",
            labels=["node", "device"],
        )
        yield GaugeMetricFamily(
            "kubenpu_console_device_used_ratio",
            "Compute of each device held by pods, 0..1.",
            labels=["node", "device"],
        )
        yield GaugeMetricFamily(
            "kubenpu_console_fragmented_npus",
            "Free NPU compute the current task mix cannot use (the policy's fragmentation "
            "measure), in NPUs, cluster-wide.",
        )
        yield GaugeMetricFamily(
            "kubenpu_console_pending_npu_pods",
            "NPU pods waiting for a node.",
        )
        yield GaugeMetricFamily(
            "kubenpu_console_pending_npu_pod_oldest_seconds",
            "Age of the oldest NPU pod waiting for a node (0 when none waits).",
        )
        yield GaugeMetricFamily(
            "kubenpu_console_ready",
            "1 when the console's informers are synced with the API server.",
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The current values."""
        with self._store.lock:
            inputs = self._store.inputs()
            view = cluster_view(inputs)
            pending = pending_view(inputs)
        npus, capacity, allocated, shares, used, frag, waiting, oldest, ready = self._families()
        for row in view.rows:
            for state in STATES:
                npus.add_metric([row.name, row.model, state], row.count(state))
            capacity.add_metric([row.name, row.model], len(row.devices))
            allocated.add_metric([row.name, row.model], row.allocated_milli / 1000)
            for dev in row.devices:
                shared = 0 if dev.whole else len(dev.holders)
                shares.add_metric([row.name, dev.id], shared)
                used.add_metric([row.name, dev.id], dev.used_milli / 1000)
        frag.add_metric([], view.totals.fragmented_npus or 0.0)
        waiting.add_metric([], len(pending))
        oldest.add_metric([], max((p.age_s for p in pending), default=0.0))
        ready.add_metric([], 1 if view.synced else 0)
        yield from (npus, capacity, allocated, shares, used, frag, waiting, oldest, ready)


def registry_for(store: ConsoleStore) -> CollectorRegistry:
    """A registry of its own holding the console's collector."""
    registry = CollectorRegistry()
    registry.register(ConsoleCollector(store))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format."""
    return generate_latest(registry)
