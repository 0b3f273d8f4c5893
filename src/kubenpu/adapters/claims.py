"""ResourceClaims (``resource.k8s.io/v1``): which claims a pod uses, what they were allocated.
Pure, no I/O: the one reader of a claim's allocation.

kube-scheduler's DRA allocator writes ``status.allocation.devices.results``: one entry per
allocated device with the request it serves, the driver, the pool and the device name. A
pod's claims are named in its spec (``spec.resourceClaims[].resourceClaimName``), in its
status for those made from a template (``status.resourceClaimStatuses``), and, for a plain
extended-resource request such as ``aliyun.com/npu: 1`` served through a DeviceClass with
``extendedResourceName`` (KEP-5004), in ``status.extendedResourceClaimStatus``: the special
claim kube-scheduler creates and allocates in PreBind, before the pod is bound.

kubenpu's DRA driver names each device of its ResourceSlice by the backend's device id
(``npu-0``, ``dra/slices.py``), the same id the device plugin advertises and the extender
records in ``kubenpu.io/devices`` for device-plugin nodes; so :func:`device_ids` of a
claim's results is what ``kubenpu.io/devices`` means on both paths (the number the id
ends in is the device node's, ``/dev/mock-npu0`` for ``npu-0``).

Used by the DRA driver (``dra/claims.py``: what to prepare), the extender's bind on DRA
nodes (the ``kubenpu.io/devices`` annotation) and ``kubectl npu``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubenpu.errors import ObjectError


class ClaimError(ObjectError):
    """A claim that cannot serve as it stands (not allocated, malformed, not generated yet).

    The message names the claim; on a node it is what the kubelet shows on the pod's events."""


@dataclass(frozen=True, slots=True)
class AllocatedDevice:
    """One device of one driver in a claim's allocation. On a device that allows several
    allocations (consumable capacity, KEP-5075) ``share_id`` tells this share from the
    device's others and ``consumed`` holds what it consumes (capacity name -> quantity,
    as the allocator wrote ``consumedCapacity``); both empty otherwise."""

    request: str
    pool: str
    device: str
    share_id: str = ""
    consumed: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class PodClaim:
    """A ResourceClaim a pod uses: ``entry`` is its name in ``spec.resourceClaims`` (empty
    for the extended-resource claim kube-scheduler made), ``claim`` the object's name
    (empty: a template's claim not generated yet)."""

    entry: str
    claim: str

    @property
    def extended(self) -> bool:
        """Whether this is the claim kube-scheduler made for an extended resource."""
        return not self.entry


def claim_ref(claim: Mapping[str, Any]) -> str:
    """``namespace/name`` of a claim object, for messages."""
    meta = claim.get("metadata") or {}
    return f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"


def is_allocated(claim: Mapping[str, Any]) -> bool:
    """Whether the claim carries an allocation."""
    return isinstance((claim.get("status") or {}).get("allocation"), Mapping)


def allocation_devices(claim: Mapping[str, Any]) -> Mapping[str, Any]:
    """``status.allocation.devices`` of an allocated claim; ClaimError when there is none."""
    ref = claim_ref(claim)
    allocation = (claim.get("status") or {}).get("allocation")
    if not isinstance(allocation, Mapping):
        raise ClaimError(f"claim {ref} is not allocated (status.allocation is missing)")
    devices = allocation.get("devices") or {}
    if not isinstance(devices, Mapping):
        raise ClaimError(f"claim {ref}: status.allocation.devices is not an object")
    return devices


def allocated_devices(claim: Mapping[str, Any], driver: str) -> list[AllocatedDevice]:
    """``driver``'s devices in ``claim``'s allocation, in allocation order (every pool).

    ClaimError when the claim is not allocated or a result of ``driver`` is malformed;
    other drivers' results are theirs and not looked into."""
    ref = claim_ref(claim)
    found: list[AllocatedDevice] = []
    results = allocation_devices(claim).get("results") or []
    if not isinstance(results, list):
        raise ClaimError(f"claim {ref}: status.allocation.devices.results is not a list")
    for i, result in enumerate(results):
        if not isinstance(result, Mapping):
            raise ClaimError(f"claim {ref}: allocation result {i} is not an object")
        if result.get("driver") != driver:
            continue
        name, pool, request = result.get("device"), result.get("pool"), result.get("request")
        if not isinstance(name, str) or not name or not isinstance(request, str):
            raise ClaimError(
                f"claim {ref}: allocation result {i}: needs a device and a request name"
            )
        share_id = result.get("shareID") or ""
        consumed = result.get("consumedCapacity") or {}
        if not isinstance(share_id, str) or not isinstance(consumed, Mapping):
            raise ClaimError(
                f"claim {ref}: allocation result {i}: shareID must be a string and "
                "consumedCapacity an object"
            )
        found.append(
            AllocatedDevice(
                request,
                str(pool or ""),
                name,
                share_id,
                tuple(sorted((str(k), str(v)) for k, v in consumed.items())),
            )
        )
    return found


