"""Our FGD is the paper's FGD: openb default, seeds 42..51, against the published table.

"kubenpu beats FGD" means something only if our FGD reproduces the paper's. The paper's
per-seed final allocations are in ``fgd_paper_expected_allocation.csv`` (column 130: 130%
arrival). Measured: every seed within 0.20 points, mean -0.03 (docs/simulator.md). The
bounds leave room for float noise, not for a different policy: a change to FGD's
arithmetic moves seeds by far more than this.
"""

from __future__ import annotations

import csv
import statistics

import pytest
from openb_trace import require_openb

from kubenpu.engine import policies
from kubenpu.sim.experiment import replay
from kubenpu.traces import openb

pytestmark = pytest.mark.slow

SEEDS = range(42, 52)
PER_SEED_TOLERANCE = 0.5
MEAN_TOLERANCE = 0.1


def test_fgd_matches_the_papers_table_seed_by_seed() -> None:
    trace = require_openb()
    paper = {}
    with (trace / "fgd_paper_expected_allocation.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            if row["sc_policy"] == "06-FGD" and row["workload"] == "openb_pod_list_default":
                paper[int(row["seed"])] = float(row["130"])
    assert set(SEEDS) <= set(paper)
    nodes = openb.read_nodes(trace / "openb_node_list_gpu_node.csv")
    pods = openb.read_pods(trace / "openb_pod_list_default.csv")
    diffs = {}
    for seed in SEEDS:
        ours = replay(nodes, pods, policies.factory("fgd"), seed=seed, tune=1.3)
        diffs[seed] = ours.final_allocation_pct - paper[seed]
    off = {s: round(d, 2) for s, d in diffs.items() if abs(d) > PER_SEED_TOLERANCE}
    assert not off, f"seeds off the paper by more than {PER_SEED_TOLERANCE} points: {off}"
    assert abs(statistics.fmean(diffs.values())) <= MEAN_TOLERANCE, diffs
