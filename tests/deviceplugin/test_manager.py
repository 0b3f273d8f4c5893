"""The resource manager alone: preferred allocation, Allocate, sharing; no gRPC."""

from __future__ import annotations

import random

import numpy as np
import pytest

from kubenpu.deviceplugin.backends.mock import MockBackend
from kubenpu.deviceplugin.devices import NpuDevice
from kubenpu.deviceplugin.manager import Kind, ResourceManager
from kubenpu.deviceplugin.sharing import PendingPlacement, PendingReader, PlacementResolver
from kubenpu.engine.framework import select_whole_topology
from kubenpu.engine.state import ClusterState
from kubenpu.errors import DeviceError
from kubenpu.model import Device, Node
from kubenpu.names import ENV_CORE_LIMIT, ENV_MEM_LIMIT_GIB, ENV_VISIBLE_DEVICES


def grouped(groups: list[int]) -> list[NpuDevice]:
    """Devices npu-<i> with the given interconnect group each."""
    return [
        NpuDevice(f"npu-{i}", i, memory_mib=4096, numa_node=g, group=g, paths=(f"/dev/x{i}",))
        for i, g in enumerate(groups)
    ]


def whole(groups: list[int]) -> ResourceManager:
    return ResourceManager("aliyun.com/npu", grouped(groups), MockBackend(0))


# Preferred allocation over whole devices; groups written as index:group.
@pytest.mark.parametrize(
    ("groups", "available", "must", "size", "want"),
    [
        # 0:0 1:0 2:1 3:1, all free, 2 wanted: one group suffices -> group 0, lowest ids.
        ([0, 0, 1, 1], [0, 1, 2, 3], [], 2, [0, 1]),
        # group 0 has 1 free (1), group 1 has 2 free (2,3): 2 wanted -> group 1 whole.
        ([0, 0, 1, 1], [1, 2, 3], [], 2, [2, 3]),
        # best fit: 1 wanted; group 0 has 1 free, group 1 has 2 -> group 0 (keeps 1 whole).
        ([0, 0, 1, 1], [1, 2, 3], [], 1, [1]),
        # must-include 2 (group 1): stay in group 1 -> 3.
        ([0, 0, 1, 1], [0, 1, 2, 3], [2], 2, [2, 3]),
        # 3 wanted from groups of 2+2: must span 2 groups; the largest groups first.
        ([0, 0, 1, 1], [0, 1, 2, 3], [], 3, [0, 1, 2]),
        # 5 wanted from free groups of 4, 3 and 1: none holds all, so the largest groups
        # first, as the engine does: group 0 whole, then one of group 1 (not group 2).
        ([0, 0, 0, 0, 1, 1, 1, 2], list(range(8)), [], 5, [0, 1, 2, 3, 4]),
        # 8 devices in 2 groups of 4, 4 wanted with group 0 partly used: group 1 whole.
        ([0, 0, 0, 0, 1, 1, 1, 1], [1, 2, 3, 4, 5, 6, 7], [], 4, [4, 5, 6, 7]),
        # size equals must-include: nothing added.
        ([0, 0, 1, 1], [0, 1, 2, 3], [3], 1, [3]),
    ],
)
def test_preferred_whole_is_topology_aware(groups, available, must, size, want) -> None:
    manager = whole(groups)
    got = manager.preferred([f"npu-{i}" for i in available], [f"npu-{i}" for i in must], size)
    assert got[: len(must)] == [f"npu-{i}" for i in must]
    assert sorted(got) == sorted(f"npu-{i}" for i in want)


@pytest.mark.parametrize("seed", range(40))
def test_preferred_whole_is_the_engines_choice(seed: int) -> None:
    # One rule for both: what the plugin prefers on its own is what the scheduler picks.
    rng = random.Random(seed)
    groups = sorted(rng.randrange(4) for _ in range(rng.randint(1, 16)))
    free = sorted(rng.sample(range(len(groups)), rng.randint(1, len(groups))))
    size = rng.randint(1, len(free))
    got = whole(groups).preferred([f"npu-{i}" for i in free], [], size)
    node = Node(
        "n",
        1000,
        1024,
        tuple(Device(f"npu-{i}", i, group=g) for i, g in enumerate(groups)),
    )
    engine = select_whole_topology(ClusterState([node]), 0, np.array(free), size)
    assert got == [f"npu-{i}" for i in engine]


