"""A kubelet stand-in: the kubelet's side of the device plugin API v1beta1.

Not part of the production device plugin: the dev cluster's node agent and the tests use
it in place of a kubelet.

:class:`KubeletPeer` does what a real kubelet's device manager does on the wire, and no
more: it serves ``Registration`` on ``<dir>/kubelet.sock``; on each ``Register`` it checks
the version and the resource name, dials the plugin's socket ``<dir>/<endpoint>`` (before
answering, as the kubelet does, so a plugin that is not serving yet fails to register),
then consumes ``ListAndWatch`` in the background, keeping the latest device list. Tests
use it to drive the plugin; the dev cluster's node agent uses it in place of a kubelet and
turns the device lists into node capacity through ``on_devices``.

A restart (:meth:`KubeletPeer.restart`) behaves like a kubelet restart: every file in the
directory except the kubelet's checkpoint is deleted (so the plugins' sockets vanish) and
``kubelet.sock`` is created anew; plugins are expected to notice and register again.

When a plugin's stream ends (plugin gone), its devices are kept but reported Unhealthy and
``on_devices`` fires, like the kubelet dropping allocatable to zero while keeping capacity.

Example::

    peer = KubeletPeer("/tmp/dp", on_devices=lambda res, devs: print(res, devs))
    peer.start()
    peer.wait_for_registration("aliyun.com/npu", timeout=5)
    peer.wait_for_devices("aliyun.com/npu", lambda devs: len(devs) == 4, timeout=5)
    resp = peer.allocate("aliyun.com/npu", [["npu-0"], ["npu-1", "npu-2"]])
    peer.stop()
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from kubenpu.deviceplugin.api import (
    HEALTHY,
    KUBELET_CHECKPOINT,
    KUBELET_SOCKET,
    UNHEALTHY,
    VERSION,
    pb,
    rpc,
)
from kubenpu.deviceplugin.protocol import is_extended_resource_name

log = logging.getLogger(__name__)

#: Versions this peer accepts, as the kubelet's ``SupportedVersions``.
SUPPORTED_VERSIONS = (VERSION,)


@dataclass(frozen=True, slots=True)
class Registration:
    """One accepted RegisterRequest, as the peer saw it."""

    version: str
    endpoint: str
    resource_name: str
    pre_start_required: bool
    get_preferred_allocation_available: bool
    #: ``time.monotonic()`` when it was accepted.
    at: float


@dataclass(frozen=True, slots=True)
class PeerDevice:
    """One device from a plugin's latest ListAndWatch answer."""

    id: str
    health: str
    numa_nodes: tuple[int, ...] = ()

    @property
    def healthy(self) -> bool:
        """Whether the plugin reports it Healthy (and is still connected)."""
        return self.health == HEALTHY


DevicesCallback = Callable[[str, Sequence[PeerDevice]], None]


@dataclass(slots=True)
class _Plugin:
    """A connected plugin: its channel, stub, stream and latest devices."""

    registration: Registration
    channel: grpc.Channel
    stub: rpc.DevicePluginStub
    devices: tuple[PeerDevice, ...] = ()
    updates: int = 0
    connected: bool = True
    stream: grpc.Call | None = None
    thread: threading.Thread | None = field(default=None, repr=False)


