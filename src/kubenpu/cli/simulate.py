"""``kubenpu simulate``: replay a trace through the placement engine, policy by policy."""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast, get_args

import typer
from rich.console import Console
from rich.table import Table

from kubenpu.engine import policies
from kubenpu.engine.gang import Topology
from kubenpu.engine.state import FULL
from kubenpu.errors import InputError, KubeNpuError
from kubenpu.model import Node, Request
from kubenpu.sim.bound import Bound, allocation_bound
from kubenpu.sim.evictions import QOS_PRIORITY, priorities_from_qos, seeded_priorities
from kubenpu.sim.experiment import RunResult, arrival_order, replay
from kubenpu.sim.explain import CAUSES
from kubenpu.sim.gangs import GangSource, parse_gang_spec
from kubenpu.sim.timeline import TimelineResult
from kubenpu.traces import openb, synthetic
from kubenpu.traces.kubeyaml import is_yaml, read_yaml

#: kubenpu's policy first, then the six FGD-paper policies it is measured against.
DEFAULT_POLICIES = ",".join((policies.DEFAULT, *policies.BASELINES))


def parse_seeds(text: str) -> list[int]:
    """``42-51`` (inclusive range) or ``42,43`` (list), or a mix: ``1-3,7``."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                seeds.extend(range(a, b + 1))
            else:
                a = int(part)
                seeds.append(a)
            if a < 0:
                raise ValueError
        except ValueError:
            raise typer.BadParameter(f"{part!r} is not a seed or a range like 42-51") from None
    return seeds


def read_nodes(path: Path) -> list[Node]:
    """Nodes from an openb CSV or a Kubernetes YAML file."""
    if not is_yaml(path):
        return openb.read_nodes(path)
    nodes, _ = read_yaml(path)
    if not nodes:
        raise InputError("no Node objects in file", source=str(path))
    return nodes


def read_pods(path: Path) -> list[Request]:
    """Pod requests from an openb CSV or a Kubernetes YAML file."""
    if not is_yaml(path):
        return openb.read_pods(path)
    _, pods = read_yaml(path)
    if not pods:
        raise InputError("no Pod objects in file", source=str(path))
    return pods


def load(nodes_file: Path | None, pods_file: Path | None) -> tuple[list[Node], list[Request], str]:
    """Nodes and pods from files, the built-in default standing in for what is not given."""
    nodes = read_nodes(nodes_file) if nodes_file else synthetic.cluster()
    pods = read_pods(pods_file) if pods_file else synthetic.workload()
    names = [p.name for p in (nodes_file, pods_file) if p is not None]
    label = " + ".join(names) if names else "built-in default"
    if not any(n.devices for n in nodes):
        raise InputError(
            f"no NPU devices on any of the {len(nodes)} nodes: nothing to replay",
            source=str(nodes_file) if nodes_file else label,
        )
    return nodes, pods, label


def _fail(message: str) -> typer.Exit:
    """Print ``message`` as one line on stderr (never wrapped) and return exit code 2."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    return typer.Exit(2)


