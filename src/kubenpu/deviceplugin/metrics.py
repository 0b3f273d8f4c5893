"""Prometheus metrics of the device plugin, on their own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class PluginMetrics:
    """Devices by health, allocations and Allocate latency, labelled by resource."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.devices = Gauge(
            "kubenpu_deviceplugin_devices",
            "Physical devices behind each resource, by health.",
            ["resource", "health"],
            registry=self.registry,
        )
        self.allocations = Counter(
            "kubenpu_deviceplugin_allocations",
            "Container allocations answered, by result.",
            ["resource", "result"],
            registry=self.registry,
        )
        self.allocate_seconds = Histogram(
            "kubenpu_deviceplugin_allocate_seconds",
            "Time to answer one Allocate call.",
            ["resource"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0),
            registry=self.registry,
        )
        self.registrations = Counter(
            "kubenpu_deviceplugin_registrations",
            "Successful registrations with the kubelet.",
            ["resource"],
            registry=self.registry,
        )

    def set_health(self, resource: str, healthy: int, unhealthy: int) -> None:
        """Record the current device counts of one resource."""
        self.devices.labels(resource, "Healthy").set(healthy)
        self.devices.labels(resource, "Unhealthy").set(unhealthy)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Expose /metrics over HTTP on ``port`` (in a daemon thread)."""
        start_http_server(port, addr=addr, registry=self.registry)