class KubeletPeer:
    """The kubelet's side of the device plugin protocol over real unix sockets.

    Thread-safe. ``on_devices(resource, devices)`` is called from a background thread
    after every ListAndWatch message and when a plugin disconnects; keep it short.
    """

    def __init__(
        self,
        socket_dir: str | os.PathLike[str],
        *,
        on_devices: DevicesCallback | None = None,
        dial_timeout: float = 5.0,
    ) -> None:
        self.socket_dir = Path(socket_dir)
        self.socket_path = self.socket_dir / KUBELET_SOCKET
        self._on_devices = on_devices
        self._dial_timeout = dial_timeout
        self._cond = threading.Condition()
        self._plugins: dict[str, _Plugin] = {}
        self._registrations: list[Registration] = []
        self._server: grpc.Server | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Serve ``Registration`` on ``<dir>/kubelet.sock`` (replacing a stale file)."""
        if self._server is not None:
            raise RuntimeError("KubeletPeer already started")
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="kubelet")
        )
        rpc.add_RegistrationServicer_to_server(_RegistrationServicer(self), server)
        server.add_insecure_port(f"unix://{self.socket_path}")
        server.start()
        self._server = server
        log.info("kubelet peer serving Registration on %s", self.socket_path)

    def stop(self) -> None:
        """Stop serving, drop every plugin connection and remove ``kubelet.sock``."""
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace=None).wait()
        with self._cond:
            plugins = list(self._plugins.values())
            self._plugins.clear()
            self._cond.notify_all()
        for plugin in plugins:
            self._close(plugin)
        self.socket_path.unlink(missing_ok=True)

    def restart(self) -> None:
        """Behave like a kubelet restart: stop, wipe the dir but the checkpoint, start.

        Plugins see their own socket deleted and ``kubelet.sock`` recreated (new inode)
        and must register again; :attr:`registrations` keeps the history across restarts.
        """
        self.stop()
        for entry in self.socket_dir.iterdir():
            if entry.name != KUBELET_CHECKPOINT and not entry.is_dir():
                entry.unlink(missing_ok=True)
        self.start()

    def __enter__(self) -> KubeletPeer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the plugins told us ----------------------------------------------------

    @property
    def registrations(self) -> list[Registration]:
        """Every accepted registration so far, oldest first (kept across restarts)."""
        with self._cond:
            return list(self._registrations)

    def resources(self) -> list[str]:
        """Resource names with a currently registered plugin."""
        with self._cond:
            return sorted(self._plugins)

    def devices(self, resource: str) -> tuple[PeerDevice, ...]:
        """The latest device list of ``resource`` (empty if not registered)."""
        with self._cond:
            plugin = self._plugins.get(resource)
            return plugin.devices if plugin else ()

    def wait_for_registration(
        self, resource: str, *, timeout: float, count: int = 1
    ) -> Registration:
        """Wait until ``resource`` has registered ``count`` times in total; return the last."""

        def ready() -> list[Registration]:
            regs = [r for r in self._registrations if r.resource_name == resource]
            return regs if len(regs) >= count and resource in self._plugins else []

        with self._cond:
            if not self._cond.wait_for(ready, timeout):
                have = sum(r.resource_name == resource for r in self._registrations)
                raise TimeoutError(
                    f"{resource}: {have} registration(s) after {timeout}s, wanted {count}"
                )
            return ready()[-1]

    def wait_for_devices(
        self,
        resource: str,
        predicate: Callable[[tuple[PeerDevice, ...]], bool] = bool,
        *,
        timeout: float,
    ) -> tuple[PeerDevice, ...]:
        """Wait until ``predicate(devices)`` holds for ``resource``'s latest list."""

        def ready() -> bool:
            plugin = self._plugins.get(resource)
            return plugin is not None and plugin.updates > 0 and predicate(plugin.devices)

        with self._cond:
            if not self._cond.wait_for(ready, timeout):
                plugin = self._plugins.get(resource)
                last = plugin.devices if plugin else ()
                raise TimeoutError(f"{resource}: condition not met in {timeout}s; last {last}")
            return self._plugins[resource].devices

    # -- calls into a plugin ---------------------------------------------------------

    def get_device_plugin_options(
        self, resource: str, *, timeout: float = 5.0
    ) -> pb.DevicePluginOptions:
        """Call GetDevicePluginOptions on ``resource``'s plugin."""
        return self._stub(resource).GetDevicePluginOptions(pb.Empty(), timeout=timeout)

    def get_preferred_allocation(
        self,
        resource: str,
        available: Sequence[str],
        size: int,
        must_include: Sequence[str] = (),
        *,
        timeout: float = 5.0,
    ) -> list[str]:
        """Ask for a preferred choice of ``size`` devices for one container."""
        request = pb.PreferredAllocationRequest(
            container_requests=[
                pb.ContainerPreferredAllocationRequest(
                    available_deviceIDs=list(available),
                    must_include_deviceIDs=list(must_include),
                    allocation_size=size,
                )
            ]
        )
        response = self._stub(resource).GetPreferredAllocation(request, timeout=timeout)
        return list(response.container_responses[0].deviceIDs)

    def allocate(
        self, resource: str, containers: Sequence[Sequence[str]], *, timeout: float = 5.0
    ) -> pb.AllocateResponse:
        """Call Allocate with one ContainerAllocateRequest per entry of ``containers``."""
        request = pb.AllocateRequest(
            container_requests=[
                pb.ContainerAllocateRequest(devices_ids=list(ids)) for ids in containers
            ]
        )
        return self._stub(resource).Allocate(request, timeout=timeout)

    def pre_start_container(
        self, resource: str, device_ids: Sequence[str], *, timeout: float = 5.0
    ) -> pb.PreStartContainerResponse:
        """Call PreStartContainer for one container's devices."""
        request = pb.PreStartContainerRequest(devices_ids=list(device_ids))
        return self._stub(resource).PreStartContainer(request, timeout=timeout)

    # -- internals -------------------------------------------------------------------

    def _stub(self, resource: str) -> rpc.DevicePluginStub:
        with self._cond:
            plugin = self._plugins.get(resource)
        if plugin is None:
            raise LookupError(f"no device plugin registered for {resource}")
        return plugin.stub

    def _register(self, request: pb.RegisterRequest) -> str | None:
        """Accept a registration; return an error text for the caller, or None."""
        if request.version not in SUPPORTED_VERSIONS:
            return (
                f"requested device plugin version {request.version!r} is not supported; "
                f"supported: {', '.join(SUPPORTED_VERSIONS)}"
            )
        if not is_extended_resource_name(request.resource_name):
            return f"invalid extended resource name {request.resource_name!r}"
        if not request.endpoint or "/" in request.endpoint:
            return f"invalid endpoint {request.endpoint!r}: a file name in {self.socket_dir}"
        path = self.socket_dir / request.endpoint
        channel = grpc.insecure_channel(f"unix://{path}")
        try:
            grpc.channel_ready_future(channel).result(timeout=self._dial_timeout)
        except grpc.FutureTimeoutError:
            channel.close()
            return f"cannot connect to device plugin at {path} within {self._dial_timeout}s"
        options = request.options
        registration = Registration(
            version=request.version,
            endpoint=request.endpoint,
            resource_name=request.resource_name,
            pre_start_required=options.pre_start_required,
            get_preferred_allocation_available=options.get_preferred_allocation_available,
            at=time.monotonic(),
        )
        plugin = _Plugin(registration, channel, rpc.DevicePluginStub(channel))
        with self._cond:
            old = self._plugins.get(request.resource_name)
            self._plugins[request.resource_name] = plugin
            self._registrations.append(registration)
        if old is not None:  # a re-registration replaces the previous connection
            self._close(old)
        plugin.thread = threading.Thread(
            target=self._watch,
            args=(plugin,),
            name=f"listandwatch-{request.resource_name}",
            daemon=True,
        )
        plugin.thread.start()
        with self._cond:
            self._cond.notify_all()
        log.info(
            "registered %s at %s (preferred allocation: %s, pre-start: %s)",
            request.resource_name,
            path,
            registration.get_preferred_allocation_available,
            registration.pre_start_required,
        )
        return None

    def _watch(self, plugin: _Plugin) -> None:
        """Consume ListAndWatch until the stream ends; then mark the devices Unhealthy."""
        resource = plugin.registration.resource_name
        stream = plugin.stub.ListAndWatch(pb.Empty())
        plugin.stream = stream
        try:
            for message in stream:
                devices = tuple(
                    PeerDevice(d.ID, d.health, tuple(n.ID for n in d.topology.nodes))
                    for d in message.devices
                )
                self._update(plugin, devices)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                log.info("ListAndWatch of %s ended: %s", resource, err.code().name)
        with self._cond:
            plugin.connected = False
            current = self._plugins.get(resource) is plugin
        if current:
            self._update(
                plugin, tuple(PeerDevice(d.id, UNHEALTHY, d.numa_nodes) for d in plugin.devices)
            )

    def _update(self, plugin: _Plugin, devices: tuple[PeerDevice, ...]) -> None:
        with self._cond:
            plugin.devices = devices
            plugin.updates += 1
            self._cond.notify_all()
        if self._on_devices is not None:
            try:
                self._on_devices(plugin.registration.resource_name, devices)
            except Exception:  # a faulty callback must not end the watch
                log.exception("on_devices callback failed")

    @staticmethod
    def _close(plugin: _Plugin) -> None:
        if plugin.stream is not None:
            plugin.stream.cancel()
        plugin.channel.close()
        if plugin.thread is not None and plugin.thread is not threading.current_thread():
            plugin.thread.join(timeout=5)


class _RegistrationServicer(rpc.RegistrationServicer):
    """Translates Register calls into :meth:`KubeletPeer._register`."""

    def __init__(self, peer: KubeletPeer) -> None:
        self._peer = peer

    def Register(self, request: pb.RegisterRequest, context: grpc.ServicerContext) -> pb.Empty:
        error = self._peer._register(request)
        if error is not None:
            log.warning("rejected registration of %r: %s", request.resource_name, error)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, error)
        return pb.Empty()
