"""A pod's NPU request: the one reader every server and tool calls.

The webhook, the extender (through :func:`kubenpu.adapters.kube.request_from_pod`), the
node agent and the kubectl plugin all read a pod's ``aliyun.com/npu``,
``aliyun.com/npu-core`` and ``aliyun.com/npu-mem`` here, so a pod admitted is a pod the
extender can place: the rules are written once.

Per container: each amount is a whole, non-negative quantity (``npu-mem`` a plain number of
GiB), the request equals the limit when both are given, ``npu`` is at least 1 and
``npu-core`` 1 to 100 when given. Per pod, with the scheduler's arithmetic (the sum over
app containers or the largest init container, whichever is more): a pod asks for whole NPUs
or for one share of one NPU, never both; the share's ``npu-core`` adds up to at most 100,
since a share lives on one device; ``npu-mem`` comes only with ``npu-core``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kubenpu.adapters.quantity import parse_quantity
from kubenpu.names import CORE_UNITS_PER_DEVICE, RESOURCE_NPU, RESOURCE_NPU_CORE, RESOURCE_NPU_MEM

#: The resources this module reads.
NPU_RESOURCES = (RESOURCE_NPU, RESOURCE_NPU_CORE, RESOURCE_NPU_MEM)


@dataclass(frozen=True, slots=True)
class ContainerNpu:
    """One container's NPU amounts (0: not asked for)."""

    name: str
    init: bool
    npus: int = 0
    core: int = 0
    mem_gib: int = 0
    #: The NPU resources its requests or limits name, whatever the amount.
    named: frozenset[str] = frozenset()

    @property
    def label(self) -> str:
        """How messages name it: ``container "main"`` or ``init container "setup"``."""
        return f'{"init container" if self.init else "container"} "{self.name}"'

    @property
    def amounts(self) -> dict[str, int]:
        """resource -> count, for the resources it asks for."""
        values = zip(NPU_RESOURCES, (self.npus, self.core, self.mem_gib), strict=True)
        return {name: count for name, count in values if count}


@dataclass(frozen=True, slots=True)
class PodNpu:
    """A pod's NPU request as the scheduler counts it, with every rule it breaks."""

    containers: tuple[ContainerNpu, ...]
    #: One plain sentence per broken rule, naming the container (empty: valid).
    problems: tuple[str, ...]
    npus: int
    core: int
    mem_gib: int

    @property
    def asks(self) -> bool:
        """Whether any container names an NPU resource in its requests or limits."""
        return any(c.named for c in self.containers)

    def holders(self, resource: str) -> str:
        """``container "a": 1, container "b": 2``: who asks for ``resource``."""
        return ", ".join(
            f"{c.label}: {c.amounts[resource]}" for c in self.containers if resource in c.amounts
        )


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _amount(label: str, resources: Mapping[str, Any], key: str, problems: list[str]) -> int | None:
    """The amount of ``key`` (limit, else request); None when not asked for or unreadable.

    Appends to ``problems`` what is wrong with the numbers themselves."""
    parsed: dict[str, Decimal] = {}
    for field in ("request", "limit"):
        values = _mapping(resources.get(f"{field}s"))
        if key not in values:
            continue
        raw = values[key]
        try:
            q = parse_quantity(raw)
        except ValueError:
            problems.append(f"{label}: {key} {field} {str(raw)!r} is not a valid quantity")
            return None
        if q < 0:
            problems.append(f"{label}: {key} {field} {str(raw)!r} is negative")
            return None
        if q != q.to_integral_value():
            problems.append(
                f"{label}: {key} {field} {str(raw)!r} is not a whole number; "
                f"{key} is counted in whole units"
            )
            return None
        if key == RESOURCE_NPU_MEM and str(raw).strip()[-1:].isalpha():
            # One unit is one GiB: "8Gi" would be 8 Gi units, i.e. eight billion GiB.
            problems.append(
                f"{label}: {key} {field} {str(raw)!r} has a unit suffix, but {key} counts "
                f"GiB; write the plain number of GiB, e.g. {key}: 8"
            )
            return None
        parsed[field] = q
    if not parsed:
        return None
    if "request" in parsed and "limit" in parsed and parsed["request"] != parsed["limit"]:
        problems.append(
            f"{label}: {key} request {parsed['request']} differs from its limit "
            f"{parsed['limit']}; NPU requests must equal limits (or give only the limit)"
        )
    return int(parsed.get("limit", parsed.get("request", 0)))


