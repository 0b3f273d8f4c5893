"""``kubenpu simulate``: replay a trace through the placement engine, policy by policy."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from kubenpu.engine import policies
from kubenpu.engine.state import FULL
from kubenpu.errors import InputError, KubeNpuError
from kubenpu.model import Node, Request
from kubenpu.sim.bound import Bound, allocation_bound
from kubenpu.sim.experiment import RunResult, arrival_order, replay
from kubenpu.sim.explain import CAUSES
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
        if timeline:
            _timeline(nodes_file, pods_file, specs, seed_list, speedup, fmt, plot, bound)
            return
        nodes, pods, label = load(nodes_file, pods_file)
        results = _run_all(
            nodes,
            pods,
            specs,
            seed_list,
            tune,
            show=not quiet and sys.stderr.isatty(),
            explain=explain,
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
        report: dict[str, object] = {"runs": runs}
        if bound:
            report["bounds"] = [
                {"seed": seed, "bound_pct": b.pct, "method": b.method}
                for seed, b in by_seed.items()
            ]
        typer.echo(json.dumps(report))
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
) -> list[RunResult]:
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
                results.append(
                    replay(
                        nodes, pods, factory, seed=seed, tune=tune, progress=tick, explain=explain
                    )
                )
                bar.remove_task(task)
    return results


def _timeline(
    nodes_file: Path | None,
    pods_file: Path | None,
    specs: list[str],
    seeds: list[int],
    speedup: float,
    fmt: str,
    plot: Path | None,
    bound: bool,
) -> None:
    """``--timeline``: the time-driven replay of each policy and seed."""
    from kubenpu.sim.timeline import replay_timeline, speed_up

    if bound:
        raise KubeNpuError("--bound is for the arrival-only experiment, not --timeline")
    if pods_file is None or is_yaml(pods_file):
        raise KubeNpuError(
            "--timeline needs --pods: an openb pod CSV with creation_time and deletion_time"
        )
    nodes = read_nodes(nodes_file) if nodes_file else synthetic.cluster()
    pods = speed_up(openb.read_pod_timeline(pods_file), speedup)
    results = [
        replay_timeline(nodes, pods, policies.factory(spec), seed=seed)
        for spec in specs
        for seed in seeds
    ]
    label = " + ".join(p.name for p in (nodes_file, pods_file) if p is not None)
    if plot is not None:
        from kubenpu.sim.plot import plot_timeline

        plot_timeline(results, plot, title=label)
    if fmt == "json":
        typer.echo(json.dumps({"timeline": [r.as_json() for r in results]}))
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
