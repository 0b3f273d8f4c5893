"""The gRPC side: translates v1beta1 to and from a ResourceManager; owns socket and registration.

A :class:`PluginServer` serves one resource on ``<kubelet-dir>/<endpoint>`` and registers
it with the kubelet. :meth:`PluginServer.ensure_registered`, called every half second by
the daemon, notices a kubelet restart (``kubelet.sock`` recreated: a new inode or change
time; or the plugin's own socket deleted) and starts serving and registers again, well within 5 s.
Failures of a call become a gRPC status with a clear text; they never stop the server.

The server is a ``grpc.aio`` one, on an event loop in a thread of its own: ``ListAndWatch``
streams wait on that loop and hold no thread, so however many are open, the unary calls
(``Allocate`` and the others, plain functions run in a small thread pool) are answered at
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent import futures
from pathlib import Path
from typing import Any, TypeVar

import grpc

from kubenpu.deviceplugin.api import HEALTHY, KUBELET_SOCKET, UNHEALTHY, VERSION, pb, rpc
from kubenpu.deviceplugin.manager import AdvertisedDevice, ResourceManager
from kubenpu.deviceplugin.metrics import PluginMetrics
from kubenpu.errors import DeviceError

log = logging.getLogger(__name__)

#: Longest a ListAndWatch stream waits between checks that it should go on (changes, close
#: and shutdown wake it at once; this is only a safety net).
_STREAM_TICK_S = 1.0
#: Threads for the unary calls (the streams need none).
_UNARY_WORKERS = 8
#: Longest the daemon's thread waits for the server's loop to start or stop the server.
_LOOP_CALL_TIMEOUT_S = 30.0

_T = TypeVar("_T")

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _grpc_loop() -> asyncio.AbstractEventLoop:
    """The event loop every plugin server of the process runs on, in a daemon thread.

    One for all, never closed: grpc.aio keeps process-wide state bound to a loop, and a
    second loop, or a closed one, breaks it. That state is held for good, too: torn down
    whenever the last server stops (and made anew by the next one), it logs EBADF errors.
    """
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="grpc-aio", daemon=True).start()
            asyncio.run_coroutine_threadsafe(_hold_grpc_aio(), loop).result(_LOOP_CALL_TIMEOUT_S)
            _loop = loop
        return _loop


async def _hold_grpc_aio() -> None:
    grpc.aio.init_grpc_aio()  # reference counted: this one is never released


def _on_loop(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` on the plugin servers' loop and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coro, _grpc_loop()).result(_LOOP_CALL_TIMEOUT_S)


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

    ``ListAndWatch`` is a coroutine for a ``grpc.aio`` server's loop; the unary methods
    are plain functions, run in the server's thread pool.
    """

    def __init__(self, manager: ResourceManager, metrics: PluginMetrics) -> None:
        self._manager = manager
        self._metrics = metrics
        self._stopping = False
        #: Wakes each open stream (loop side).
        self._streams: set[Callable[[], None]] = set()

    def stop_streams(self) -> None:
        """End every ListAndWatch stream now and refuse new ones; call on the server's loop."""
        self._stopping = True
        for wake in list(self._streams):
            wake()

    def GetDevicePluginOptions(
        self, request: pb.Empty, context: grpc.ServicerContext
    ) -> pb.DevicePluginOptions:
        return options()

    async def ListAndWatch(
        self,
        request: pb.Empty,
        context: grpc.aio.ServicerContext[pb.Empty, pb.ListAndWatchResponse],
    ) -> AsyncIterator[pb.ListAndWatchResponse]:
        manager = self._manager
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def wake() -> None:  # from the thread that changed the manager
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(changed.set)

        # Watching before the first read: a change in between is not missed.
        unwatch = manager.watch(wake)
        self._streams.add(changed.set)
        try:
            version, listing = manager.listing()
            yield _listing_message(listing)
            while not self._stopping and not manager.closed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), _STREAM_TICK_S)
                changed.clear()  # before reading: a later change sets it again
                new, listing = manager.listing()
                if new != version:
                    version = new
                    yield _listing_message(listing)
        finally:
            unwatch()
            self._streams.discard(changed.set)

    def GetPreferredAllocation(
        self, request: pb.PreferredAllocationRequest, context: grpc.ServicerContext
    ) -> pb.PreferredAllocationResponse:
        responses = []
        for creq in request.container_requests:
            try:
                ids = self._manager.preferred(
                    list(creq.available_deviceIDs),
                    list(creq.must_include_deviceIDs),
                    creq.allocation_size,
                )
            except DeviceError as err:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            responses.append(pb.ContainerPreferredAllocationResponse(deviceIDs=ids))
        return pb.PreferredAllocationResponse(container_responses=responses)

    def Allocate(
        self, request: pb.AllocateRequest, context: grpc.ServicerContext
    ) -> pb.AllocateResponse:
        resource = self._manager.resource
        started = time.perf_counter()
        responses = []
        failure: tuple[grpc.StatusCode, str] | None = None
        try:
            for creq in request.container_requests:
                alloc = self._manager.allocate(list(creq.devices_ids))
                responses.append(
                    pb.ContainerAllocateResponse(
                        envs=alloc.envs,
                        mounts=[
                            pb.Mount(
                                container_path=m.container_path,
                                host_path=m.host_path,
                                read_only=m.read_only,
                            )
                            for m in alloc.mounts
                        ],
                        devices=[
                            pb.DeviceSpec(container_path=c, host_path=h, permissions=p)
                            for h, c, p in alloc.device_specs
                        ],
                        annotations=alloc.annotations,
                        cdi_devices=[pb.CDIDevice(name=n) for n in alloc.cdi_devices],
                    )
                )
        except DeviceError as err:
            log.warning("Allocate refused: %s", err)
            failure = (grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except Exception as err:  # a bug must cost one call, not the daemon
            log.exception("Allocate failed")
            failure = (grpc.StatusCode.INTERNAL, f"{resource}: internal error: {err}")
        # Recorded before the answer leaves: abort() sends the status at once, and a caller
        # that reads the metrics right after must find this call counted.
        self._metrics.allocate_seconds.labels(resource).observe(time.perf_counter() - started)
        if failure is not None:
            self._metrics.allocations.labels(resource, "error").inc()
            context.abort(*failure)
        self._metrics.allocations.labels(resource, "ok").inc(len(responses))
        return pb.AllocateResponse(container_responses=responses)

    def PreStartContainer(
        self, request: pb.PreStartContainerRequest, context: grpc.ServicerContext
    ) -> pb.PreStartContainerResponse:
        # Not required (see options()); answered so that a kubelet calling it anyway works.
        return pb.PreStartContainerResponse()


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
    """Serves one resource on its own socket and keeps it registered with the kubelet.

    Its gRPC server runs on the process's one gRPC event loop (a thread of its own); the
    methods are called from the daemon's thread.
    """

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
        self._server: grpc.aio.Server | None = None
        self._servicer: DevicePluginServicer | None = None
        self._pool: futures.ThreadPoolExecutor | None = None
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
        _on_loop(self._start_server())
        log.info("%s: serving on %s", self.manager.resource, self.socket_path)

    async def _start_server(self) -> None:
        # Made on the loop: a grpc.aio server belongs to the loop it is created on.
        pool = futures.ThreadPoolExecutor(
            max_workers=_UNARY_WORKERS, thread_name_prefix=self.endpoint
        )
        server = grpc.aio.server(migration_thread_pool=pool)
        servicer = DevicePluginServicer(self.manager, self._metrics)
        rpc.add_DevicePluginServicer_to_server(servicer, server)
        try:
            server.add_insecure_port(f"unix://{self.socket_path}")
            await server.start()
        except BaseException:
            pool.shutdown(wait=False)
            raise
        self._server, self._servicer, self._pool = server, servicer, pool

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
        servicer, self._servicer = self._servicer, None
        pool, self._pool = self._pool, None
        if server is not None and servicer is not None:
            _on_loop(_stop_server(server, servicer, grace))
        if pool is not None:
            pool.shutdown(wait=False)

    def stop(self) -> None:
        """Stop serving (ending ListAndWatch streams) and remove the socket."""
        self._shutdown_server(grace=1.0)
        self._registered_kubelet = None
        self.socket_path.unlink(missing_ok=True)


async def _stop_server(
    server: grpc.aio.Server, servicer: DevicePluginServicer, grace: float | None
) -> None:
    """End the streams (they would otherwise last the grace period out), then the server."""
    servicer.stop_streams()
    await server.stop(grace)
