"""The gRPC side: translates v1beta1 to and from a ResourceManager; owns socket and registration.

A :class:`PluginServer` serves one resource on ``<kubelet-dir>/<endpoint>`` and registers
it with the kubelet. :meth:`PluginServer.ensure_registered`, called every half second by
the daemon, notices a kubelet restart (``kubelet.sock`` recreated: a new inode or change
time; or the plugin's own socket deleted) and starts serving and registers again, well within 5 s.
Failures of a call become a gRPC status with a clear text; they never stop the server.

The server is a threaded gRPC one whose pool never makes a call wait for another: it
starts a thread whenever all of its threads are busy and reuses idle ones. A
``ListAndWatch`` stream holds its thread for as long as it is open, so with a fixed pool
(8 threads) 8 open streams starved ``Allocate``; here up to :data:`MAX_STREAMS` open
streams (more are refused at once with RESOURCE_EXHAUSTED) leave the unary calls answered
at once, and a unary call that waits on the Kubernetes API (a shared ``Allocate``)
holds only its own thread.
A ``grpc.aio`` server would hold no thread per stream, but its per-call machinery on the
event loop costs every ``Allocate`` about 0.05 ms more, even with the call answered on the
loop (``bench/deviceplugin_bench.py`` side by side: 0.45-0.52 against 0.39-0.41 ms p50),
and Allocate latency is what a starting container waits for; streams are few (one per
kubelet registration).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc

from kubenpu.deviceplugin.api import HEALTHY, KUBELET_SOCKET, UNHEALTHY, VERSION, pb, rpc
from kubenpu.deviceplugin.devices import ContainerAllocation
from kubenpu.deviceplugin.manager import AdvertisedDevice, ResourceManager
from kubenpu.deviceplugin.metrics import PluginMetrics
from kubenpu.errors import DeviceError

log = logging.getLogger(__name__)

#: How long ListAndWatch waits for a change before checking that the stream is alive.
_STREAM_TICK_S = 1.0
#: Most calls in flight at once, open streams included: the pool's thread limit. Threads
#: start only when every one is busy, so the pool holds as many as were ever busy at once.
_MAX_CALLS = 1024
#: Most ListAndWatch streams open at once; one more is refused (RESOURCE_EXHAUSTED), so
#: that however many are attempted, unary calls keep the rest of the pool.
MAX_STREAMS = _MAX_CALLS // 4


def _identity(path: Path) -> tuple[int, int, int] | None:
    """Who a file is: device, inode and change time (an inode number alone can be reused
    by a file recreated at once, e.g. on tmpfs)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_ctime_ns