def simulate(
    nodes_file: Path | None = typer.Option(
        None, "--nodes", help="Node list: openb CSV or Kubernetes YAML."
    ),
    pods_file: Path | None = typer.Option(
        None, "--pods", help="Pod list: openb CSV or Kubernetes YAML."
    ),
    policy: str = typer.Option(
        DEFAULT_POLICIES,
        "--policy",
        help="Comma-separated policies; each may combine weighted parts: fgd:2+bestfit.",
    ),
    seeds: str = typer.Option("42", "--seeds", help="Seeds: 42-51 or 42,43."),
    tune: float = typer.Option(1.3, "--tune", help="Inflate the workload to this x capacity."),
    fmt: str = typer.Option("table", "--format", help="table or json."),
    plot: Path | None = typer.Option(None, "--plot", help="Write allocation curves to this PNG."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    explain: bool = typer.Option(
        False, "--explain", help="Also show where unallocated NPU capacity sits, and why."
    ),
    timeline: bool = typer.Option(
        False,
        "--timeline",
        help="Replay creation and deletion times instead: pods run for their trace runtime, "
        "wait when nothing fits; reports allocation over time and waiting times. Needs an "
        "openb pod CSV with creation_time and deletion_time.",
    ),
    speedup: float = typer.Option(
        1.0, "--speedup", help="With --timeline: divide the time between arrivals by this."
    ),
    bound: bool = typer.Option(
        False,
        "--bound",
        help="Also compute, per seed, an upper bound on the allocation any policy can reach "
        "(integer relaxation of the offline packing; docs/simulator.md).",
    ),
    gangs: str | None = typer.Option(
        None,
        "--gangs",
        help="Place gangs all or nothing when their last member arrives: a gang file "
        "(CSV pod,gang,min_count[,topology]) or synthetic:K[:M] (K whole-NPU pods of one "
        "shape, at least M NPUs each, per gang); compared with the run without.",
    ),
    gang_topology: str = typer.Option(
        "none",
        "--gang-topology",
        help="none, prefer or require one node (then one --gang-group-label group) per "
        "gang: for synthetic gangs and gang-file rows without a topology.",
    ),
    gang_group_label: str | None = typer.Option(
        None, "--gang-group-label", help="Node label whose value groups nodes for gangs."
    ),
    preempt: bool = typer.Option(
        False,
        "--preempt",
        help="A pod that fits nowhere evicts lower-priority pods (the engine's preemption); "
        "priorities from the openb qos column, else a seeded draw; compared with the run "
        "without.",
    ),
) -> None:
    """Replay a cluster trace through the placement engine and report allocation."""
    try:
        if fmt not in ("table", "json"):
            raise KubeNpuError(f"--format must be table or json, not {fmt!r}")
        if not 0 < tune <= 10:
            raise KubeNpuError(f"--tune must be in (0, 10], not {tune}")
        specs = [p.strip() for p in policy.split(",") if p.strip()]
        for spec in specs:
            policies.validate(spec)
        seed_list = parse_seeds(seeds)
        if gang_topology not in get_args(Topology):
            raise KubeNpuError(
                f"--gang-topology must be none, prefer or require, not {gang_topology!r}"
            )
        if timeline:
            extra = _Extra(gangs, cast(Topology, gang_topology), gang_group_label, preempt)
            _timeline(nodes_file, pods_file, specs, seed_list, speedup, fmt, plot, bound, extra)
            return
        nodes, pods, label = load(nodes_file, pods_file)
        show = not quiet and sys.stderr.isatty()
        source = (
            parse_gang_spec(gangs, (p.name for p in pods), cast(Topology, gang_topology))
            if gangs is not None
            else None
        )
        options = _options(pods_file, pods, source, gang_group_label, preempt)
        results = _run_all(nodes, pods, specs, seed_list, tune, show, explain, options)
        # The same runs without gangs and preemption, for the side-by-side table.
        baselines = (
            _run_all(nodes, pods, specs, seed_list, tune, show, False)
            if options is not None
            else []
        )
        bounds = _bounds(nodes, pods, seed_list, tune) if bound else []
        if plot is not None:
            from kubenpu.sim.plot import plot_curves

            plot_curves(results, plot, title=label)
    except typer.BadParameter as exc:
        raise _fail(f"--seeds: {exc}") from None
    except KubeNpuError as exc:
        raise _fail(str(exc)) from None
    if fmt == "json":
        by_seed = dict(zip(seed_list, bounds, strict=True)) if bound else {}
        # Each run carries the bound of its workload (its seed's), and the bounds are listed.
        runs = [
            r.as_json() | ({"bound_pct": by_seed[r.seed].pct} if bound else {}) for r in results
        ]
        for run, base in zip(runs, baselines, strict=False):
            run["baseline"] = {
                "final_allocation_pct": base.final_allocation_pct,
                "unscheduled_pods": base.unscheduled_pods,
            }
        report: dict[str, object] = {"runs": runs}
        if bound:
            report["bounds"] = [
                {"seed": seed, "bound_pct": b.pct, "method": b.method}
                for seed, b in by_seed.items()
            ]
        typer.echo(json.dumps(report))
    else:
        if baselines:
            _print_compare(results, baselines, label, tune)
            if bounds:  # the bound is on the workload, gangs or not
                pcts = [b.pct for b in bounds]
                Console().print(f"upper bound (plain): mean {statistics.mean(pcts):.2f}%")
        else:
            _print_table(results, label, tune, bounds)
        if explain:
            _print_explain(results)


def _run_all(
    nodes: list[Node],
    pods: list[Request],
    specs: list[str],
    seeds: list[int],
    tune: float,
    show: bool,
    explain: bool,
    options: Callable[[int], dict[str, Any]] | None = None,
) -> list[RunResult]:
    """Every policy with every seed; ``options`` gives ``replay`` more arguments per seed."""
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    results = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} pods"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not show,
        transient=True,
    ) as bar:
        for spec in specs:
            for seed in seeds:
                task = bar.add_task(f"{spec} seed {seed}", total=None)

                def tick(done: int, total: int, task: TaskID = task) -> None:
                    if done % 256 == 0 or done == total:
                        bar.update(task, completed=done, total=total)

                factory = policies.factory(spec)
                more = options(seed) if options is not None else {}
                results.append(
                    replay(
                        nodes,
                        pods,
                        factory,
                        seed=seed,
                        tune=tune,
                        progress=tick,
                        explain=explain,
                        **more,
                    )
                )
                bar.remove_task(task)
    return results


