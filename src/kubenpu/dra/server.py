"""The driver's gRPC servers on unix sockets: plugin registration, DRA v1 and v1beta1,
and the DRAResourceHealth v1 stream.

The kubelet's plugin watcher finds the registration socket in ``plugins_registry/``, calls
``GetInfo`` (type ``DRAPlugin``, the driver name, the DRA socket's path as the kubelet sees
it, the services offered) and ``NotifyRegistrationStatus``; then it dials the DRA socket
for NodePrepareResources / NodeUnprepareResources and NodeWatchResources.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

from kubenpu.dra import api
from kubenpu.dra.node import ClaimPreparer
from kubenpu.dra.slices import pool_name
from kubenpu.errors import KubeNpuError

log = logging.getLogger(__name__)


def _prepare(preparer: ClaimPreparer, pb: ModuleType, request: Any) -> Any:
    response = pb.NodePrepareResourcesResponse()
    for claim in request.claims:
        entry = response.claims[claim.uid]
        try:
            prepared = preparer.prepare(claim.uid, claim.namespace, claim.name)
        except KubeNpuError as err:
            log.warning("prepare %s/%s (%s): %s", claim.namespace, claim.name, claim.uid, err)
            entry.error = str(err)
            continue
        except Exception as err:  # a bug or a full disk: the kubelet retries, we keep serving
            log.exception("prepare %s/%s failed", claim.namespace, claim.name)
            entry.error = f"internal error: {err}"
            continue
        for device in prepared.devices:
            answer = pb.Device(
                request_names=list(device.requests),
                pool_name=device.pool,
                device_name=device.device,
                cdi_device_ids=list(device.cdi_ids),
            )
            if device.share_id and "share_id" in pb.Device.DESCRIPTOR.fields_by_name:
                answer.share_id = device.share_id  # v1 has it; v1beta1 predates shares
            entry.devices.append(answer)
    return response


def _unprepare(preparer: ClaimPreparer, pb: ModuleType, request: Any) -> Any:
    response = pb.NodeUnprepareResourcesResponse()
    for claim in request.claims:
        entry = response.claims[claim.uid]
        try:
            preparer.unprepare(claim.uid)
        except Exception as err:
            log.exception("unprepare %s/%s failed", claim.namespace, claim.name)
            entry.error = f"unprepare failed: {err}"
    return response


class DraV1(api.v1_rpc.DRAPluginServicer):
    """``k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin``."""

    def __init__(self, preparer: ClaimPreparer) -> None:
        self.preparer = preparer

    def NodePrepareResources(self, request: Any, context: Any) -> Any:
        return _prepare(self.preparer, api.v1, request)

    def NodeUnprepareResources(self, request: Any, context: Any) -> Any:
        return _unprepare(self.preparer, api.v1, request)


class DraV1beta1(api.v1beta1_rpc.DRAPluginServicer):
    """``k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin`` (the same messages, older kubelets)."""

    def __init__(self, preparer: ClaimPreparer) -> None:
        self.preparer = preparer

    def NodePrepareResources(self, request: Any, context: Any) -> Any:
        return _prepare(self.preparer, api.v1beta1, request)

    def NodeUnprepareResources(self, request: Any, context: Any) -> Any:
        return _unprepare(self.preparer, api.v1beta1, request)


class HealthBoard:
    """The devices' health as the stream reports it; waiters wake on every change."""

    def __init__(self, node: str, devices: Sequence[str]) -> None:
        self.pool = pool_name(node)
        self.devices = list(devices)
        self._unhealthy: dict[str, str] = {}
        self._version = 0
        self._changed = threading.Condition()
        self._updated = int(time.time())

    def set_unhealthy(self, unhealthy: Mapping[str, str]) -> None:
        with self._changed:
            if dict(unhealthy) == self._unhealthy and self._version:
                return
            self._unhealthy = dict(unhealthy)
            self._updated = int(time.time())
            self._version += 1
            self._changed.notify_all()

    def snapshot(self) -> tuple[int, Any]:
        with self._changed:
            response = api.health.NodeWatchResourcesResponse()
            for name in self.devices:
                sick = name in self._unhealthy
                response.devices.append(
                    api.health.DeviceHealth(
                        device=api.health.DeviceIdentifier(pool_name=self.pool, device_name=name),
                        health=api.health.UNHEALTHY if sick else api.health.HEALTHY,
                        last_updated_time=self._updated,
                        message=self._unhealthy.get(name, ""),
                    )
                )
            return self._version, response

    def wait_change(self, seen: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._version != seen, timeout=timeout)


class HealthV1(api.health_rpc.DRAResourceHealthServicer):
    """``v1.DRAResourceHealth``: the full health list at once, then after every change."""

    def __init__(self, board: HealthBoard, stopping: threading.Event) -> None:
        self.board = board
        self.stopping = stopping

    def NodeWatchResources(self, request: Any, context: Any) -> Iterator[Any]:
        version, response = self.board.snapshot()
        yield response
        while context.is_active() and not self.stopping.is_set():
            if self.board.wait_change(version, timeout=1.0):
                version, response = self.board.snapshot()
                yield response


class Registration(api.registration_rpc.RegistrationServicer):
    """``pluginregistration.Registration``: who this driver is, where its service is."""

    def __init__(
        self,
        driver: str,
        endpoint: str,
        services: Sequence[str],
        on_status: Callable[[bool, str], None],
    ) -> None:
        self.driver = driver
        self.endpoint = endpoint
        self.services = list(services)
        self.on_status = on_status

    def GetInfo(self, request: Any, context: Any) -> Any:
        return api.registration.PluginInfo(
            type=api.PLUGIN_TYPE,
            name=self.driver,
            endpoint=self.endpoint,
            supported_versions=self.services,
        )

    def NotifyRegistrationStatus(self, request: Any, context: Any) -> Any:
        self.on_status(request.plugin_registered, request.error)
        return api.registration.RegistrationStatusResponse()


def serve_unix(
    socket: Path, register: Callable[[grpc.Server], None], workers: int = 8
) -> grpc.Server:
    """A started gRPC server on the unix socket ``socket`` (a stale file is replaced)."""
    socket.parent.mkdir(parents=True, exist_ok=True)
    socket.unlink(missing_ok=True)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dra"))
    register(server)
    server.add_insecure_port(f"unix://{socket}")
    server.start()
    return server


def services(*, v1beta1: bool = True, health: bool = True) -> list[str]:
    """The services to advertise in GetInfo."""
    names = [api.SERVICE_V1]
    if v1beta1:
        names.append(api.SERVICE_V1BETA1)
    if health:
        names.append(api.SERVICE_HEALTH_V1)
    return names
