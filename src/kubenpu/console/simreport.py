"""The simulator page: ``kubenpu simulate --explain --format json``'s report, rendered.

The report comes from a file (``kubenpu console --sim-report FILE``) or is computed on the
built-in default when the page is first opened: every default policy, one seed, in a
background thread and within a time budget (a replay that runs past it is cut short and
the policies after it are left out, said so on the page).
"""

from __future__ import annotations

import json
import logging
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubenpu.errors import InputError
from kubenpu.sim.explain import CAUSES

log = logging.getLogger(__name__)

#: Line colours of the curves, one per policy in order (colour-blind safe, Okabe-Ito).
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000")
#: The SVG plot's inner size (px) and margins.
WIDTH, HEIGHT, LEFT, BOTTOM = 640, 300, 48, 32


@dataclass(frozen=True)
class PolicyRow:
    """One policy over its seeds."""

    policy: str
    seeds: int
    mean_pct: float
    min_pct: float
    max_pct: float
    unscheduled: float
    #: Mean unallocated capacity per cause (percent of all NPU compute), if explained.
    explain: Mapping[str, float] | None
    #: Mean allocation curve (percent of capacity, one point per percent of arrivals).
    curve: tuple[float, ...]
    colour: str

    def points(self, tune: float) -> str:
        """The curve as SVG polyline points in the plot's coordinates."""
        n = len(self.curve)
        if n == 0:
            return ""
        x_max = max(tune * 100, 1.0)
        out = []
        for k, y in enumerate(self.curve):
            px = LEFT + WIDTH * (k * (tune * 100 / max(n - 1, 1))) / x_max
            py = HEIGHT - HEIGHT * min(max(y, 0.0), 100.0) / 100
            out.append(f"{px:.1f},{py:.1f}")
        return " ".join(out)


@dataclass(frozen=True)
class ReportView:
    """The whole page."""

    source: str
    tune: float
    total_devices: int
    rows: tuple[PolicyRow, ...]
    causes: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def x_ticks(self) -> list[tuple[float, str]]:
        """(x px, label) every 10% (20% past 100%) of arrivals."""
        top = max(self.tune * 100, 1.0)
        step = 10 if top <= 100 else 20
        return [(LEFT + WIDTH * v / top, f"{v}%") for v in range(0, int(top) + 1, step)]

    @property
    def y_ticks(self) -> list[tuple[float, str]]:
        """(y px, label) every 20% of capacity."""
        return [(HEIGHT - HEIGHT * v / 100, f"{v}%") for v in range(0, 101, 20)]

    def total_explained(self, row: PolicyRow) -> float:
        """The causes' sum: all unallocated capacity."""
        return sum((row.explain or {}).values())


def _number(run: Mapping[str, Any], key: str, where: str) -> float:
    value = run.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InputError(f"{where}: {key} must be a number, not {value!r}")
    return float(value)


def report_view(data: Any, source: str, notes: Sequence[str] = ()) -> ReportView:
    """The page from a report (``{"runs": [...]}`` as ``kubenpu simulate --format json``
    writes it); raises ``InputError`` naming what is wrong."""
    if not isinstance(data, Mapping) or not isinstance(data.get("runs"), list):
        raise InputError(f"{source}: not a kubenpu simulate JSON report (no runs list)")
    by_policy: dict[str, list[Mapping[str, Any]]] = {}
    tune, devices = 1.0, 0
    for k, run in enumerate(data["runs"]):
        where = f"{source}: runs[{k}]"
        if not isinstance(run, Mapping) or not isinstance(run.get("policy"), str):
            raise InputError(f"{where}: a run needs a policy")
        curve = run.get("allocation_curve")
        if not isinstance(curve, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in curve
        ):
            raise InputError(f"{where}: allocation_curve must be a list of numbers")
        _number(run, "final_allocation_pct", where)
        tune = _number(run, "tune", where) if "tune" in run else tune
        devices = int(_number(run, "total_devices", where)) if "total_devices" in run else devices
        by_policy.setdefault(run["policy"], []).append(run)
    rows = []
    for n, (policy, runs) in enumerate(by_policy.items()):
        finals = [float(r["final_allocation_pct"]) for r in runs]
        explained = [r["explain_pct"] for r in runs if isinstance(r.get("explain_pct"), Mapping)]
        explain = (
            {c: statistics.mean(float(e.get(c, 0.0)) for e in explained) for c in CAUSES}
            if explained
            else None
        )
        length = min(len(r["allocation_curve"]) for r in runs)
        curve = tuple(
            statistics.mean(float(r["allocation_curve"][k]) for r in runs) for k in range(length)
        )
        rows.append(
            PolicyRow(
                policy=policy,
                seeds=len(runs),
                mean_pct=statistics.mean(finals),
                min_pct=min(finals),
                max_pct=max(finals),
                unscheduled=statistics.mean(float(r.get("unscheduled_pods", 0)) for r in runs),
                explain=explain,
                curve=curve,
                colour=COLOURS[n % len(COLOURS)],
            )
        )
    return ReportView(source, tune, devices, tuple(rows), CAUSES, tuple(notes))


