"""Named, composable policies: ``fgd``, ``bestfit``, or weighted sums such as ``fgd:2+bestfit``.

A policy spec is ``name[:weight]`` parts joined by ``+``; the first part also chooses the
devices. Policies that need the workload's task mix (FGD) get it from the pods given to
the profile factory: in the simulator the trace file, in a cluster the pods it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kubenpu.engine import share_plan
from kubenpu.engine.baselines import BASELINE_CLASSES, FgdPolicy
from kubenpu.engine.dra_allocator import DRA_CLASSES
from kubenpu.engine.fragmentation import task_mix
from kubenpu.engine.framework import Policy, Profile
from kubenpu.engine.kubenpu_policy import KubenpuPolicy
from kubenpu.engine.state import ClusterState
from kubenpu.errors import ConfigError
from kubenpu.model import Request

#: The FGD paper's six policies, in the paper's order.
BASELINES = ("random", "dotprod", "clustering", "packing", "bestfit", "fgd")
#: kubenpu's own policy: the default everywhere.
DEFAULT = "kubenpu"
#: Name -> class of every policy a spec may name.
CLASSES: dict[str, type[Policy]] = (
    BASELINE_CLASSES | {KubenpuPolicy.name: KubenpuPolicy} | DRA_CLASSES
)

ProfileFactory = Callable[[ClusterState, Sequence[Request]], Profile]


def available() -> list[str]:
    """Names a spec may use."""
    return list(CLASSES)


def parse(spec: str) -> list[tuple[str, int]]:
    """``fgd:2+bestfit`` -> ``[("fgd", 2), ("bestfit", 1)]``; raises ``ConfigError``."""
    parts = []
    for raw in spec.split("+"):
        name, _, weight = raw.strip().partition(":")
        if name not in CLASSES:
            raise ConfigError(
                f"unknown policy {name!r} in {spec!r}; known: {', '.join(available())}"
            )
        try:
            w = int(weight) if weight else 1
        except ValueError:
            w = 0
        if w < 1:
            raise ConfigError(f"policy {spec!r}: weight {weight!r} must be a positive integer")
        parts.append((name, w))
    return parts


def validate(spec: str) -> None:
    """Raise ``ConfigError`` if ``spec`` is not a valid policy spec."""
    parse(spec)


def _make(name: str, state: ClusterState, pods: Sequence[Request]) -> Policy:
    cls = CLASSES[name]
    if cls is FgdPolicy:
        return FgdPolicy(task_mix(pods), state)
    if cls is KubenpuPolicy:
        # Every shape, not FGD's 95% most common: rare shapes (8-NPU pods, pinned models)
        # hold a large share of the devices. Shares on the plan's grid: finer is noise.
        return KubenpuPolicy(task_mix(pods, coverage=1.0, grid=share_plan.GRID), state)
    return cls()


def factory(spec: str) -> ProfileFactory:
    """A function building the spec's ``Profile`` for a cluster and its workload."""
    parts = parse(spec)

    def build(state: ClusterState, pods: Sequence[Request]) -> Profile:
        built = tuple((_make(name, state, pods), w) for name, w in parts)
        return Profile(name=spec, parts=built, devices=built[0][0])

    return build
