"""Allocation-versus-arrival curves as a PNG (matplotlib, an optional dependency)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kubenpu.errors import ConfigError
from kubenpu.sim.experiment import RunResult


def plot_curves(results: Sequence[RunResult], path: Path, title: str = "") -> None:
    """One line per policy: mean allocation over its seeds at each percent of arrival."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'kubenpu[plot]'") from None
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
    ax.set_title(title or "NPU allocation")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as exc:
        raise ConfigError(f"--plot: cannot write {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. an image format matplotlib does not know
        raise ConfigError(f"--plot: cannot write {path}: {exc}") from None
    finally:
        plt.close(fig)
