#!/usr/bin/env python3
"""Which path packs better on openb: kubenpu's placement, or kube-scheduler's own on DRA nodes.

    python bench/dra_packing.py                        # 5 workloads x 10 seeds, 2 processes
    python bench/dra_packing.py --workloads default --seeds 42-44 --jobs 1

Replays each openb workload (``../shared/traces/openb``, 130% arrival) through, with the
same seeds for all:

- ``kubenpu``: the device-plugin path (kubenpu chooses node and devices);
- ``dra-allocator``: kube-scheduler alone on DRA nodes, modelled in
  ``kubenpu.engine.dra_allocator`` (default node scoring, the structured allocator's
  first-fit devices);
- ``dra-devices+kubenpu``: kubenpu's node choice with the allocator's devices (a DRA node
  rated by the extender);
- ``kubenpu+dra-allocator:1000``: the default node scoring (kubenpu only among its equal
  best nodes) with kubenpu's devices;
- ``fgd`` and ``bestfit`` for context.

Prints per workload the mean / min / max allocation % per policy, then the paired
difference kubenpu - dra-allocator per seed (mean, min, max). Bounded in time: after
``--max-seconds`` the runs not started are cancelled, those still running are left out
(each process finishes its run first), and the table says how many seeds each figure has.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from openb_replay import TRACE, one_run  # the same one run per (workload, spec, seed)

from kubenpu.cli.simulate import parse_seeds
from kubenpu.engine import policies

SPECS = (
    "kubenpu",
    "dra-allocator",
    "dra-devices+kubenpu",
    "kubenpu+dra-allocator:1000",
    "fgd",
    "bestfit",
)
LABELS = {
    "kubenpu": "kubenpu (device-plugin path)",
    "dra-allocator": "dra-allocator (kube-scheduler alone)",
    "dra-devices+kubenpu": "kubenpu nodes, allocator devices",
    "kubenpu+dra-allocator:1000": "default nodes, kubenpu devices",
}

Job = tuple[Path, str, str, int, float]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workloads", default="default,cpu050,gpushare40,multigpu20,gpuspec10")
    ap.add_argument("--policies", default=",".join(SPECS))
    ap.add_argument("--seeds", default="42-51")
    ap.add_argument("--tune", type=float, default=1.3)
    ap.add_argument("--jobs", type=int, default=2, help="parallel processes")
    ap.add_argument("--max-seconds", type=float, default=2400, help="cancel what is left after")
    ap.add_argument("--trace", type=Path, default=TRACE)
    args = ap.parse_args()
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    specs = [p.strip() for p in args.policies.split(",") if p.strip()]
    for spec in specs:
        policies.validate(spec)
    seeds = parse_seeds(args.seeds)
    jobs: list[Job] = [
        (args.trace, w, p, s, args.tune) for w in workloads for s in seeds for p in specs
    ]
    results: dict[tuple[str, str, int], tuple[float, float]] = {}
    deadline = time.monotonic() + args.max_seconds
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        pending: set[Future[tuple[str, str, int, float, float]]] = {
            pool.submit(one_run, j) for j in jobs
        }
        while pending and time.monotonic() < deadline:
            done, pending = wait(
                pending, timeout=deadline - time.monotonic(), return_when=FIRST_COMPLETED
            )
            for fut in done:
                w, p, s, pct, secs = fut.result()
                results[(w, p, s)] = (pct, secs)
                print(f"{w} {p} seed {s}: {pct:.2f}% ({secs:.1f} s)", file=sys.stderr)
        for fut in pending:
            fut.cancel()
    if len(results) < len(jobs):
        print(f"stopped at --max-seconds: {len(results)} of {len(jobs)} runs", file=sys.stderr)

    print(f"openb at {args.tune:.0%} arrival, seeds {args.seeds}; allocation % of NPU compute\n")
    print("| workload | policy | seeds | mean | min | max | s/run |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for w in workloads:
        for p in specs:
            got = [results[(w, p, s)] for s in seeds if (w, p, s) in results]
            if not got:
                print(f"| {w} | {LABELS.get(p, p)} | 0 | | | | |")
                continue
            pcts = [g[0] for g in got]
            secs = statistics.mean(g[1] for g in got)
            print(
                f"| {w} | {LABELS.get(p, p)} | {len(pcts)} | {statistics.mean(pcts):.2f}"
                f" | {min(pcts):.2f} | {max(pcts):.2f} | {secs:.1f} |"
            )
    if "kubenpu" in specs and "dra-allocator" in specs:
        print("\n| workload | kubenpu - dra-allocator (points) | min | max | seeds |")
        print("| --- | --- | --- | --- | --- |")
        for w in workloads:
            diffs = [
                results[(w, "kubenpu", s)][0] - results[(w, "dra-allocator", s)][0]
                for s in seeds
                if (w, "kubenpu", s) in results and (w, "dra-allocator", s) in results
            ]
            if diffs:
                print(
                    f"| {w} | {statistics.mean(diffs):+.2f} | {min(diffs):+.2f}"
                    f" | {max(diffs):+.2f} | {len(diffs)} |"
                )
    return 0 if len(results) == len(jobs) else 1


if __name__ == "__main__":
    sys.exit(main())
