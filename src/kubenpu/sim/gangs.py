"""Gangs in the replay: which trace pods form a gang, and when a gang is placed.

A gang is a job's pods that start together or not at all (the Workload API's gang policy,
``minCount``). In the replay a gang's members arrive one by one, in the seed's arrival
order, and hold nothing until the last of them has arrived; then the engine's
``place_gang`` places at least ``min_count`` of them at once, or none. Members it leaves
out, and all members of a gang that does not fit, are turned away, as a pod that fits
nowhere is in the plain replay. Every policy is measured the same way.

Gangs come from a gang file (:func:`read_gang_file`) or from a rule over the arrival order
(:class:`SyntheticGangs`), so that the default trace runs with no file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, get_args

from kubenpu.engine.framework import Engine
from kubenpu.engine.gang import GangPlan, Topology, place_gang
from kubenpu.errors import InputError
from kubenpu.model import Request
from kubenpu.traces.csvtable import read_rows

#: The gang file's columns; ``topology`` is optional.
GANG_COLUMNS = ("pod", "gang", "min_count")
TOPOLOGY_COLUMN = "topology"
TOPOLOGIES: tuple[str, ...] = get_args(Topology)


@dataclass(frozen=True, slots=True)
class Gang:
    """Pods (by name) that start together: at least ``min_count`` of them, or none."""

    name: str
    members: tuple[str, ...]
    min_count: int
    topology: Topology = "none"


def place_gang_now(
    engine: Engine, gang: Gang, members: Sequence[Request], group_label: str | None
) -> GangPlan | None:
    """Place the gang's ``members`` (those still there) at once with the engine's
    ``place_gang``, the placements kept; None when it does not fit, or when members thinned
    out below ``min_count`` (such a gang can never start)."""
    if len(members) < gang.min_count:
        return None
    return place_gang(
        engine,
        members,
        gang.min_count,
        topology=gang.topology,
        group_label=group_label,
        keep=True,
    )


class GangSource(Protocol):
    """Where a run's gangs come from: given the run's arrival order, the gangs."""

    def gangs(self, arrivals: Sequence[Request]) -> list[Gang]:
        """The gangs among ``arrivals`` (members may be missing from them)."""
        ...


@dataclass(frozen=True, slots=True)
class FileGangs:
    """Gangs read from a file: the same for every seed."""

    fixed: tuple[Gang, ...]

    def gangs(self, arrivals: Sequence[Request]) -> list[Gang]:
        """The file's gangs (the arrival order does not change them)."""
        return list(self.fixed)


@dataclass(frozen=True, slots=True)
class SyntheticGangs:
    """``synthetic:K[:M]``: gangs of ``size`` (K) pods asking the same whole NPUs.

    Walking the arrival order, each pod asking ``min_npus`` (M, default 1) or more whole
    NPUs joins the open group of its NPU shape (the NPU count and the allowed models; CPU
    and memory may differ); a group that reaches K members is a gang (``min_count`` K) and
    its shape starts a new group. Groups still short of K at the end stay single pods.
    The arrival order is the seed's, so the gangs are deterministic per seed.
    """

    size: int
    min_npus: int = 1
    topology: Topology = "none"

    def gangs(self, arrivals: Sequence[Request]) -> list[Gang]:
        """The gangs the rule forms over ``arrivals``, in the order they complete."""
        open_groups: dict[tuple[int, frozenset[str]], list[str]] = {}
        out: list[Gang] = []
        for req in arrivals:
            if req.npus < self.min_npus or req.npus == 0:
                continue
            group = open_groups.setdefault((req.npus, req.models), [])
            group.append(req.name)
            if len(group) == self.size:
                out.append(Gang(f"gang-{len(out)}", tuple(group), self.size, self.topology))
                group.clear()
        return out


def parse_gang_spec(spec: str, pod_names: Iterable[str], topology: Topology = "none") -> GangSource:
    """``--gangs``: ``synthetic:K[:M]`` or the path of a gang file (checked against the
    trace's ``pod_names``); ``topology`` applies to synthetic gangs and to file rows
    without a topology."""
    if spec.startswith("synthetic:"):
        parts = spec.split(":")[1:]
        try:
            if not 1 <= len(parts) <= 2:
                raise ValueError
            size = int(parts[0])
            min_npus = int(parts[1]) if len(parts) == 2 else 1
        except ValueError:
            raise InputError(f"--gangs {spec!r}: expected synthetic:K or synthetic:K:M") from None
        if size < 1 or min_npus < 1:
            raise InputError(f"--gangs {spec!r}: K and M must be at least 1")
        return SyntheticGangs(size, min_npus, topology)
    return FileGangs(tuple(read_gang_file(Path(spec), pod_names, topology)))