class DevicePluginServicer(rpc.DevicePluginServicer):
    """The DevicePlugin service for one resource manager: protobuf in, protobuf out.

    Each call runs on a thread of the server's pool; ``stop`` ends the open streams.
    """

    def __init__(
        self, manager: ResourceManager, metrics: PluginMetrics, stop: threading.Event
    ) -> None:
        self._manager = manager
        self._stop = stop
        self._streams = threading.BoundedSemaphore(MAX_STREAMS)
        resource = manager.resource
        self._allocate_seconds = metrics.allocate_seconds.labels(resource)
        self._allocations_ok = metrics.allocations.labels(resource, "ok")
        self._allocations_error = metrics.allocations.labels(resource, "error")

    def GetDevicePluginOptions(
        self, request: pb.Empty, context: grpc.ServicerContext
    ) -> pb.DevicePluginOptions:
        return options()

    def ListAndWatch(
        self, request: pb.Empty, context: grpc.ServicerContext
    ) -> Iterator[pb.ListAndWatchResponse]:
        if not self._streams.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{MAX_STREAMS} ListAndWatch streams are open on this socket already "
                "(a kubelet needs one); close some and retry",
            )
        try:
            manager = self._manager
            version, listing = manager.listing()
            yield _listing_message(listing)
            while context.is_active() and not self._stop.is_set() and not manager.closed:
                new = manager.wait_for_change(version, _STREAM_TICK_S)
                if new != version:
                    version, listing = manager.listing()
                    yield _listing_message(listing)
        finally:
            self._streams.release()

    def GetPreferredAllocation(
        self, request: pb.PreferredAllocationRequest, context: grpc.ServicerContext
    ) -> pb.PreferredAllocationResponse:
        responses = []
        for creq in request.container_requests:
            try:
                ids = self._manager.preferred(
                    creq.available_deviceIDs, creq.must_include_deviceIDs, creq.allocation_size
                )
            except DeviceError as err:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            responses.append(pb.ContainerPreferredAllocationResponse(deviceIDs=ids))
        return pb.PreferredAllocationResponse(container_responses=responses)

    def Allocate(
        self, request: pb.AllocateRequest, context: grpc.ServicerContext
    ) -> pb.AllocateResponse:
        answer = self._allocate(request)
        if isinstance(answer, _Failure):
            context.abort(answer.code, answer.details)
        return answer

    def _allocate(self, request: pb.AllocateRequest) -> pb.AllocateResponse | _Failure:
        started = time.perf_counter()
        response = pb.AllocateResponse()
        failure = None
        try:
            for creq in request.container_requests:
                _fill(response.container_responses.add(), self._manager.allocate(creq.devices_ids))
        except DeviceError as err:
            log.warning("Allocate refused: %s", err)
            failure = _Failure(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except Exception as err:  # a bug must cost one call, not the daemon
            log.exception("Allocate failed")
            failure = _Failure(
                grpc.StatusCode.INTERNAL, f"{self._manager.resource}: internal error: {err}"
            )
        # Recorded before the answer leaves: abort() sends the status at once, and a caller
        # that reads the metrics right after must find this call counted.
        self._allocate_seconds.observe(time.perf_counter() - started)
        if failure is not None:
            self._allocations_error.inc()
            return failure
        self._allocations_ok.inc(len(response.container_responses))
        return response

    def PreStartContainer(
        self, request: pb.PreStartContainerRequest, context: grpc.ServicerContext
    ) -> pb.PreStartContainerResponse:
        # Not required (see options()); answered so that a kubelet calling it anyway works.
        return pb.PreStartContainerResponse()


@dataclass(frozen=True, slots=True)
class _Failure:
    """A call's refusal, sent as its gRPC status."""

    code: grpc.StatusCode
    details: str


def _fill(message: pb.ContainerAllocateResponse, alloc: ContainerAllocation) -> None:
    """Write one container's allocation into its (new, empty) response message."""
    message.envs.update(alloc.envs)
    for m in alloc.mounts:
        message.mounts.add(
            container_path=m.container_path, host_path=m.host_path, read_only=m.read_only
        )
    for host, container, permissions in alloc.device_specs:
        message.devices.add(container_path=container, host_path=host, permissions=permissions)
    message.annotations.update(alloc.annotations)
    for name in alloc.cdi_devices:
        message.cdi_devices.add(name=name)


def options() -> pb.DevicePluginOptions:
    """What every kubenpu plugin announces: preferred allocation yes, pre-start no."""
    return pb.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)


def _listing_message(listing: list[AdvertisedDevice]) -> pb.ListAndWatchResponse:
    return pb.ListAndWatchResponse(
        devices=[
            pb.Device(
                ID=d.id,
                health=HEALTHY if d.healthy else UNHEALTHY,
                topology=pb.TopologyInfo(nodes=[pb.NUMANode(ID=d.numa_node)])
                if d.numa_node is not None
                else None,
            )
            for d in listing
        ]
    )