@dataclass(frozen=True)
class _Extra:
    """``--gangs`` and ``--preempt`` as given, for the timeline."""

    gangs: str | None
    topology: Topology
    group_label: str | None
    preempt: bool


def _options(
    pods_file: Path | None,
    pods: list[Request],
    gangs: GangSource | None,
    group_label: str | None,
    preempt: bool,
) -> Callable[[int], dict[str, Any]] | None:
    """Per seed, the ``replay`` arguments of ``--gangs`` and ``--preempt`` (None: neither)."""
    if gangs is None and not preempt:
        return None
    qos = (
        openb.read_pod_qos(pods_file, QOS_PRIORITY)
        if preempt and pods_file is not None and not is_yaml(pods_file)
        else None
    )
    fixed = priorities_from_qos(qos) if qos is not None else None

    def options(seed: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if gangs is not None:
            out |= {"gangs": gangs, "group_label": group_label}
        if preempt:
            out["priorities"] = fixed if fixed is not None else seeded_priorities(pods, seed)
        return out

    return options


def _timeline(
    nodes_file: Path | None,
    pods_file: Path | None,
    specs: list[str],
    seeds: list[int],
    speedup: float,
    fmt: str,
    plot: Path | None,
    bound: bool,
    extra: _Extra,
) -> None:
    """``--timeline``: the time-driven replay of each policy and seed (with ``--gangs`` or
    ``--preempt``: beside the same replay without)."""
    from kubenpu.sim.timeline import replay_timeline, speed_up

    if bound:
        raise KubeNpuError("--bound is for the arrival-only experiment, not --timeline")
    if pods_file is None or is_yaml(pods_file):
        raise KubeNpuError(
            "--timeline needs --pods: an openb pod CSV with creation_time and deletion_time"
        )
    nodes = read_nodes(nodes_file) if nodes_file else synthetic.cluster()
    pods = speed_up(openb.read_pod_timeline(pods_file), speedup)
    requests = [p.request for p in pods]
    source = (
        parse_gang_spec(extra.gangs, (r.name for r in requests), extra.topology)
        if extra.gangs is not None
        else None
    )
    options = _options(pods_file, requests, source, extra.group_label, extra.preempt)
    results = [
        replay_timeline(
            nodes, pods, policies.factory(spec), seed=seed, **(options(seed) if options else {})
        )
        for spec in specs
        for seed in seeds
    ]
    baselines = (
        [
            replay_timeline(nodes, pods, policies.factory(spec), seed=seed)
            for spec in specs
            for seed in seeds
        ]
        if options is not None
        else []
    )
    label = " + ".join(p.name for p in (nodes_file, pods_file) if p is not None)
    if plot is not None:
        from kubenpu.sim.plot import plot_timeline

        plot_timeline(results, plot, title=label)
    if fmt == "json":
        docs = [r.as_json() for r in results]
        for doc, base in zip(docs, baselines, strict=False):
            doc["baseline"] = {
                k: base.as_json()[k] for k in ("mean_allocation_pct", "waited", "never_placed")
            }
        typer.echo(json.dumps({"timeline": docs}))
        return
    if baselines:
        _print_timeline_compare(results, baselines, label, speedup)
        return
    table = Table(title=f"NPU allocation over time, arrivals x{speedup:g} — {label}")
    cols = ("policy", "seeds", "mean %", "peak %", "waited", "p50 s", "p99 s", "max s", "never")
    for col in cols:
        table.add_column(col, justify="left" if col == "policy" else "right")
    by_policy: dict[str, list[TimelineResult]] = {}
    for r in results:
        by_policy.setdefault(r.policy, []).append(r)
    for name, runs in by_policy.items():
        table.add_row(
            name,
            str(len(runs)),
            f"{statistics.mean(r.mean_allocation_pct for r in runs):.2f}",
            f"{statistics.mean(r.peak_allocation_pct for r in runs):.2f}",
            f"{statistics.mean(r.waited for r in runs):.0f}",
            *(f"{statistics.mean(r.wait_s[k] for r in runs):.0f}" for k in ("p50", "p99", "max")),
            f"{statistics.mean(r.gave_up + r.waiting_at_end for r in runs):.0f}",
        )
    Console().print(table)
    first = results[0]
    Console().print(
        f"{len(pods)} pods over {first.horizon_s - min(p.created_s for p in pods)} s, offered "
        f"load {100 * first.offered_load:.2f}% of NPU capacity; mean = time-weighted over "
        "first to last arrival; waited, p50/p99/max: waits of placed NPU pods; never: gave up "
        "+ never fit."
    )


def _preemption_cells(pairs: Sequence[tuple[Any, Any]]) -> list[str]:
    """The mean preemptions and evictions of the runs in ``pairs`` (run, baseline)."""
    evs = [r.preemption for r, _ in pairs if r.preemption is not None]
    return [
        f"{statistics.mean([e.preemptions for e in evs]):.0f}",
        f"{statistics.mean([e.evictions for e in evs]):.0f}",
    ]


def _print_timeline_compare(
    results: list[TimelineResult], baselines: list[TimelineResult], label: str, speedup: float
) -> None:
    """``--timeline`` with ``--gangs`` / ``--preempt``: per policy, plain beside with."""
    gangs = results[0].gangs is not None
    preempt = results[0].preemption is not None
    what = " and ".join(w for w, on in (("gangs", gangs), ("preemption", preempt)) if on)
    table = Table(
        title=f"NPU allocation over time, arrivals x{speedup:g}, plain vs. with {what} — {label}"
    )
    cols = ["policy", "mean %", "with", "waited", "with", "never", "with"]
    if gangs:
        cols += ["gangs"]
    if preempt:
        cols += ["preempt", "evicted"]
    for col in cols:
        table.add_column(col, justify="left" if col == "policy" else "right")
    by_policy: dict[str, list[tuple[TimelineResult, TimelineResult]]] = {}
    for r, b in zip(results, baselines, strict=True):
        by_policy.setdefault(r.policy, []).append((r, b))
    for name, pairs in by_policy.items():

        def mean(values: list[float] | list[int]) -> float:
            return statistics.mean(values)

        row = [name]
        for get in (
            lambda t: t.mean_allocation_pct,
            lambda t: t.waited,
            lambda t: t.gave_up + t.waiting_at_end,
        ):
            plain, with_ = mean([get(b) for _, b in pairs]), mean([get(r) for r, _ in pairs])
            digits = 2 if isinstance(get(pairs[0][0]), float) else 0
            row += [f"{plain:.{digits}f}", f"{with_:.{digits}f}"]
        if gangs:
            stats = [r.gangs for r, _ in pairs if r.gangs is not None]
            row.append(
                f"{mean([g.placed for g in stats]):.0f}/{mean([g.gangs for g in stats]):.0f}"
            )
        if preempt:
            row += _preemption_cells(pairs)
        table.add_row(*row)
    Console(width=max(Console().width, 120)).print(table)
    notes = [
        "mean: time-weighted allocation over first to last arrival; waited: placed NPU pods "
        "that waited; never: gave up + never fit (gang members included)"
    ]
    if gangs:
        notes.append("gangs: placed/arrived (members wait from when their gang is complete)")
    if preempt:
        notes.append("preempt: pods placed by evicting others; evicted: pods evicted, who wait")
    Console().print("; ".join(notes) + ".")


def _bounds(nodes: list[Node], pods: list[Request], seeds: list[int], tune: float) -> list[Bound]:
    """Per seed, the bound on that seed's arrived workload."""
    capacity = sum(len(n.devices) for n in nodes) * FULL
    return [allocation_bound(nodes, arrival_order(pods, capacity, tune, s)) for s in seeds]


def _print_table(results: list[RunResult], label: str, tune: float, bounds: list[Bound]) -> None:
    table = Table(title=f"NPU allocation at {tune * 100:.0f}% arrival — {label}")
    table.add_column("policy")
    table.add_column("seeds", justify="right")
    for col in ("mean %", "min %", "max %", "unscheduled", "s/run"):
        table.add_column(col, justify="right")
    by_policy: dict[str, list[RunResult]] = {}
    for r in results:
        by_policy.setdefault(r.policy, []).append(r)
    for name, runs in by_policy.items():
        finals = [r.final_allocation_pct for r in runs]
        table.add_row(
            name,
            str(len(runs)),
            f"{statistics.mean(finals):.2f}",
            f"{min(finals):.2f}",
            f"{max(finals):.2f}",
            f"{statistics.mean(r.unscheduled_pods for r in runs):.0f}",
            f"{statistics.mean(r.elapsed_s for r in runs):.2f}",
        )
    if bounds:
        pcts = [b.pct for b in bounds]
        methods = "/".join(sorted({b.method for b in bounds}))
        table.add_row(
            f"upper bound ({methods})",
            str(len(bounds)),
            f"{statistics.mean(pcts):.2f}",
            f"{min(pcts):.2f}",
            f"{max(pcts):.2f}",
            "",
            "",
        )
    devices = results[0].total_devices if results else 0
    Console().print(table)
    Console().print(f"{devices} NPUs; allocation = NPU compute held by pods / total NPU compute.")


def _print_compare(
    results: list[RunResult], baselines: list[RunResult], label: str, tune: float
) -> None:
    """``--gangs`` / ``--preempt``: per policy, the plain replay beside the one with them
    (means over seeds)."""
    gangs = results[0].gangs is not None
    preempt = results[0].preemption is not None
    what = " and ".join(w for w, on in (("gangs", gangs), ("preemption", preempt)) if on)
    table = Table(
        title=f"NPU allocation at {tune * 100:.0f}% arrival, plain vs. with {what} — {label}"
    )
    cols = ["policy", "plain %", "with %", "diff", "unsched", "with"]
    if gangs:
        cols += ["gangs", "pods away"]
    if preempt:
        cols += ["preempt", "evicted"]
    for col in cols:
        table.add_column(col, justify="left" if col == "policy" else "right")
    by_policy: dict[str, list[tuple[RunResult, RunResult]]] = {}
    for r, b in zip(results, baselines, strict=True):
        by_policy.setdefault(r.policy, []).append((r, b))

    def mean(values: list[float] | list[int]) -> float:
        return statistics.mean(values)

    for name, pairs in by_policy.items():
        plain = mean([b.final_allocation_pct for _, b in pairs])
        with_ = mean([r.final_allocation_pct for r, _ in pairs])
        away = (
            mean([b.unscheduled_pods for _, b in pairs]),
            mean([r.unscheduled_pods for r, _ in pairs]),
        )
        row = [
            name,
            f"{plain:.2f}",
            f"{with_:.2f}",
            f"{with_ - plain:+.2f}",
            f"{away[0]:.0f}",
            f"{away[1]:.0f}",
        ]
        if gangs:
            stats = [r.gangs for r, _ in pairs if r.gangs is not None]
            row += [
                f"{mean([g.placed for g in stats]):.0f}/{mean([g.gangs for g in stats]):.0f}",
                f"{mean([g.pods_turned_away for g in stats]):.0f}",
            ]
        if preempt:
            row += _preemption_cells(pairs)
        table.add_row(*row)
    # Up to ten columns: wider than the 80 a pipe gets, so as not to cut the headers.
    Console(width=max(Console().width, 120)).print(table)
    notes = [
        f"{results[0].total_devices} NPUs; means over {len(results) // len(by_policy)} "
        "seed(s); unsched: pods not running at the end (turned away or evicted), plain and with"
    ]
    if gangs:
        notes.append("gangs: placed/arrived; pods away: gang members turned away with their gang")
    if preempt:
        notes.append("preempt: pods placed by evicting others; evicted: pods evicted")
    Console().print("; ".join(notes) + ".")


def _print_explain(results: list[RunResult]) -> None:
    """Mean unallocated capacity per cause (rows) and policy (columns), in percent."""
    by_policy: dict[str, list[dict[str, float]]] = {}
    for r in results:
        by_policy.setdefault(r.policy, []).append(r.explain_pct())
    table = Table(title="Unallocated NPU capacity by cause (% of all NPU compute, mean over seeds)")
    table.add_column("cause")
    for name in by_policy:
        table.add_column(name, justify="right")
    means = {
        name: {c: statistics.mean(run[c] for run in runs) for c in CAUSES}
        for name, runs in by_policy.items()
    }
    for cause in CAUSES:
        table.add_row(cause, *(f"{means[name][cause]:.2f}" for name in by_policy))
    table.add_row("total", *(f"{sum(means[name].values()):.2f}" for name in by_policy))
    Console().print(table)