def device_ids(devices: Iterable[AllocatedDevice]) -> tuple[str, ...]:
    """The device ids a container is given for these results (each once, in order): the
    DRA device name is the backend's device id (module docstring)."""
    return tuple(dict.fromkeys(d.device for d in devices))


def pod_claims(pod: Mapping[str, Any]) -> list[PodClaim]:
    """The ResourceClaims ``pod`` uses: the extended-resource claim first (when
    kube-scheduler made one), then ``spec.resourceClaims`` in order. Entries whose
    template made no claim (``resourceClaimName`` unset in the status: none was needed)
    are left out; an entry with a template and no status yet has an empty ``claim``."""
    meta = pod.get("metadata") or {}
    where = f"pod {meta.get('namespace', '?')}/{meta.get('name', '?')}"
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    found: list[PodClaim] = []
    extended = status.get("extendedResourceClaimStatus")
    if extended is not None:
        name = extended.get("resourceClaimName") if isinstance(extended, Mapping) else None
        if not isinstance(name, str) or not name:
            raise ClaimError(f"{where}: status.extendedResourceClaimStatus names no claim")
        found.append(PodClaim("", name))
    generated: dict[str, str | None] = {}
    for entry in _list(status.get("resourceClaimStatuses"), f"{where}: resourceClaimStatuses"):
        if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
            generated[entry["name"]] = entry.get("resourceClaimName")
    for entry in _list(spec.get("resourceClaims"), f"{where}: spec.resourceClaims"):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise ClaimError(f"{where}: spec.resourceClaims has an entry without a name")
        direct = entry.get("resourceClaimName")
        if isinstance(direct, str) and direct:
            found.append(PodClaim(entry["name"], direct))
        elif entry["name"] not in generated:
            found.append(PodClaim(entry["name"], ""))  # the claim controller is not done yet
        elif generated[entry["name"]]:
            found.append(PodClaim(entry["name"], str(generated[entry["name"]])))
    return found


def pod_device_ids(
    pod: Mapping[str, Any], claims: Mapping[str, Mapping[str, Any]], driver: str
) -> tuple[str, ...]:
    """The devices of ``driver`` that ``pod``'s claims were allocated, each once, in the
    order of :func:`pod_claims`; ``claims``: the pod's claim objects by name. ClaimError
    when one of them is missing, not allocated or malformed."""
    devices: list[AllocatedDevice] = []
    meta = pod.get("metadata") or {}
    where = f"pod {meta.get('namespace', '?')}/{meta.get('name', '?')}"
    for used in pod_claims(pod):
        if not used.claim:
            raise ClaimError(f"{where}: no ResourceClaim made yet for its claim {used.entry!r}")
        obj = claims.get(used.claim)
        if obj is None:
            raise ClaimError(f"{where}: ResourceClaim {used.claim} not found")
        devices += allocated_devices(obj, driver)
    return device_ids(devices)


def claims_by_pod(claims: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Claims grouped by the pods they are reserved for (``namespace/name`` from
    ``status.reservedFor``), so a lister of every claim can say who holds what."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for claim in claims:
        ns = (claim.get("metadata") or {}).get("namespace", "")
        for user in (claim.get("status") or {}).get("reservedFor") or []:
            if isinstance(user, Mapping) and user.get("resource") == "pods" and user.get("name"):
                key = f"{ns}/{user['name']}" if ns else str(user["name"])
                out.setdefault(key, []).append(claim)
    return out


def _list(value: object, what: str) -> Sequence[Any]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ClaimError(f"{what} is not a list")
    return value