def read_container(
    container: Mapping[str, Any], *, init: bool = False
) -> tuple[ContainerNpu, list[str]]:
    """One container's NPU amounts and the problems of the container alone."""
    problems: list[str] = []
    name = str(container.get("name", "?"))
    label = ContainerNpu(name, init).label
    resources = _mapping(container.get("resources"))
    named = frozenset(
        key
        for field in ("requests", "limits")
        for key in _mapping(resources.get(field))
        if key in NPU_RESOURCES
    )
    npus, core, mem = (_amount(label, resources, key, problems) for key in NPU_RESOURCES)
    if npus is not None and npus < 1:
        problems.append(
            f"{label}: {RESOURCE_NPU} is {npus}; ask for at least 1 whole NPU, "
            f"or leave {RESOURCE_NPU} out"
        )
    if core is not None and not 1 <= core <= CORE_UNITS_PER_DEVICE:
        problems.append(
            f"{label}: {RESOURCE_NPU_CORE} is {core}, but must be 1 to "
            f"{CORE_UNITS_PER_DEVICE} (percent of one NPU); ask for whole NPUs "
            f"with {RESOURCE_NPU}"
        )
    return ContainerNpu(name, init, npus or 0, core or 0, mem or 0, named), problems


def _containers(spec: Mapping[str, Any]) -> Sequence[tuple[Mapping[str, Any], bool]]:
    found = []
    for field, init in (("initContainers", True), ("containers", False)):
        items = spec.get(field)
        for c in items if isinstance(items, list) else []:
            found.append((_mapping(c), init))
    return found


def read_pod_npu(pod: Mapping[str, Any]) -> PodNpu:
    """The pod's NPU request: per container, the scheduler's totals, and the rules broken."""
    problems: list[str] = []
    containers = []
    for c, init in _containers(_mapping(pod.get("spec"))):
        container, found = read_container(c, init=init)
        containers.append(container)
        problems += found

    def total(attr: str) -> int:
        # Init containers run one at a time, before the others: a pod needs the sum of its
        # app containers or its largest init container.
        main: int = sum(getattr(c, attr) for c in containers if not c.init)
        inits: list[int] = [getattr(c, attr) for c in containers if c.init]
        return max([main, *inits])

    request = PodNpu(tuple(containers), (), total("npus"), total("core"), total("mem_gib"))
    if request.npus and request.core:
        problems.append(
            f"the pod asks for both {RESOURCE_NPU} (whole NPUs: {request.holders(RESOURCE_NPU)}) "
            f"and {RESOURCE_NPU_CORE} (a share of one NPU: {request.holders(RESOURCE_NPU_CORE)}); "
            "use one of them"
        )
    if request.core > CORE_UNITS_PER_DEVICE and all(
        c.core <= CORE_UNITS_PER_DEVICE for c in containers
    ):
        problems.append(
            f"the pod asks for {request.core} {RESOURCE_NPU_CORE} in all "
            f"({request.holders(RESOURCE_NPU_CORE)}), but a share lives on one NPU: at most "
            f"{CORE_UNITS_PER_DEVICE}; ask for whole NPUs with {RESOURCE_NPU}"
        )
    if request.mem_gib and not request.core:
        problems.append(
            f"the pod asks for {RESOURCE_NPU_MEM} ({request.holders(RESOURCE_NPU_MEM)}) "
            f"without {RESOURCE_NPU_CORE}; NPU memory is only given with a share of one NPU"
        )
    return PodNpu(request.containers, tuple(problems), request.npus, request.core, request.mem_gib)
