"""The ``kubenpu dra-driver`` process: backend -> slice, preparer, servers, until SIGTERM."""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import grpc

from kubenpu.deviceplugin.backends import open_backend
from kubenpu.deviceplugin.config import DevicePluginConfig
from kubenpu.dra import api, server
from kubenpu.dra.kubeapi import KubeApi, SlicePublisher
from kubenpu.dra.node import ClaimPreparer
from kubenpu.dra.slices import DEFAULT_DRIVER
from kubenpu.errors import ConfigError

log = logging.getLogger(__name__)

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True, slots=True)
class DraDriverConfig:
    """The driver's settings (flags of ``kubenpu dra-driver``)."""

    node_name: str
    driver: str = DEFAULT_DRIVER
    kubeconfig: str = ""
    #: The kubelet's root dir as this process sees it (sockets, checkpoint below it).
    kubelet_dir: str = api.DEFAULT_KUBELET_DIR
    #: The same dir as the kubelet sees it (differs when the driver runs outside the
    #: kubelet's mount namespace, as in the dev cluster); empty: ``kubelet_dir``.
    kubelet_own_dir: str = ""
    #: The container runtime's CDI spec dir.
    cdi_dir: str = "/var/run/cdi"
    #: The device backend's settings (backend, mock-*, devfs-*, ...), shared with the
    #: device plugin; its kubelet/resource settings are not used.
    backend: DevicePluginConfig = field(default_factory=DevicePluginConfig)
    health_interval: float = 0.5
    #: Seconds between two checks that the ResourceSlice is still as it should be.
    resync_interval: float = 5.0
    v1beta1: bool = True
    health_service: bool = True

    def __post_init__(self) -> None:
        if not self.node_name:
            raise ConfigError("node-name: needed (the node whose devices are published; NODE_NAME)")
        if len(self.driver) > 63 or not _DNS_SUBDOMAIN.match(self.driver):
            raise ConfigError(
                f"driver: a DNS subdomain of at most 63 characters, got {self.driver!r}"
            )
        if not 0 < self.health_interval <= 10:
            raise ConfigError(f"health-interval: seconds in (0, 10], got {self.health_interval}")
        if self.resync_interval <= 0:
            raise ConfigError(f"resync-interval: > 0 seconds, got {self.resync_interval}")

    @property
    def plugin_dir(self) -> Path:
        """This driver's dir: DRA socket and checkpoint."""
        return Path(self.kubelet_dir) / api.PLUGINS / self.driver

    @property
    def dra_socket(self) -> Path:
        return self.plugin_dir / api.DRA_SOCKET

    @property
    def endpoint(self) -> str:
        """The DRA socket's path as the kubelet sees it (sent in GetInfo)."""
        own = Path(self.kubelet_own_dir or self.kubelet_dir)
        return str(own / api.PLUGINS / self.driver / api.DRA_SOCKET)

    @property
    def registration_socket(self) -> Path:
        return Path(self.kubelet_dir) / api.PLUGINS_REGISTRY / f"{self.driver}-reg.sock"

    @property
    def checkpoint_file(self) -> Path:
        return self.plugin_dir / "checkpoint.json"


