"""Which ResourceClaims a pod uses and what they were allocated: the one reader."""

from __future__ import annotations

from typing import Any

import pytest

from kubenpu.adapters.claims import (
    AllocatedDevice,
    ClaimError,
    PodClaim,
    allocated_devices,
    device_ids,
    pod_claims,
    pod_device_ids,
)
from kubenpu.errors import ObjectError

DRIVER = "npu.aliyun.com"


def claim(name: str, results: list[dict[str, Any]] | None) -> dict[str, Any]:
    status = {} if results is None else {"allocation": {"devices": {"results": results}}}
    return {"metadata": {"name": name, "namespace": "ml"}, "status": status}


def result(device: str, driver: str = DRIVER, pool: str = "node-1") -> dict[str, str]:
    return {"request": "npu", "driver": driver, "pool": pool, "device": device}


def pod(**status: Any) -> dict[str, Any]:
    spec = status.pop("spec", {})
    return {"metadata": {"name": "p", "namespace": "ml"}, "spec": spec, "status": status}


def test_a_pods_claims_extended_first_then_its_entries() -> None:
    p = pod(
        extendedResourceClaimStatus={"requestMappings": [], "resourceClaimName": "p-ext-1"},
        resourceClaimStatuses=[
            {"name": "tpl", "resourceClaimName": "p-tpl-x"},
            {"name": "unneeded"},  # the template made none: not needed
        ],
        spec={
            "resourceClaims": [
                {"name": "tpl", "resourceClaimTemplateName": "t"},
                {"name": "own", "resourceClaimName": "shared-claim"},
                {"name": "unneeded", "resourceClaimTemplateName": "t2"},
                {"name": "later", "resourceClaimTemplateName": "t3"},  # no status yet
            ]
        },
    )
    assert pod_claims(p) == [
        PodClaim("", "p-ext-1"),
        PodClaim("tpl", "p-tpl-x"),
        PodClaim("own", "shared-claim"),
        PodClaim("later", ""),
    ]
    assert pod_claims(p)[0].extended and not pod_claims(p)[1].extended
    assert pod_claims(pod()) == []


def test_malformed_pod_claims_are_claim_errors_naming_the_pod() -> None:
    with pytest.raises(ClaimError, match=r"pod ml/p: status\.extendedResourceClaimStatus names"):
        pod_claims(pod(extendedResourceClaimStatus={"resourceClaimName": ""}))
    with pytest.raises(ObjectError, match=r"spec\.resourceClaims is not a list"):
        pod_claims(pod(spec={"resourceClaims": {"a": 1}}))


def test_this_drivers_devices_in_allocation_order() -> None:
    c = claim("c", [result("npu-3"), result("gpu-0", driver="gpu.example.com"), result("npu-1")])
    found = allocated_devices(c, DRIVER)
    assert [d.device for d in found] == ["npu-3", "npu-1"]
    assert found[0] == AllocatedDevice("npu", "node-1", "npu-3")
    # The DRA device name is the backend's device id, as kubenpu.io/devices holds it.
    assert device_ids([*found, found[0]]) == ("npu-3", "npu-1")
    with pytest.raises(ClaimError, match="claim ml/c is not allocated"):
        allocated_devices(claim("c", None), DRIVER)


def test_pod_device_ids_over_every_claim() -> None:
    p = pod(
        extendedResourceClaimStatus={"requestMappings": [], "resourceClaimName": "ext"},
        resourceClaimStatuses=[{"name": "tpl", "resourceClaimName": "gen"}],
        spec={"resourceClaims": [{"name": "tpl", "resourceClaimTemplateName": "t"}]},
    )
    claims = {"ext": claim("ext", [result("npu-2")]), "gen": claim("gen", [result("npu-0")])}
    assert pod_device_ids(p, claims, DRIVER) == ("npu-2", "npu-0")
    with pytest.raises(ClaimError, match="ResourceClaim gen not found"):
        pod_device_ids(p, {"ext": claims["ext"]}, DRIVER)
    claims["gen"] = claim("gen", None)
    with pytest.raises(ClaimError, match="claim ml/gen is not allocated"):
        pod_device_ids(p, claims, DRIVER)
    waiting = pod(spec={"resourceClaims": [{"name": "tpl", "resourceClaimTemplateName": "t"}]})
    with pytest.raises(ClaimError, match="no ResourceClaim made yet for its claim 'tpl'"):
        pod_device_ids(waiting, {}, DRIVER)
