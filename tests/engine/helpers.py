"""Small hand-made clusters for engine tests."""

from kubenpu.engine import policies
from kubenpu.engine.framework import Engine
from kubenpu.engine.state import ClusterState
from kubenpu.model import Device, Node, Request


def node(
    name: str, npus: int, cpu: int = 64_000, mem: int = 262_144, model: str = "A", groups: int = 1
) -> Node:
    """A node with ``npus`` devices ``<name>-<i>``, split evenly into ``groups`` groups."""
    per = max(1, npus // groups)
    devices = tuple(Device(f"{name}-{i}", i, model=model, group=i // per) for i in range(npus))
    return Node(name, cpu, mem, devices)


def whole(name: str, n: int = 1, cpu: int = 1000, mem: int = 1024, models=()) -> Request:
    return Request(name, cpu, mem, npus=n, models=frozenset(models))


def share(name: str, milli: int, cpu: int = 1000, mem: int = 1024, models=()) -> Request:
    return Request(name, cpu, mem, share_milli=milli, models=frozenset(models))


def cpu_only(name: str, cpu: int = 1000, mem: int = 1024) -> Request:
    return Request(name, cpu, mem)


def engine(nodes, spec, pods=(), seed=1, holdings=()) -> Engine:
    """An engine over ``nodes`` with policy ``spec`` (task mix from ``pods``), after
    reserving ``holdings`` ((placement, request) pairs)."""
    state = ClusterState(nodes)
    for placement, req in holdings:
        state.reserve(placement, req)
    return Engine(state, policies.factory(spec)(state, list(pods)), seed=seed)


def scores(eng: Engine, req: Request) -> dict[int, float]:
    """The profile's score per feasible node index for ``req``."""
    cyc = eng.cycle(req)
    return dict(zip(cyc.candidates.tolist(), eng.profile.score(cyc).tolist(), strict=True))