def read_gang_file(
    path: Path, pod_names: Iterable[str], default_topology: Topology = "none"
) -> list[Gang]:
    """Gangs of a CSV gang file: ``pod,gang,min_count[,topology]``, one row per member.

    Every row of a gang gives the same ``min_count`` (1..the gang's size) and topology
    (``none``, ``prefer`` or ``require``; empty or no column: ``default_topology``); a pod
    is in one gang at most and must be a pod of the trace. A bad row raises ``InputError``
    naming the file, the line and the column.
    """
    known = set(pod_names)
    members: dict[str, list[str]] = {}
    first: dict[str, tuple[int, int, Topology]] = {}  # gang -> (line, min_count, topology)
    seen: dict[str, int] = {}
    for row in read_rows(path, GANG_COLUMNS):
        pod, gang = row.text("pod"), row.text("gang")
        if not pod:
            raise row.error("column 'pod': empty pod name")
        if pod not in known:
            raise row.error(f"column 'pod': {pod!r} is not a pod of the trace")
        if pod in seen:
            raise row.error(f"column 'pod': {pod!r} is already in a gang (line {seen[pod]})")
        if not gang:
            raise row.error("column 'gang': empty gang name")
        count = row.count("min_count")
        if count < 1:
            raise row.error("column 'min_count': must be at least 1")
        raw = row.text(TOPOLOGY_COLUMN) or default_topology
        if raw not in TOPOLOGIES:
            raise row.error(f"column 'topology': {raw!r} is not one of {', '.join(TOPOLOGIES)}")
        topology: Topology = raw  # type: ignore[assignment]  # checked just above
        line, want, want_topology = first.setdefault(gang, (row.line, count, topology))
        if count != want:
            raise row.error(
                f"column 'min_count': {count}, but gang {gang!r} has {want} (line {line})"
            )
        if topology != want_topology:
            raise row.error(
                f"column 'topology': {topology!r}, but gang {gang!r} has {want_topology!r} "
                f"(line {line})"
            )
        seen[pod] = row.line
        members.setdefault(gang, []).append(pod)
    if not members:
        raise InputError("no gangs in file", source=str(path))
    out = []
    for gang, pods in members.items():
        line, count, topology = first[gang]
        if count > len(pods):
            raise InputError(
                f"column 'min_count': gang {gang!r} needs {count} pods but has {len(pods)}",
                source=str(path),
                line=line,
            )
        out.append(Gang(gang, tuple(pods), count, topology))
    return out


@dataclass
class GangStats:
    """What became of one run's gangs."""

    #: Gangs whose members arrived (all but those thinned out of the workload entirely).
    gangs: int = 0
    placed: int = 0
    turned_away: int = 0
    #: Of those turned away: fewer than ``min_count`` members arrived (the workload was
    #: thinned), so the gang could never start.
    incomplete: int = 0
    #: Member pods that arrived, and those turned away because of their gang (all members
    #: of a gang turned away, and those a placed gang left out above its ``min_count``).
    member_pods: int = 0
    pods_turned_away: int = 0
    #: Placed gangs by domain kind: ``node``, ``group`` or ``cluster``.
    domains: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        """The ``gangs`` object of a run in ``kubenpu simulate --gangs --format json``."""
        return {
            "gangs": self.gangs,
            "placed": self.placed,
            "turned_away": self.turned_away,
            "incomplete": self.incomplete,
            "member_pods": self.member_pods,
            "pods_turned_away": self.pods_turned_away,
            "domains": dict(sorted(self.domains.items())),
        }


class GangQueue:
    """Members that arrived and wait for the rest of their gang (pure bookkeeping).

    Built over the whole arrival order, so it knows which members arrive at all: a gang
    is released at its last arriving member, with every member that arrived.
    """

    def __init__(self, gangs: Sequence[Gang], arrivals: Sequence[Request]) -> None:
        arrived = {r.name for r in arrivals}
        self._gang_of: dict[str, Gang] = {}
        self._expected: dict[str, int] = {}
        self._waiting: dict[str, list[Request]] = {}
        for gang in gangs:
            present = [m for m in gang.members if m in arrived]
            if not present:
                continue  # thinned out entirely: never seen in this run
            self._expected[gang.name] = len(present)
            for m in present:
                if m in self._gang_of:
                    raise InputError(
                        f"pod {m!r} is in gangs {self._gang_of[m].name!r} and {gang.name!r}"
                    )
                self._gang_of[m] = gang
        self.stats = GangStats(gangs=len(self._expected), member_pods=len(self._gang_of))

    def gang_of(self, pod: str) -> Gang | None:
        """The gang ``pod`` belongs to in this run, if any."""
        return self._gang_of.get(pod)

    def arrive(self, req: Request) -> tuple[Gang, list[Request]] | None:
        """Record a member's arrival; when it is the last to come, the gang and all its
        arrived members (in arrival order)."""
        gang = self._gang_of[req.name]
        waiting = self._waiting.setdefault(gang.name, [])
        waiting.append(req)
        if len(waiting) < self._expected[gang.name]:
            return None
        del self._waiting[gang.name]
        return gang, waiting

    def record(self, gang: Gang, arrived: int, placed: int, domain: str | None) -> None:
        """Count a released gang: ``placed`` of its ``arrived`` members (0: turned away)."""
        s = self.stats
        if domain is None:
            s.turned_away += 1
            s.incomplete += arrived < gang.min_count
        else:
            s.placed += 1
            kind = domain.split("/", 1)[0]
            s.domains[kind] = s.domains.get(kind, 0) + 1
        s.pods_turned_away += arrived - placed
