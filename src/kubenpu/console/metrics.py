"""Prometheus metrics of the console: the cluster's NPUs as the cache accounts them,
computed from the store at scrape time (served at ``/metrics``).

What the device plugin and the extender cannot say on their own: per node and model how
many NPUs are allocated whole, shared, free and unhealthy, how many pods share each device
and how much of it they hold, the fragmented free compute, and the NPU pods that wait.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from kubenpu.console.store import ConsoleStore
from kubenpu.console.views import NodeRow, cluster_view, pending_view

#: Device states of ``kubenpu_console_npus`` (``views.DeviceCell.kind``).
STATES = ("whole", "shared", "free", "unhealthy")


class ConsoleCollector(Collector):
    """Gauges over one ``ConsoleStore``."""

    def __init__(self, store: ConsoleStore) -> None:
        self._store = store
        #: Per node, its samples as of the last scrape: a scrape rebuilds only the nodes
        #: that changed (two scrapes at once at worst both rebuild them).
        self._kept: dict[str, _RowMetrics] = {}

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

    def _snapshot(self) -> tuple[list[GaugeMetricFamily], list[_RowMetrics]]:
        """The families, the cluster-wide ones filled in, and each row's samples."""
        with self._store.lock:
            inputs = self._store.inputs()
            view = cluster_view(inputs)
            pending = pending_view(inputs)
        families = list(self._families())
        frag, waiting, oldest, ready = families[_PER_NODE:]
        rows = [self._row_metrics(row) for row in view.rows]
        self._kept = {r.row.name: r for r in rows}
        frag.add_metric([], view.totals.fragmented_npus or 0.0)
        waiting.add_metric([], len(pending))
        oldest.add_metric([], max((p.age_s for p in pending), default=0.0))
        ready.add_metric([], 1 if view.synced else 0)
        return families, rows

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The current values."""
        families, rows = self._snapshot()
        for k, family in enumerate(families[:_PER_NODE]):
            for r in rows:
                family.samples.extend(r.samples[k])
        yield from families

    def exposition(self) -> bytes:
        """What ``generate_latest`` makes of :meth:`collect`, byte for byte, with each
        unchanged node's lines kept from the last scrape (at 1,000 nodes most of the cost
        is formatting 18,000 samples)."""
        families, rows = self._snapshot()
        out = []
        for k, family in enumerate(families):
            out.append(_format([family]))  # HELP, TYPE and, for the cluster's, the sample
            if k < _PER_NODE:
                out.extend(r.text(self._families)[k] for r in rows)
        return "".join(out).encode()

    def _row_metrics(self, row: NodeRow) -> _RowMetrics:
        """One row's samples; kept while its cells are the same objects (``views.RowCache``
        keeps them until the node changes)."""
        old = self._kept.get(row.name)
        if old is not None and old.row.devices is row.devices and old.row.model == row.model:
            return old
        npus, capacity, allocated, shares, used = list(self._families())[:_PER_NODE]
        for state in STATES:
            npus.add_metric([row.name, row.model, state], row.count(state))
        capacity.add_metric([row.name, row.model], len(row.devices))
        allocated.add_metric([row.name, row.model], row.allocated_milli / 1000)
        for dev in row.devices:
            shared = 0 if dev.whole else len(dev.holders)
            shares.add_metric([row.name, dev.id], shared)
            used.add_metric([row.name, dev.id], dev.used_milli / 1000)
        return _RowMetrics(row, tuple(f.samples for f in (npus, capacity, allocated, shares, used)))


#: The first families of :meth:`ConsoleCollector._families` have samples per node.
_PER_NODE = 5


class _Fixed(Collector):
    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self._families = families

    def collect(self) -> list[GaugeMetricFamily]:
        return self._families


def _format(families: list[GaugeMetricFamily]) -> str:
    return generate_latest(_Fixed(families)).decode()


class _RowMetrics:
    """One node's samples of the per-node families, and their text once formatted."""

    __slots__ = ("_text", "row", "samples")

    def __init__(self, row: NodeRow, samples: tuple[list[Sample], ...]) -> None:
        self.row = row
        self.samples = samples
        self._text: tuple[str, ...] | None = None

    def text(self, families: Callable[[], Iterator[GaugeMetricFamily]]) -> tuple[str, ...]:
        """Per family, the sample lines (without the family's HELP and TYPE)."""
        if self._text is None:
            chunks = []
            for family, samples in zip(families(), self.samples, strict=False):
                family.samples = list(samples)
                chunks.append(_format([family]).split("\n", 2)[2])
            self._text = tuple(chunks)
        return self._text


def registry_for(store: ConsoleStore) -> CollectorRegistry:
    """A registry of its own holding the console's collector."""
    return registry_of(ConsoleCollector(store))


def registry_of(collector: ConsoleCollector) -> CollectorRegistry:
    """A registry of its own holding ``collector``."""
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format."""
    return generate_latest(registry)
