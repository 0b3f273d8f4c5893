"""Allocation-versus-arrival curves as a PNG (matplotlib, an optional dependency)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kubenpu.errors import ConfigError
from kubenpu.sim.experiment import RunResult
from kubenpu.sim.timeline import TimelineResult


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'kubenpu[plot]'") from None
    return plt


def _finish(
    plt: Any, fig: Any, ax: Any, path: Path, title: str, legend: str = "lower right"
) -> None:
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc=legend)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as exc:
        raise ConfigError(f"--plot: cannot write {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. an image format matplotlib does not know
        raise ConfigError(f"--plot: cannot write {path}: {exc}") from None
    finally:
        plt.close(fig)


def plot_curves(results: Sequence[RunResult], path: Path, title: str = "") -> None:
    """One line per policy: mean allocation over its seeds at each percent of arrival."""
    plt = _pyplot()
    by_policy: dict[str, list[list[float]]] = {}
    for r in results:
        by_policy.setdefault(r.policy, []).append(r.allocation_curve)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for name, curves in by_policy.items():
        mean = np.mean(np.array(curves), axis=0)
        ax.plot(np.arange(mean.size), mean, label=f"{name} ({mean[-1]:.2f}%)")
    top = max((len(c) for cs in by_policy.values() for c in cs), default=1) - 1
    ax.plot([0, 100], [0, 100], color="grey", linewidth=0.8, linestyle=":", label="ideal")
    ax.set_xlim(0, top)
    ax.set_ylim(0, 100)
    ax.set_xlabel("arrived NPU requests (% of capacity)")
    ax.set_ylabel("allocated NPU compute (% of capacity)")
    _finish(plt, fig, ax, path, title or "NPU allocation")


def plot_timeline(results: Sequence[TimelineResult], path: Path, title: str = "") -> None:
    """One line per policy: mean allocation over its seeds against time (days)."""
    plt = _pyplot()
    by_policy: dict[str, list[TimelineResult]] = {}
    for r in results:
        by_policy.setdefault(r.policy, []).append(r)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for name, runs in by_policy.items():
        mean = np.mean(np.array([r.allocation for r in runs]), axis=0)
        days = (np.array(runs[0].times_s) - runs[0].times_s[0]) / 86400
        avg = np.mean([r.mean_allocation_pct for r in runs])
        ax.plot(days, mean, label=f"{name} (mean {avg:.2f}%)")
    ax.set_ylim(0, 100)
    ax.set_xlabel("time since the first arrival (days)")
    ax.set_ylabel("allocated NPU compute (% of capacity)")
    _finish(plt, fig, ax, path, title or "NPU allocation over time", legend="upper left")