def load_report(path: Path) -> ReportView:
    """A report file; raises ``InputError`` when it cannot be read as one."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"--sim-report {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise InputError(f"--sim-report {path}: not JSON: {exc}") from None
    return report_view(data, str(path))


class _OutOfTime(Exception):
    pass


def compute_default(
    budget_s: float, policy_specs: Sequence[str] | None = None, *, seed: int = 42, tune: float = 1.3
) -> tuple[dict[str, Any], list[str]]:
    """The report of the built-in default (one seed) and notes on what the budget left out."""
    from kubenpu.engine import policies
    from kubenpu.sim.experiment import replay
    from kubenpu.traces import synthetic

    specs = list(policy_specs or (policies.DEFAULT, *policies.BASELINES))
    nodes, pods = synthetic.cluster(), synthetic.workload()
    deadline = time.monotonic() + budget_s
    runs: list[dict[str, Any]] = []
    notes: list[str] = []

    def check(_done: int, _total: int) -> None:
        if time.monotonic() > deadline:
            raise _OutOfTime()

    for k, spec in enumerate(specs):
        try:
            result = replay(
                nodes,
                pods,
                policies.factory(spec),
                seed=seed,
                tune=tune,
                explain=True,
                progress=check,
            )
        except _OutOfTime:
            notes.append(f"stopped at the {budget_s:g} s budget: left out {', '.join(specs[k:])}")
            break
        runs.append(result.as_json())
    return {"runs": runs}, notes


class SimulatorFeed:
    """The simulator page's report: from a file, or computed once on demand."""

    def __init__(
        self,
        report: ReportView | None = None,
        *,
        budget_s: float = 30.0,
        compute: Callable[[float], tuple[dict[str, Any], list[str]]] = compute_default,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._lock = threading.Lock()
        self._report = report
        self._budget = budget_s
        self._compute = compute
        self._on_change = on_change
        self._thread: threading.Thread | None = None
        self.error = ""
        #: Bumped when the report appears (the live pages refresh then).
        self.version = 0

    @property
    def from_file(self) -> bool:
        """Whether the report was given (never computed)."""
        return self._report is not None and self._thread is None

    def get(self) -> tuple[ReportView | None, str]:
        """(the report or None, its state: ``ready``, ``computing``, ``failed: ...``),
        starting the computation on the first call without a report."""
        with self._lock:
            if self._report is not None:
                return self._report, "ready"
            if self.error:
                return None, f"failed: {self.error}"
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="simulator", daemon=True)
                self._thread.start()
            return None, "computing"

    def _run(self) -> None:
        started = time.monotonic()
        try:
            data, notes = self._compute(self._budget)
            source = "built-in default (seed 42, 130% arrival)"
            report = report_view(data, source, notes)
        except Exception as exc:  # shown on the page; the console keeps serving
            log.exception("simulator report failed")
            with self._lock:
                self.error = str(exc) or type(exc).__name__
                self.version += 1
        else:
            log.info("simulator report computed in %.1f s", time.monotonic() - started)
            with self._lock:
                self._report = report
                self.version += 1
        self._on_change()