def test_preferred_skips_unhealthy_and_rejects_impossible_sizes() -> None:
    manager = whole([0, 0, 1, 1])
    manager.set_unhealthy({"npu-0": "broken"})
    assert manager.preferred(["npu-0", "npu-1", "npu-2", "npu-3"], [], 1) == ["npu-1"]
    with pytest.raises(DeviceError, match="impossible"):
        manager.preferred(["npu-0"], [], 2)
    with pytest.raises(DeviceError, match="unknown"):
        manager.preferred(["npu-9"], [], 1)


def test_allocate_whole_devices() -> None:
    manager = whole([0, 0, 1, 1])
    alloc = manager.allocate(["npu-1", "npu-3"])
    assert alloc.envs[ENV_VISIBLE_DEVICES] == "1,3"
    assert alloc.envs["MOCK_NPU_VISIBLE_DEVICES"] == "1,3"
    assert [s[0] for s in alloc.device_specs] == ["/dev/x1", "/dev/x3"]
    assert alloc.physical_ids == ("npu-1", "npu-3")


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([], "no device ids"),
        (["npu-0", "npu-0"], "repeated"),
        (["npu-7"], "unknown device ids"),
        ([f"npu-{i}" for i in range(5)], "Allocate of 5 devices, but the node has 4"),
        (["npu-2"], "unhealthy, e.g. npu-2: overheated"),
    ],
)
def test_allocate_errors_are_clear(ids, message) -> None:
    manager = whole([0, 0, 1, 1])
    manager.set_unhealthy({"npu-2": "overheated"})
    with pytest.raises(DeviceError, match=message):
        manager.allocate(ids)


def test_health_change_bumps_version_and_wakes_waiters() -> None:
    manager = whole([0, 0])
    version, listing = manager.listing()
    assert all(d.healthy for d in listing)
    assert manager.set_unhealthy({"npu-1": "x"})
    assert not manager.set_unhealthy({"npu-1": "still x"})  # same set: no new message
    assert manager.wait_for_change(version, timeout=0.01) == version + 1
    assert [d.healthy for d in manager.listing()[1]] == [True, False]


def test_watchers_are_called_on_changes_and_close_until_unwatched() -> None:
    manager = whole([0, 0])
    calls: list[int] = []
    unwatch = manager.watch(lambda: calls.append(manager.listing()[0]))
    manager.set_unhealthy({"npu-1": "x"})
    manager.set_unhealthy({"npu-1": "x"})  # no change: no call
    manager.set_unhealthy({})
    assert calls == [1, 2]  # called after the change, which it can read
    unwatch()
    manager.set_unhealthy({"npu-0": "x"})
    assert calls == [1, 2]
    manager.watch(lambda: calls.append(-1))
    manager.close()
    assert calls == [1, 2, -1]


def core(groups: list[int], lookup=None) -> ResourceManager:
    resolver = PlacementResolver(lookup) if lookup is not None else None
    return ResourceManager(
        "aliyun.com/npu-core", grouped(groups), MockBackend(0), kind=Kind.CORE, resolver=resolver
    )


def units(dev: int, ks: range) -> list[str]:
    return [f"npu-{dev}-core-{k}" for k in ks]


def test_core_units_ids_and_local_choice() -> None:
    manager = core([0, 0])
    listing = manager.listing()[1]
    assert len(listing) == 200 and listing[0].id == "npu-0-core-0"
    alloc = manager.allocate(units(1, range(30)))
    assert alloc.physical_ids == ("npu-1",)
    assert alloc.envs[ENV_CORE_LIMIT] == "30" and alloc.envs[ENV_VISIBLE_DEVICES] == "1"
    # Units on two devices with no scheduler record: refused, never oversubscribed.
    with pytest.raises(DeviceError, match="span devices"):
        manager.allocate(units(0, range(10)) + units(1, range(10)))


def test_core_preferred_packs_best_fit() -> None:
    manager = core([0, 0])
    # npu-0 has 20 free units, npu-1 has 100: 20 wanted -> npu-0 (keeps npu-1 whole).
    available = units(0, range(80, 100)) + units(1, range(100))
    assert manager.preferred(available, [], 20) == units(0, range(80, 100))
    # 50 wanted: only npu-1 fits.
    assert manager.preferred(available, [], 50) == units(1, range(50))