class DraDriver:
    """Everything the driver runs on a node; :meth:`run` blocks until :meth:`shutdown`."""

    def __init__(self, config: DraDriverConfig, *, kube: KubeApi | None = None) -> None:
        self.config = config
        self.backend, self.devices = open_backend(config.backend)
        self.kube = kube or KubeApi(config.kubeconfig)
        self.preparer = ClaimPreparer(
            config.driver,
            config.node_name,
            backend=self.backend,
            devices=self.devices,
            cdi_dir=Path(config.cdi_dir),
            checkpoint_file=config.checkpoint_file,
            get_claim=self.kube.get_claim,
        )
        self.publisher = SlicePublisher(self.kube, config.driver, config.node_name)
        self.board = server.HealthBoard(config.node_name, [d.id for d in self.devices])
        self._stop = threading.Event()
        self._unhealthy: dict[str, str] | None = None
        #: Since when (RFC 3339) each unhealthy device is so: its taint's timeAdded.
        self._since: dict[str, str] = {}
        self.registered = threading.Event()
        log.info(
            "driver %s on node %s, backend %s: %d devices: %s",
            config.driver,
            config.node_name,
            self.backend.name,
            len(self.devices),
            ", ".join(f"{d.id}(index {d.index}, group {d.group})" for d in self.devices),
        )

    def _on_registration(self, registered: bool, error: str) -> None:
        if registered:
            log.info("registered with the kubelet")
            self.registered.set()
        else:
            log.error("the kubelet refused the registration: %s", error)
            self.registered.clear()

    def _check_health(self) -> bool:
        """Poll the backend; True when the health changed (or on the first call)."""
        try:
            unhealthy = dict(self.backend.unhealthy(self.devices))
        except Exception:
            log.exception("health check of backend %s failed", self.backend.name)
            return False
        if unhealthy == self._unhealthy:
            return False
        if self._unhealthy is not None:
            log.info(
                "device health changed: unhealthy %s",
                ", ".join(f"{k} ({v})" for k, v in sorted(unhealthy.items())) or "none",
            )
        self._unhealthy = unhealthy
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._since = {d: self._since.get(d, now) for d in sorted(unhealthy)}
        self.preparer.set_unhealthy(unhealthy)
        self.board.set_unhealthy(unhealthy)
        return True

    def run(self, *, install_signals: bool = True) -> None:
        """Serve until shutdown; SIGTERM and SIGINT shut down cleanly."""
        if install_signals:
            self._install_signals()
        config = self.config
        self.preparer.restore()
        self._check_health()
        self.publisher.sync(self.devices, self._since)
        preparer = self.preparer

        def register_dra(grpc_server: grpc.Server) -> None:
            api.v1_rpc.add_DRAPluginServicer_to_server(server.DraV1(preparer), grpc_server)
            if config.v1beta1:
                api.v1beta1_rpc.add_DRAPluginServicer_to_server(
                    server.DraV1beta1(preparer), grpc_server
                )
            if config.health_service:
                api.health_rpc.add_DRAResourceHealthServicer_to_server(
                    server.HealthV1(self.board, self._stop), grpc_server
                )

        advertised = server.services(v1beta1=config.v1beta1, health=config.health_service)
        registration = server.Registration(
            config.driver, config.endpoint, advertised, self._on_registration
        )
        dra = server.serve_unix(config.dra_socket, register_dra)
        reg = server.serve_unix(
            config.registration_socket,
            lambda s: api.registration_rpc.add_RegistrationServicer_to_server(registration, s),
            workers=2,
        )
        log.info(
            "serving %s on %s; registration on %s",
            ", ".join(advertised),
            config.dra_socket,
            config.registration_socket,
        )
        next_sync = time.monotonic() + config.resync_interval
        try:
            while not self._stop.wait(config.health_interval):
                changed = self._check_health()
                if changed or time.monotonic() >= next_sync:
                    self.publisher.sync(self.devices, self._since)
                    next_sync = time.monotonic() + config.resync_interval
        finally:
            self._stop.set()
            # The registration socket goes first: the kubelet unregisters the driver.
            reg.stop(grace=1).wait()
            config.registration_socket.unlink(missing_ok=True)
            dra.stop(grace=2).wait()
            config.dra_socket.unlink(missing_ok=True)
            self.backend.close()
            log.info("DRA driver stopped; sockets removed (the checkpoint and CDI specs stay)")

    def shutdown(self) -> None:
        """Ask :meth:`run` to return (thread-safe)."""
        self._stop.set()

    def _install_signals(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("got %s; shutting down", signal.Signals(signum).name)
            self.shutdown()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
