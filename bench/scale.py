#!/usr/bin/env python3
"""How replay time grows with cluster size: synthetic 8-NPU clusters, 10 pods per node.

    python bench/scale.py                              # every policy at 1k, 2k, 5k, 10k nodes
    python bench/scale.py --sizes 1000,10000 --policies kubenpu,fgd,bestfit

Each run builds an all-8-NPU cluster of the built-in synthetic kind (``traces.synthetic``),
draws ``10 x nodes`` pods from the built-in workload mix (about 1.0 x the NPU capacity in
device requests) and places every pod once, in order, with the policy. Printed per size and
policy as each run ends: seconds, pods per second, pods placed, NPU allocation; then the
seconds as a table of policy by cluster size.
"""

from __future__ import annotations

import argparse
import sys
import time

from kubenpu.engine import policies
from kubenpu.engine.framework import Engine
from kubenpu.engine.state import FULL, ClusterState
from kubenpu.traces import synthetic


def run(nodes_n: int, pods_per_node: int, spec: str, seed: int) -> tuple[float, int, int, float]:
    """(seconds, pods, placed, allocation %) of one replay."""
    nodes = synthetic.cluster(nodes_n, small=False)
    pods = synthetic.workload(nodes_n * pods_per_node, seed=seed)
    started = time.perf_counter()
    state = ClusterState(nodes)
    engine = Engine(state, policies.factory(spec)(state, pods), seed=seed)
    placed = sum(engine.place(p).placement is not None for p in pods)
    secs = time.perf_counter() - started
    return secs, len(pods), placed, 100 * state.allocated_milli() / (state.total_devices * FULL)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="1000,2000,5000,10000", help="node counts")
    ap.add_argument("--policies", default=",".join((policies.DEFAULT, *policies.BASELINES)))
    ap.add_argument("--pods-per-node", type=int, default=10)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    specs = [p.strip() for p in args.policies.split(",") if p.strip()]
    for spec in specs:
        policies.validate(spec)
    header = f"{'nodes':>6} {'NPUs':>6} {'pods':>7} {'policy':<10} {'seconds':>8} {'pods/s':>7}"
    print(header + f" {'placed':>7} {'alloc %':>7}")
    print("-" * (len(header) + 16))
    seconds: dict[tuple[str, int], float] = {}
    for n in sizes:
        for spec in specs:
            secs, pods, placed, alloc = run(n, args.pods_per_node, spec, args.seed)
            seconds[(spec, n)] = secs
            print(
                f"{n:>6} {8 * n:>6} {pods:>7} {spec:<10} {secs:>8.1f} {pods / secs:>7.0f}"
                f" {placed:>7} {alloc:>7.2f}",
                flush=True,
            )
    print(f"\nseconds by cluster size (nodes), {args.pods_per_node} pods per node")
    print(f"{'policy':<12}" + "".join(f" {n:>8,}" for n in sizes))
    for spec in specs:
        print(f"{spec:<12}" + "".join(f" {seconds[(spec, n)]:>8.1f}" for n in sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
