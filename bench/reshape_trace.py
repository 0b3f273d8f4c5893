#!/usr/bin/env python3
"""Write openb workloads whose shares take other sizes, to check policies beyond openb's mix.

    python bench/reshape_trace.py /tmp/reshaped
    python bench/openb_replay.py --trace /tmp/reshaped --policies kubenpu,fgd,bestfit \\
        --workloads uniform,fine,quarters,shift,big --seeds 42-44

Every pod of ``openb_pod_list_default.csv`` is kept as it is (CPU, memory, whole NPUs,
models) except that each share (one device, under 1000 milli) gets a new size, drawn with a
fixed seed:

- ``uniform``: any multiple of 10 from 10 to 990;
- ``fine``: any milli from 1 to 999 (999 sizes: the measure's mix must stay small);
- ``quarters``: 250, 500 or 750;
- ``shift``: its own size moved by -40, 0 or +40 (at most 990);
- ``big``: 600, 700, 800 or 900 (no two fit on a device).

The node list is copied beside them, so ``openb_replay.py --trace`` can read the directory.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
from collections.abc import Callable
from pathlib import Path

TRACE = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "openb"

RESHAPES: dict[str, Callable[[random.Random, int], int]] = {
    "uniform": lambda rng, _: rng.randint(1, 99) * 10,
    "fine": lambda rng, _: rng.randint(1, 999),
    "quarters": lambda rng, _: rng.choice((250, 500, 750)),
    "shift": lambda rng, milli: min(990, milli + rng.choice((-40, 0, 40))),
    "big": lambda rng, _: rng.choice((600, 700, 800, 900)),
}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("out", type=Path, help="directory to write the workloads to")
    ap.add_argument("--trace", type=Path, default=TRACE)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copy(args.trace / "openb_node_list_gpu_node.csv", args.out)
    with (args.trace / "openb_pod_list_default.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], list(reader)
    for name, reshape in RESHAPES.items():
        rng = random.Random(args.seed)
        out = args.out / f"openb_pod_list_{name}.csv"
        with out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for row in rows:
                milli = int(row["gpu_milli"])
                if int(row["num_gpu"]) == 1 and milli < 1000:
                    row = row | {"gpu_milli": str(reshape(rng, milli))}
                writer.writerow(row)
        print(out)


if __name__ == "__main__":
    main()
