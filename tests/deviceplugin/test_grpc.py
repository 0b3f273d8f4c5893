"""The daemon over real gRPC and unix sockets, driven by the kubelet peer."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from kubenpu.devcluster.kubelet import KubeletPeer
from kubenpu.deviceplugin import server
from kubenpu.deviceplugin.api import VERSION, pb, rpc
from kubenpu.deviceplugin.sharing import PendingPlacement

NPU = "aliyun.com/npu"
CORE = "aliyun.com/npu-core"
MEM = "aliyun.com/npu-mem"


def test_registration_fields_and_first_answer(peer: KubeletPeer, start_daemon) -> None:
    start_daemon()
    reg = peer.wait_for_registration(NPU, timeout=5)
    assert reg.version == VERSION == "v1beta1"
    assert reg.endpoint == "kubenpu-npu.sock"
    assert reg.get_preferred_allocation_available and not reg.pre_start_required
    devices = peer.wait_for_devices(NPU, timeout=5)
    assert [d.id for d in devices] == ["npu-0", "npu-1", "npu-2", "npu-3"]
    assert all(d.healthy for d in devices)
    assert [d.numa_nodes for d in devices] == [(0,), (0,), (1,), (1,)]
    options = peer.get_device_plugin_options(NPU)
    assert options.get_preferred_allocation_available
    peer.pre_start_container(NPU, ["npu-0"])  # answered although not required


def test_health_change_pushed_within_one_second(
    peer: KubeletPeer, start_daemon, health_dir: Path
) -> None:
    start_daemon(health_interval=0.5)
    peer.wait_for_devices(NPU, lambda ds: len(ds) == 4, timeout=5)
    marker = health_dir / "unhealthy-npu-2"
    marker.touch()
    started = time.monotonic()
    peer.wait_for_devices(NPU, lambda ds: not ds[2].healthy, timeout=1.0)
    assert time.monotonic() - started < 1.0
    with pytest.raises(grpc.RpcError) as err:
        peer.allocate(NPU, [["npu-2"]])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unhealthy" in err.value.details() and "npu-2" in err.value.details()
    marker.unlink()
    peer.wait_for_devices(NPU, lambda ds: all(d.healthy for d in ds), timeout=1.0)


def test_preferred_allocation_over_the_wire(peer: KubeletPeer, start_daemon) -> None:
    start_daemon()
    peer.wait_for_devices(NPU, timeout=5)
    # npu-0 taken: 2 wanted from npu-1 (group 0), npu-2, npu-3 (group 1) -> group 1.
    assert sorted(peer.get_preferred_allocation(NPU, ["npu-1", "npu-2", "npu-3"], 2)) == [
        "npu-2",
        "npu-3",
    ]
    got = peer.get_preferred_allocation(NPU, ["npu-0", "npu-1", "npu-2", "npu-3"], 2, ["npu-3"])
    assert sorted(got) == ["npu-2", "npu-3"]
    with pytest.raises(grpc.RpcError) as err:
        peer.get_preferred_allocation(NPU, ["npu-0"], 3)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_allocate_one_and_two_devices_in_one_request(peer: KubeletPeer, start_daemon) -> None:
    start_daemon(mounts=["/opt/npu/lib:/usr/local/npu/lib"], cdi=True)
    peer.wait_for_devices(NPU, timeout=5)
    resp = peer.allocate(NPU, [["npu-0"], ["npu-2", "npu-3"]])
    one, two = resp.container_responses
    assert one.envs["NPU_VISIBLE_DEVICES"] == "0"
    assert two.envs["NPU_VISIBLE_DEVICES"] == "2,3"
    assert [d.host_path for d in two.devices] == ["/dev/mock-npu2", "/dev/mock-npu3"]
    assert all(d.permissions == "rw" for d in two.devices)
    assert [(m.host_path, m.container_path, m.read_only) for m in one.mounts] == [
        ("/opt/npu/lib", "/usr/local/npu/lib", True)
    ]
    assert [c.name for c in two.cdi_devices] == ["kubenpu.io/npu=npu-2", "kubenpu.io/npu=npu-3"]
    assert two.annotations["kubenpu.io/devices"] == "npu-2,npu-3"


@pytest.mark.parametrize(
    ("containers", "text"),
    [
        ([["npu-9"]], "unknown device ids ['npu-9']"),
        (
            [["npu-0", "npu-1", "npu-2", "npu-3", "npu-4"]],
            "Allocate of 5 devices, but the node has 4",
        ),
        ([[]], "no device ids"),
    ],
)
def test_allocate_errors_are_statuses_and_the_daemon_survives(
    peer: KubeletPeer, start_daemon, containers, text
) -> None:
    start_daemon()
    peer.wait_for_devices(NPU, timeout=5)
    with pytest.raises(grpc.RpcError) as err:
        peer.allocate(NPU, containers)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert text in err.value.details()
    assert peer.allocate(NPU, [["npu-1"]]).container_responses[0].envs["NPU_VISIBLE_DEVICES"]


def test_kubelet_restart_reregisters_within_five_seconds(
    peer: KubeletPeer, start_daemon, kubelet_dir: Path
) -> None:
    start_daemon(sharing=True)
    peer.wait_for_registration(NPU, timeout=5)
    peer.wait_for_registration(CORE, timeout=5)
    assert {p.name for p in kubelet_dir.iterdir()} >= {"kubenpu-npu.sock", "kubenpu-npu-core.sock"}
    (kubelet_dir / "kubelet_internal_checkpoint").write_text("{}")
    started = time.monotonic()
    peer.restart()
    peer.wait_for_registration(NPU, timeout=5, count=2)
    peer.wait_for_registration(CORE, timeout=5, count=2)
    assert time.monotonic() - started < 5
    assert (kubelet_dir / "kubelet_internal_checkpoint").exists()
    devices = peer.wait_for_devices(NPU, lambda ds: len(ds) == 4, timeout=5)
    assert all(d.healthy for d in devices)
    assert peer.allocate(NPU, [["npu-0"]]).container_responses


def test_plugin_registers_once_the_kubelet_appears(kubelet_dir: Path, start_daemon) -> None:
    start_daemon()
    with KubeletPeer(kubelet_dir) as late:
        late.wait_for_registration(NPU, timeout=5)


def test_sharing_resolves_the_scheduler_placement(peer: KubeletPeer, start_daemon) -> None:
    placements = [PendingPlacement("default", "infer", "uid-1", ("npu-3",), (250,), "t")]
    start_daemon(sharing=True, memory_resource=True, pod_lookup=lambda: placements)
    devices = peer.wait_for_devices(CORE, lambda ds: len(ds) == 400, timeout=5)
    available = [d.id for d in devices]
    preferred = peer.get_preferred_allocation(CORE, available, 25)
    assert {i.rsplit("-core-", 1)[0] for i in preferred} == {"npu-3"}
    resp = peer.allocate(CORE, [preferred]).container_responses[0]
    assert resp.envs["NPU_VISIBLE_DEVICES"] == "3" and resp.envs["NPU_CORE_LIMIT"] == "25"
    assert resp.annotations["kubenpu.io/shares"] == "250"
    mem = peer.wait_for_devices(MEM, lambda ds: len(ds) == 64, timeout=5)  # 16 GiB x 4
    assert mem[0].id == "npu-0-mem-0"
    assert peer.allocate(MEM, [["npu-3-mem-0"]]).container_responses[0].envs == {
        "NPU_MEM_LIMIT_GIB": "1"
    }


def test_registration_is_rejected_for_bad_requests(kubelet_dir: Path) -> None:
    with (
        KubeletPeer(kubelet_dir, dial_timeout=0.5) as peer,
        grpc.insecure_channel(f"unix://{peer.socket_path}") as channel,
    ):
        stub = rpc.RegistrationStub(channel)
        for request, text in [
            (
                pb.RegisterRequest(version="v1alpha", endpoint="x.sock", resource_name=NPU),
                "version",
            ),
            (pb.RegisterRequest(version=VERSION, endpoint="x.sock", resource_name="npu"), "name"),
            (
                pb.RegisterRequest(version=VERSION, endpoint="none.sock", resource_name=NPU),
                "connect",
            ),
        ]:
            with pytest.raises(grpc.RpcError) as err:
                stub.Register(request, timeout=15)
            assert text in err.value.details()
        assert peer.registrations == []


def test_new_kubelet_socket_alone_triggers_registration(
    peer: KubeletPeer, start_daemon, kubelet_dir: Path
) -> None:
    start_daemon()
    peer.wait_for_registration(NPU, timeout=5)
    # Only kubelet.sock is replaced; the plugin's socket stays: still a new kubelet.
    peer.stop()
    peer.start()
    peer.wait_for_registration(NPU, timeout=5, count=2)
    assert (kubelet_dir / "kubenpu-npu.sock").exists()


def test_many_list_and_watch_streams_do_not_starve_allocate(
    peer: KubeletPeer, start_daemon, kubelet_dir: Path
) -> None:
    # Each kubelet restart, node agent or debugging client opens a stream; an open stream
    # must not hold what unary calls need (a sync server's pool had 8 threads).
    start_daemon()
    peer.wait_for_devices(NPU, timeout=5)
    streams = 32
    first: queue.Queue[int] = queue.Queue()
    with grpc.insecure_channel(f"unix://{kubelet_dir / 'kubenpu-npu.sock'}") as channel:
        stub = rpc.DevicePluginStub(channel)
        calls = [stub.ListAndWatch(pb.Empty(), timeout=30) for _ in range(streams)]

        def read_first(call: Any) -> None:
            with contextlib.suppress(grpc.RpcError):
                first.put(len(next(call).devices))

        readers = [threading.Thread(target=read_first, args=(c,), daemon=True) for c in calls]
        for reader in readers:
            reader.start()
        got = []
        with contextlib.suppress(queue.Empty):
            for _ in range(streams):
                got.append(first.get(timeout=5))
        try:
            started = time.monotonic()
            resp = peer.allocate(NPU, [["npu-1"]], timeout=3)
            assert time.monotonic() - started < 1.0
            assert resp.container_responses[0].envs["NPU_VISIBLE_DEVICES"] == "1"
            assert got == [4] * streams  # every stream got its list, too
        finally:
            for call in calls:
                call.cancel()
            for reader in readers:
                reader.join(timeout=5)


def test_streams_over_the_limit_are_refused_and_allocate_still_answers(
    peer: KubeletPeer, start_daemon, kubelet_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # However many streams a client opens, the unary calls keep their threads: past the
    # limit (4 here) a stream is refused at once, with the reason.
    monkeypatch.setattr(server, "MAX_STREAMS", 4)
    start_daemon()
    peer.wait_for_devices(NPU, timeout=5)
    with grpc.insecure_channel(f"unix://{kubelet_dir / 'kubenpu-npu.sock'}") as channel:
        stub = rpc.DevicePluginStub(channel)
        # The plugin's own registration gave the kubelet peer one stream already.
        calls = [stub.ListAndWatch(pb.Empty(), timeout=30) for _ in range(3)]
        try:
            assert [len(next(c).devices) for c in calls] == [4, 4, 4]
            extra = stub.ListAndWatch(pb.Empty(), timeout=5)
            with pytest.raises(grpc.RpcError) as info:
                next(extra)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "4 ListAndWatch streams are open" in (info.value.details() or "")
            resp = peer.allocate(NPU, [["npu-2"]], timeout=3)
            assert resp.container_responses[0].envs["NPU_VISIBLE_DEVICES"] == "2"
        finally:
            for call in calls:
                call.cancel()
        # A closed stream frees its place.
        deadline = time.monotonic() + 5
        while True:
            again = stub.ListAndWatch(pb.Empty(), timeout=5)
            try:
                assert len(next(again).devices) == 4
                again.cancel()
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline
                time.sleep(0.1)


def test_a_slow_api_lookup_does_not_hold_up_other_calls(peer: KubeletPeer, start_daemon) -> None:
    # A shared Allocate reads the pods (here: slowly) on a thread of the plugin's pool and
    # holds only that one: a whole-device Allocate meanwhile is answered at once.
    threads: list[str] = []
    entered = threading.Event()

    def slow_lookup() -> list[PendingPlacement]:
        threads.append(threading.current_thread().name)
        entered.set()
        time.sleep(1.0)
        return []

    start_daemon(sharing=True, pod_lookup=slow_lookup)
    peer.wait_for_devices(CORE, lambda ds: len(ds) == 400, timeout=5)
    shared = threading.Thread(target=peer.allocate, args=(CORE, [["npu-1-core-0"]]))
    shared.start()
    try:
        assert entered.wait(5)
        started = time.monotonic()
        peer.allocate(NPU, [["npu-0"]], timeout=3)
        assert time.monotonic() - started < 0.5
    finally:
        shared.join(timeout=10)
    assert threads and all(name.startswith("kubenpu-npu-core.sock") for name in threads)