class PluginServer:
    """Serves one resource on its own socket and keeps it registered with the kubelet."""

    def __init__(
        self,
        manager: ResourceManager,
        kubelet_dir: str | os.PathLike[str],
        endpoint: str,
        metrics: PluginMetrics,
    ) -> None:
        self.manager = manager
        self.kubelet_dir = Path(kubelet_dir)
        self.endpoint = endpoint
        self.socket_path = self.kubelet_dir / endpoint
        self._metrics = metrics
        self._server: grpc.Server | None = None
        self._pool: futures.ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self._registered_kubelet: tuple[int, int, int] | None = None  # kubelet.sock we know
        self._last_failure = ""

    @property
    def registered(self) -> bool:
        """Whether the last registration is still current."""
        return self._registered_kubelet is not None

    def _serve(self) -> None:
        # The old socket is gone, so are its clients: no grace for their streams.
        self._shutdown_server(grace=None)
        self.kubelet_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        self._stop = threading.Event()
        # Idle threads are reused and a new one starts only when all are busy: no call
        # ever queues behind the open streams (see the module doc).
        pool = futures.ThreadPoolExecutor(max_workers=_MAX_CALLS, thread_name_prefix=self.endpoint)
        server = grpc.server(pool)
        rpc.add_DevicePluginServicer_to_server(
            DevicePluginServicer(self.manager, self._metrics, self._stop), server
        )
        try:
            server.add_insecure_port(f"unix://{self.socket_path}")
            server.start()
        except BaseException:
            pool.shutdown(wait=False)
            raise
        self._server, self._pool = server, pool
        log.info("%s: serving on %s", self.manager.resource, self.socket_path)

    def _register(self) -> bool:
        kubelet_sock = self.kubelet_dir / KUBELET_SOCKET
        identity = _identity(kubelet_sock)
        if identity is None:
            self._note_failure(f"waiting for the kubelet: {kubelet_sock} does not exist")
            return False
        request = pb.RegisterRequest(
            version=VERSION,
            endpoint=self.endpoint,
            resource_name=self.manager.resource,
            options=options(),
        )
        with grpc.insecure_channel(f"unix://{kubelet_sock}") as channel:
            try:
                rpc.RegistrationStub(channel).Register(request, timeout=10)
            except grpc.RpcError as err:
                self._note_failure(f"registration refused: {err.code().name}: {err.details()}")
                return False
        self._registered_kubelet = identity
        self._last_failure = ""
        self._metrics.registrations.labels(self.manager.resource).inc()
        log.info(
            "%s: registered with the kubelet at %s (endpoint %s)",
            self.manager.resource,
            kubelet_sock,
            self.endpoint,
        )
        return True

    def _note_failure(self, text: str) -> None:
        if text != self._last_failure:  # log each new reason once, not every retry
            log.warning("%s: %s; retrying", self.manager.resource, text)
            self._last_failure = text

    def ensure_registered(self) -> bool:
        """Serve and register if not yet done or if the kubelet restarted; True if current."""
        kubelet_identity = _identity(self.kubelet_dir / KUBELET_SOCKET)
        own_socket_ok = self._server is not None and self.socket_path.exists()
        if own_socket_ok and self._registered_kubelet is not None:
            if kubelet_identity == self._registered_kubelet:
                return True
            log.info("%s: kubelet.sock was recreated; registering again", self.manager.resource)
        self._registered_kubelet = None
        if not own_socket_ok:
            if self._server is not None:
                log.info("%s: own socket was removed; serving again", self.manager.resource)
            self._serve()
        return self._register()

    def _shutdown_server(self, grace: float | None) -> None:
        server, self._server = self._server, None
        pool, self._pool = self._pool, None
        if server is not None:
            self._stop.set()  # streams end at their next tick instead of lasting the grace out
            server.stop(grace=grace).wait()
        if pool is not None:
            pool.shutdown(wait=False)

    def stop(self) -> None:
        """Stop serving (ending ListAndWatch streams) and remove the socket."""
        self._shutdown_server(grace=1.0)
        self._registered_kubelet = None
        self.socket_path.unlink(missing_ok=True)
