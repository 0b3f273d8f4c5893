"""The device plugin process: config -> backend -> managers -> servers, until SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from kubenpu.deviceplugin.backends import open_backend
from kubenpu.deviceplugin.config import DevicePluginConfig
from kubenpu.deviceplugin.inventory import InventoryPublisher, NodePatcher
from kubenpu.deviceplugin.kubeapi import kubernetes_node_patcher, kubernetes_pod_lookup
from kubenpu.deviceplugin.manager import Kind, ResourceManager
from kubenpu.deviceplugin.metrics import PluginMetrics
from kubenpu.deviceplugin.server import PluginServer
from kubenpu.deviceplugin.sharing import PlacementResolver, PodLookup

log = logging.getLogger(__name__)

#: How often registration (and kubelet restarts) are checked.
REGISTRATION_TICK_S = 0.5


def endpoint_of(resource: str) -> str:
    """Socket file name for a resource: ``aliyun.com/npu-core`` -> ``kubenpu-npu-core.sock``."""
    return f"kubenpu-{resource.rsplit('/', 1)[-1]}.sock"


class DevicePluginDaemon:
    """Everything one node runs; :meth:`run` blocks until :meth:`shutdown` (or a signal)."""

    def __init__(
        self,
        config: DevicePluginConfig,
        *,
        pod_lookup: PodLookup | None = None,
        node_patch: NodePatcher | None = None,
    ) -> None:
        self.config = config
        self.metrics = PluginMetrics()
        self.backend, devices = open_backend(config)
        self._stop = threading.Event()
        cdi_kind = config.cdi_kind if config.cdi else None
        # With a node name the plugin reads the scheduler's placements (whole devices and
        # shares) and publishes its device inventory; without one it decides locally.
        if config.node_name and (pod_lookup is None or node_patch is None):
            default_lookup, default_patch = self._api_access()
            pod_lookup = pod_lookup or default_lookup
            node_patch = node_patch or default_patch
        resolver = PlacementResolver(pod_lookup) if pod_lookup is not None else None
        self.publisher = InventoryPublisher(node_patch) if node_patch is not None else None
        self.managers = [
            ResourceManager(
                config.resource, devices, self.backend, resolver=resolver, cdi_kind=cdi_kind
            )
        ]
        if config.sharing:
            resolver = resolver or PlacementResolver(list)
            self.managers.append(
                ResourceManager(
                    config.core_resource,
                    devices,
                    self.backend,
                    kind=Kind.CORE,
                    resolver=resolver,
                    cdi_kind=cdi_kind,
                )
            )
            if config.memory_resource:
                mem = ResourceManager(config.mem_resource, devices, self.backend, kind=Kind.MEM)
                if not mem.listing()[1]:
                    log.warning(
                        "%s: the devices report no memory (set devfs-memory-gib); "
                        "it advertises 0 units",
                        config.mem_resource,
                    )
                self.managers.append(mem)
        self.servers = [
            PluginServer(m, config.kubelet_dir, endpoint_of(m.resource), self.metrics)
            for m in self.managers
        ]
        log.info(
            "backend %s: %d devices: %s",
            self.backend.name,
            len(devices),
            ", ".join(f"{d.id}(index {d.index}, group {d.group})" for d in devices),
        )

    def _api_access(self) -> tuple[PodLookup | None, NodePatcher | None]:
        try:
            return (
                kubernetes_pod_lookup(self.config.node_name, self.config.kubeconfig),
                kubernetes_node_patcher(self.config.node_name, self.config.kubeconfig),
            )
        except Exception as err:
            # Without API access every request takes the safe local choice.
            log.warning(
                "no Kubernetes API access (%s); devices are chosen locally and no inventory "
                "is published",
                err,
            )
            return None, None

    def _check_health(self) -> None:
        devices = self.managers[0].devices
        try:
            unhealthy = self.backend.unhealthy(devices)
        except Exception:  # a backend bug must not stop health reporting for good
            log.exception("health check of backend %s failed", self.backend.name)
            return
        for manager in self.managers:
            manager.set_unhealthy(unhealthy)
            self.metrics.set_health(manager.resource, *manager.health_counts())
        if self.publisher is not None:
            self.publisher.publish(devices, unhealthy)

    def _health_loop(self) -> None:
        while not self._stop.wait(self.config.health_interval):
            self._check_health()

    def run(self, *, install_signals: bool = True) -> None:
        """Serve until shutdown; SIGTERM and SIGINT shut down cleanly."""
        if install_signals:
            self._install_signals()
        if self.config.metrics_port:
            self.metrics.serve(self.config.metrics_port, self.config.metrics_address)
            log.info(
                "metrics on %s:%d/metrics", self.config.metrics_address, self.config.metrics_port
            )
        self._check_health()
        health = threading.Thread(target=self._health_loop, name="health", daemon=True)
        health.start()
        try:
            while True:
                for server in self.servers:
                    try:
                        server.ensure_registered()
                    except Exception as err:  # e.g. the dir is not writable: retry, stay up
                        log.error("%s: cannot serve: %s", server.manager.resource, err)
                if self._stop.wait(REGISTRATION_TICK_S):
                    break
        finally:
            self._stop.set()
            for manager in self.managers:
                manager.close()
            for server in self.servers:
                server.stop()
            health.join(timeout=2)
            self.backend.close()
            log.info("device plugin stopped; sockets removed")

    def shutdown(self) -> None:
        """Ask :meth:`run` to return (thread-safe)."""
        self._stop.set()

    def _install_signals(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("got %s; shutting down", signal.Signals(signum).name)
            self.shutdown()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
