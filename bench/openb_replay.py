#!/usr/bin/env python3
"""Replay the openb trace with every policy and print ours beside the FGD paper's numbers.

    python bench/openb_replay.py                       # the five workloads in ../shared
    python bench/openb_replay.py --workloads default --policies fgd,bestfit --seeds 42-44

For each workload and policy: mean / min / max allocation at 130% arrival over the seeds,
the paper's mean over the same seeds (``fgd_paper_expected_allocation.csv``; for a policy
the paper did not run, such as ``kubenpu``, the paper's FGD), the difference, and seconds
per run. The trace is read in place from ``../shared/traces/openb``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from kubenpu.cli.simulate import parse_seeds
from kubenpu.engine import policies
from kubenpu.sim.experiment import replay
from kubenpu.traces import openb

TRACE = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "openb"
PAPER_NAMES = {
    "01-Random": "random",
    "02-DotProd": "dotprod",
    "03-GpuClustering": "clustering",
    "04-GpuPacking": "packing",
    "05-BestFit": "bestfit",
    "06-FGD": "fgd",
}


def paper_results(trace: Path) -> dict[tuple[str, str, int], float]:
    """(workload, our policy name, seed) -> the paper's allocation at the last column."""
    out: dict[tuple[str, str, int], float] = {}
    path = trace / "fgd_paper_expected_allocation.csv"
    if not path.exists():  # a directory of other workloads (bench/reshape_trace.py)
        return out
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            name = PAPER_NAMES.get(row["sc_policy"])
            if name:
                workload = row["workload"].removeprefix("openb_pod_list_")
                out[(workload, name, int(row["seed"]))] = float(row["130"])
    return out


def one_run(args: tuple[Path, str, str, int, float]) -> tuple[str, str, int, float, float]:
    trace, workload, spec, seed, tune = args
    nodes = openb.read_nodes(trace / "openb_node_list_gpu_node.csv")
    pods = openb.read_pods(trace / f"openb_pod_list_{workload}.csv")
    started = time.perf_counter()
    result = replay(nodes, pods, policies.factory(spec), seed=seed, tune=tune)
    return workload, spec, seed, result.final_allocation_pct, time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workloads", default="default,cpu050,gpushare40,multigpu20,gpuspec10")
    ap.add_argument("--policies", default=",".join((*policies.BASELINES, policies.DEFAULT)))
    ap.add_argument("--seeds", default="42-51")
    ap.add_argument("--tune", type=float, default=1.3)
    ap.add_argument(
        "--jobs", type=int, default=1, help="parallel processes (each run is single-threaded)"
    )
    ap.add_argument("--trace", type=Path, default=TRACE)
    args = ap.parse_args()
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    specs = [p.strip() for p in args.policies.split(",") if p.strip()]
    seeds = parse_seeds(args.seeds)
    paper = paper_results(args.trace)
    jobs = [(args.trace, w, p, s, args.tune) for w in workloads for p in specs for s in seeds]
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for w, p, s, alloc, secs in pool.map(one_run, jobs):
            results.setdefault((w, p), []).append((alloc, secs))
            print(
                f"  {w:<11} {p:<12} seed {s}: {alloc:6.2f}%  {secs:5.1f} s",
                file=sys.stderr,
                flush=True,
            )
    cols = ("ours mean", "min", "max", "paper", "diff", "s/run")
    header = f"{'workload':<11} {'policy':<12} " + " ".join(f"{c:>9}" for c in cols)
    print(header)
    print("-" * len(header))
    for (w, p), runs in results.items():
        allocs = [a for a, _ in runs]
        mine = statistics.mean(allocs)
        # A policy the paper did not run (kubenpu's own) is compared with the paper's FGD.
        ref_policy = p if any((w, p, s) in paper for s in seeds) else "fgd"
        theirs = [paper[(w, ref_policy, s)] for s in seeds if (w, ref_policy, s) in paper]
        ref = f"{statistics.mean(theirs):.2f}" if theirs else "-"
        diff = f"{mine - statistics.mean(theirs):+.2f}" if theirs else "-"
        secs = statistics.mean(t for _, t in runs)
        cells = (
            f"{mine:.2f}",
            f"{min(allocs):.2f}",
            f"{max(allocs):.2f}",
            ref,
            diff,
            f"{secs:.1f}",
        )
        print(f"{w:<11} {p:<12} " + " ".join(f"{c:>9}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
