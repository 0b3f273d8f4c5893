"""The node agent's pure parts: requests, admission, status bodies, configs, checkpoints."""

import pytest

from kubenpu import names
from kubenpu.devcluster.kubelet import PeerDevice
from kubenpu.devcluster.nodeagent import AgentConfig, container_requests, read_checkpoint, status
from kubenpu.devcluster.nodeagent.admission import (
    AdmissionError,
    PodRecord,
    check_available,
    free_devices,
    missing_plugins,
)
from kubenpu.devcluster.nodeagent.checkpoint import checkpoint_document, restore, write_checkpoint
from kubenpu.deviceplugin.protocol import HEALTHY, UNHEALTHY
from kubenpu.errors import KubeNpuError, PlacementError


def test_container_requests_counts_extended_resources_per_container() -> None:
    pod = {
        "spec": {
            "initContainers": [
                {"name": "init", "resources": {"limits": {names.RESOURCE_NPU: "1"}}}
            ],
            "containers": [
                {"name": "a", "resources": {"limits": {names.RESOURCE_NPU: "2", "cpu": "1"}}},
                {"name": "b", "resources": {"requests": {names.RESOURCE_NPU: "1"}}},
                {"name": "c", "resources": {"limits": {"memory": "1Gi"}}},
                {"name": "d"},
                {"name": "e", "resources": {"limits": {names.RESOURCE_NPU: "0"}}},
            ],
        }
    }
    assert container_requests(pod) == {"a": {names.RESOURCE_NPU: 2}, "b": {names.RESOURCE_NPU: 1}}


def test_agent_config_round_trips(tmp_path) -> None:
    config = AgentConfig(
        node="n1",
        kubeconfig="/k",
        device_plugin_dir="/d",
        labels={"a": "b"},
        capacity={"cpu": "1"},
        kubelet_version="v1.32.13",
    )
    path = tmp_path / "agent.json"
    config.save(path)
    assert AgentConfig.load(path) == config


def test_missing_checkpoint_reads_as_empty(tmp_path) -> None:
    assert read_checkpoint(tmp_path / "none") == {"pods": {}, "devices": {}}


def test_admission_error_joins_the_error_tree() -> None:
    assert issubclass(AdmissionError, PlacementError)
    assert issubclass(AdmissionError, KubeNpuError)


def test_free_devices_and_the_kubelets_message_when_too_few() -> None:
    devices = {
        names.RESOURCE_NPU: (
            PeerDevice("npu-1", HEALTHY),
            PeerDevice("npu-0", HEALTHY),
            PeerDevice("npu-2", UNHEALTHY),
        )
    }
    held = PodRecord("ns", "a", {"main": {names.RESOURCE_NPU: {"devices": ["npu-0"]}}})
    free = free_devices(devices, [held])
    assert free == {names.RESOURCE_NPU: ["npu-1"]}
    check_available({"main": {names.RESOURCE_NPU: 1}}, free)
    with pytest.raises(AdmissionError, match="Requested: 2, Available: 1"):
        check_available({"a": {names.RESOURCE_NPU: 1}, "b": {names.RESOURCE_NPU: 1}}, free)
    assert missing_plugins({"a": {names.RESOURCE_NPU_CORE: 5}}, [names.RESOURCE_NPU]) == [
        names.RESOURCE_NPU_CORE
    ]


def test_checkpoint_round_trip_keeps_pods_and_marks_devices_unhealthy(tmp_path) -> None:
    pods = {"u1": PodRecord("ns", "a", {"main": {names.RESOURCE_NPU: {"devices": ["npu-0"]}}})}
    devices = {names.RESOURCE_NPU: (PeerDevice("npu-0", HEALTHY, (0,)),)}
    path = tmp_path / "checkpoint"
    write_checkpoint(path, checkpoint_document("n1", pods, devices))
    document = read_checkpoint(path)
    assert document["node"] == "n1"
    restored_pods, restored_devices = restore(document)
    assert restored_pods == pods
    assert restored_devices == {names.RESOURCE_NPU: (PeerDevice("npu-0", UNHEALTHY, (0,)),)}


def config() -> AgentConfig:
    return AgentConfig(
        node="n1",
        kubeconfig="/k",
        device_plugin_dir="/d",
        labels={},
        capacity={"cpu": "8", "pods": "110"},
        kubelet_version="v1.32.13",
    )


def test_node_status_moves_transition_times_only_on_a_change() -> None:
    capacity, allocatable = status.extended_resources(
        {names.RESOURCE_NPU: (PeerDevice("npu-0", HEALTHY), PeerDevice("npu-1", UNHEALTHY))}
    )
    assert (capacity, allocatable) == ({names.RESOURCE_NPU: "2"}, {names.RESOURCE_NPU: "1"})
    existing = [
        {"type": "Ready", "status": "True", "lastTransitionTime": "t0"},
        {"type": "DiskPressure", "status": "True", "lastTransitionTime": "t0"},
    ]
    body = status.node_status(config(), capacity, allocatable, existing, "t1")
    times = {c["type"]: c["lastTransitionTime"] for c in body["conditions"]}
    assert times == {
        "MemoryPressure": "t1",
        "DiskPressure": "t1",
        "PIDPressure": "t1",
        "Ready": "t0",
    }
    assert all(c["lastHeartbeatTime"] == "t1" for c in body["conditions"])
    assert body["capacity"] == {"cpu": "8", "pods": "110", names.RESOURCE_NPU: "2"}
    assert body["allocatable"][names.RESOURCE_NPU] == "1"
    assert status.lease_spec(config(), "t2") == {
        "holderIdentity": "n1",
        "leaseDurationSeconds": 40,
        "renewTime": "t2",
    }


def test_pod_status_bodies() -> None:
    pod = {
        "metadata": {"uid": "u1", "namespace": "ns", "name": "a"},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        "status": {"startTime": "t0"},
    }
    running = status.running_status(pod, "t1")
    assert running["phase"] == "Running" and running["startTime"] == "t0"
    assert [c["name"] for c in running["containerStatuses"]] == ["main"]
    failed = status.failed_status(pod, "no devices", "t1")
    assert failed["reason"] == "UnexpectedAdmissionError"
    assert failed["message"] == "Pod was rejected: no devices"
