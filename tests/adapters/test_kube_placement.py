"""The device inventory on Nodes and the placement record on Pods."""

from __future__ import annotations

import json

import pytest

from kubenpu.adapters.kube import (
    device_inventory_annotation,
    devices_from_inventory,
    node_from_object,
    placement_from_pod,
    placement_patch,
    placement_time,
)
from kubenpu.errors import ObjectError
from kubenpu.model import Device, Placement
from kubenpu.names import (
    ANNOTATION_ASSUMED_AT,
    ANNOTATION_DEVICE_INVENTORY,
    ANNOTATION_DEVICES,
    ANNOTATION_NODE,
    ANNOTATION_SHARES,
    LABEL_NPU_MODEL,
    LABEL_PLACED_NODE,
    RESOURCE_NPU,
    RESOURCE_NPU_MEM,
)


def node(inventory: str | None, **alloc: str) -> dict:
    meta: dict = {"name": "n1", "labels": {LABEL_NPU_MODEL: "hanguang-800"}}
    if inventory is not None:
        meta["annotations"] = {ANNOTATION_DEVICE_INVENTORY: inventory}
    return {"metadata": meta, "status": {"allocatable": {"cpu": "8", "memory": "8Gi", **alloc}}}


def test_inventory_round_trip_gives_the_real_ids_groups_and_health() -> None:
    devices = [Device("npu-1", 1, "m", 4096, False, 0), Device("npu-0", 0, "m", 4096, True, 1)]
    text = device_inventory_annotation(devices)
    assert json.loads(text)[0]["id"] == "npu-0"  # index order
    got = node_from_object(node(text, **{RESOURCE_NPU: "2", RESOURCE_NPU_MEM: "8"}))
    assert [(d.id, d.group, d.healthy, d.memory_mib) for d in got.devices] == [
        ("npu-0", 1, True, 4096),
        ("npu-1", 0, False, 4096),
    ]
    # The node label names the model; without aliyun.com/npu-mem no NPU memory counts.
    assert got.devices[0].model == "hanguang-800"
    assert node_from_object(node(text, **{RESOURCE_NPU: "2"})).devices[0].memory_mib == 0


def test_without_inventory_ids_are_synthesized() -> None:
    got = node_from_object(node(None, **{RESOURCE_NPU: "2"}))
    assert [d.id for d in got.devices] == ["n1-npu0", "n1-npu1"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "not JSON"),
        ('{"id": "x"}', "must be a list"),
        ('[{"id": "", "index": 0}]', "id must be a string"),
        ('[{"id": "a", "index": -1}]', "index must be an integer >= 0"),
        ('[{"id": "a", "index": 0, "healthy": "yes"}]', "healthy must be true or false"),
        ('[{"id": "a", "index": 0}, {"id": "a", "index": 1}]', "duplicate device ids"),
        (json.dumps([{"id": f"d{i}", "index": i} for i in range(65)]), "at most 64"),
    ],
)
def test_malformed_inventories_are_refused(text: str, problem: str) -> None:
    with pytest.raises(ObjectError, match=problem):
        devices_from_inventory(text, "n1")


def pod(annotations: dict) -> dict:
    return {"metadata": {"name": "p", "namespace": "ns", "annotations": annotations}}


def test_placement_record_read_and_patch() -> None:
    assert placement_from_pod(pod({})) is None
    recorded = {
        ANNOTATION_NODE: "n1",
        ANNOTATION_DEVICES: "npu-0,npu-1",
        ANNOTATION_SHARES: "1000,1000",
    }
    assert placement_from_pod(pod(recorded)) == Placement(
        "ns/p", "n1", ("npu-0", "npu-1"), (1000, 1000)
    )
    body = placement_patch(
        Placement("ns/p", "n1", ("npu-3",), (250,)),
        policy="fgd",
        assumed_at="t",
        resource_version="7",
    )
    meta = body["metadata"]
    assert meta["resourceVersion"] == "7"
    assert meta["labels"] == {LABEL_PLACED_NODE: "n1"}
    assert meta["annotations"][ANNOTATION_DEVICES] == "npu-3"
    assert meta["annotations"][ANNOTATION_SHARES] == "250"
    cleared = placement_patch(None, resource_version="8")["metadata"]
    assert set(cleared["annotations"].values()) == {None}
    assert cleared["labels"] == {LABEL_PLACED_NODE: None}


@pytest.mark.parametrize(
    ("devices", "shares"),
    [("npu-0,npu-1", "1000"), ("npu-0", "x"), ("npu-0", "0"), ("npu-0", "1001"), (",", "1,1")],
)
def test_malformed_placement_records_are_refused(devices: str, shares: str) -> None:
    record = {ANNOTATION_NODE: "n1", ANNOTATION_DEVICES: devices, ANNOTATION_SHARES: shares}
    with pytest.raises(ObjectError):
        placement_from_pod(pod(record))


def test_placement_time_is_the_recorded_assumed_at() -> None:
    assert placement_time(pod({ANNOTATION_NODE: "n1", ANNOTATION_ASSUMED_AT: "t"})) == "t"
    assert placement_time(pod({})) == ""
    body = placement_patch(
        Placement("ns/p", "n1", ("npu-0",), (1000,)), assumed_at="t2", resource_version="1"
    )
    written = pod(body["metadata"]["annotations"])
    assert placement_time(written) == "t2"
    assert placement_from_pod(written) == Placement("ns/p", "n1", ("npu-0",), (1000,))
