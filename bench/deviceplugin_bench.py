"""Allocate latency and resident memory of the real device plugin daemon.

Starts ``kubenpu device-plugin --backend mock`` as a subprocess for 8 and 64 devices (and
64 with sharing, i.e. 6,400 extra npu-core ids), drives it with the kubelet peer over unix
sockets, and prints Allocate p50/p99 (client-side round trip, so it includes gRPC) and
the daemon's RSS after the run. Targets: p99 < 5 ms, RSS < 80 MB.

    .venv/bin/python bench/deviceplugin_bench.py [--calls 1000]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kubenpu.devcluster.kubelet import KubeletPeer

NPU = "aliyun.com/npu"
P99_TARGET_MS = 5.0
RSS_TARGET_MB = 80.0


def rss_mb(pid: int) -> float:
    """Resident set size of a process from /proc, in MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for pid {pid}")


def percentile(samples: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def run_case(devices: int, calls: int, sharing: bool, standalone: bool) -> dict[str, float]:
    """One daemon, ``calls`` Allocate round trips alternating 1 and 2 devices.

    ``standalone`` starts ``python -m kubenpu.cli.device_plugin`` instead of the ``kubenpu``
    command, which imports every sub-command (simulator, numpy) before it starts.
    """
    workdir = tempfile.mkdtemp(prefix="dpb", dir="/tmp")
    kubenpu = str(Path(sys.executable).with_name("kubenpu"))
    command = [sys.executable, "-m", "kubenpu.cli.device_plugin"]
    if not standalone:
        command = [kubenpu, "device-plugin"]
    args = [*command, "--backend", "mock", "--mock-devices", str(devices)]
    args += ["--kubelet-dir", workdir, "--log-level", "warning"]
    if sharing:
        args += ["--sharing", "--node-name", "bench"]
    peer = KubeletPeer(workdir)
    peer.start()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        peer.wait_for_devices(NPU, lambda ds: len(ds) == devices, timeout=30)
        ids = [f"npu-{i}" for i in range(devices)]
        requests = [[[ids[i % devices]]] if i % 2 else [[ids[0]], [ids[1]]] for i in range(calls)]
        for request in requests[:50]:  # warm-up: connections, caches
            peer.allocate(NPU, request)
        latencies = []
        for request in requests:
            started = time.perf_counter()
            peer.allocate(NPU, request)
            latencies.append((time.perf_counter() - started) * 1000)
        rss = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        peer.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "p50": statistics.median(latencies),
        "p99": percentile(latencies, 0.99),
        "rss": rss,
    }


def main() -> int:
    """Run the cases, print a table, exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="Allocate calls per case")
    opts = parser.parse_args()
    print(f"Allocate round trips: {opts.calls} per case (alternating 1 and 2 containers)")
    print(f"{'devices':>8} {'sharing':>8} {'entry':>27} {'p50 ms':>8} {'p99 ms':>8} {'RSS MB':>8}")
    ok = True
    cases = [(8, False, False), (64, False, False), (64, True, False)]
    cases += [(8, False, True), (64, True, True)]
    for devices, sharing, standalone in cases:
        result = run_case(devices, opts.calls, sharing, standalone)
        entry = "python -m ...device_plugin" if standalone else "kubenpu device-plugin"
        print(
            f"{devices:>8} {'on' if sharing else 'off':>8} {entry:>27} "
            f"{result['p50']:8.3f} {result['p99']:8.3f} {result['rss']:8.1f}"
        )
        ok &= result["p99"] < P99_TARGET_MS and result["rss"] < RSS_TARGET_MB
    print(
        f"targets: p99 < {P99_TARGET_MS} ms, RSS < {RSS_TARGET_MB} MB: {'met' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