def test_core_follows_scheduler_annotation() -> None:
    placements = [PendingPlacement("ns", "p1", "uid-1", ("npu-1",), (300,), "t1")]
    manager = core([0, 0], lambda: placements)
    # The preferred answer steers the kubelet to the annotated device.
    assert manager.preferred(units(0, range(100)) + units(1, range(100)), [], 30) == units(
        1, range(30)
    )
    # The kubelet chose units of npu-0 anyway: the scheduler's record wins.
    assert manager.allocate(units(0, range(30))).physical_ids == ("npu-1",)
    # The entry is claimed: the next 30-unit request falls back to the local choice.
    assert manager.allocate(units(0, range(30, 60))).physical_ids == ("npu-0",)


def test_resolver_race_same_share_pods_each_get_one_entry() -> None:
    placements = [
        PendingPlacement("ns", "b", "uid-b", ("1",), (500,), "2024-01-01T00:00:02Z"),
        PendingPlacement("ns", "a", "uid-a", ("0",), (500,), "2024-01-01T00:00:01Z"),
    ]
    resolver = PlacementResolver(lambda: placements)
    first, second = resolver.claim(50), resolver.claim(50)
    assert first is not None and second is not None
    # Oldest first; both entries used once, so each device carries exactly its 500 milli.
    assert (first[0].name, first[1]) == ("a", "0")
    assert (second[0].name, second[1]) == ("b", "1")
    assert resolver.claim(50) is None


def test_resolver_survives_api_errors() -> None:
    def broken() -> list[PendingPlacement]:
        raise ConnectionError("apiserver down")

    manager = core([0, 0], broken)
    assert manager.allocate(units(1, range(10))).physical_ids == ("npu-1",)


def pending_pod(uid: str, annotations: dict[str, str], name: str = "p") -> dict:
    return {"metadata": {"namespace": "ns", "name": name, "uid": uid, "annotations": annotations}}


RECORD = {
    "kubenpu.io/node": "node-a",
    "kubenpu.io/devices": "npu-0,npu-1",
    "kubenpu.io/shares": "300,200",
    "kubenpu.io/assumed-at": "2026-01-01T00:00:00Z",
}


def test_pending_reader_reads_the_record_with_the_adapters_reader() -> None:
    reader = PendingReader("node-a")
    assert reader.read([pending_pod("u", RECORD)]) == [
        PendingPlacement("ns", "p", "u", ("npu-0", "npu-1"), (300, 200), "2026-01-01T00:00:00Z")
    ]
    assert PendingReader("node-b").read([pending_pod("u", RECORD)]) == []  # another node's
    no_node = {k: v for k, v in RECORD.items() if k != "kubenpu.io/node"}
    no_devices = {"kubenpu.io/node": "node-a"}  # a placement that holds no device
    assert reader.read([pending_pod("u", {}), pending_pod("v", no_node)]) == []
    assert reader.read([pending_pod("w", no_devices)]) == []


def test_a_malformed_record_is_skipped_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    reader = PendingReader("node-a")
    bad = pending_pod("u-bad", dict(RECORD, **{"kubenpu.io/shares": "x,200"}), name="bad")
    good = pending_pod("u-good", RECORD, name="good")
    with caplog.at_level("WARNING", logger="kubenpu.deviceplugin.sharing"):
        for _ in range(3):
            assert [p.name for p in reader.read([bad, good])] == ["good"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "pod ns/bad" in warnings[0] and "kubenpu.io/shares" in warnings[0]
    caplog.clear()
    reader.read([good])  # mended or gone: forgotten, so a new problem is logged again
    with caplog.at_level("WARNING", logger="kubenpu.deviceplugin.sharing"):
        reader.read([bad])
    assert len(caplog.records) == 1


def test_core_rejects_more_than_one_device() -> None:
    manager = core([0, 0])
    with pytest.raises(DeviceError, match="at most 100"):
        manager.allocate(units(0, range(100)) + units(1, range(10)))


def test_mem_units_carry_only_the_limit() -> None:
    manager = ResourceManager("aliyun.com/npu-mem", grouped([0, 0]), MockBackend(0), kind=Kind.MEM)
    assert len(manager.listing()[1]) == 8  # 4 GiB per device
    alloc = manager.allocate(["npu-1-mem-0", "npu-1-mem-1"])
    assert alloc.envs == {ENV_MEM_LIMIT_GIB: "2"} and alloc.device_specs == ()
    with pytest.raises(DeviceError, match="span devices"):
        manager.allocate(["npu-0-mem-0", "npu-1-mem-0"])


def test_cdi_names() -> None:
    manager = ResourceManager(
        "aliyun.com/npu", grouped([0]), MockBackend(0), cdi_kind="kubenpu.io/npu"
    )
    assert manager.allocate(["npu-0"]).cdi_devices == ("kubenpu.io/npu=npu-0",)
