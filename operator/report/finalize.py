"""Finishing a run, once for every executor: verdicts against the baseline, the suite's history, trend plots
and the markdown report. The kopf operator (controller.handlers), the local executor (local.py) and
`trainbench report` (commands.py) all call `finalize`; they differ only in where the inputs come from and
where the outputs go (ConfigMaps, or files in a folder), so the same results, baseline and history give the
same report wherever they were finished."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainbench.operator.report.markdown import render_report
from trainbench.operator.report.plots import render_trends
from trainbench.operator.results import changepoints as CP
from trainbench.operator.results import history as H
from trainbench.operator.results import verdict as V

HISTORY_RUNS = 10  # runs shown in the report's History section and plots
CHANGE_POINTS_KEPT = 20  # newest change points kept in results.json and the report


@dataclass
class Finished:
    results: dict  # the results document, verdicts attached
    report: str  # report.md
    history: dict | None = None  # the suite's history (with this run when `record` was asked for)
    plots: dict[str, str] = field(default_factory=dict)  # model -> plot path relative to plots_dir


def finalize(
    results: dict,
    *,
    baseline: Any | None = None,
    judge: bool = True,
    thresholds: dict | Any | None = None,
    history: dict | None = None,
    record: bool = False,
    plots_dir: str | Path | None = None,
    history_runs: int = HISTORY_RUNS,
    confirm: int | None = None,
    acks: list[dict] | None = None,
) -> Finished:
    """Finish a results document (changed in place: verdicts and summary).

    `baseline`: a results.baseline.Baseline or None; `judge=False` keeps the verdicts the document already
    has (a report rendered again from a finished run's results.json). `thresholds`: None for the document's
    own. `history`: the suite's history document (trend table; the plots), `record=True` appends this run to
    it. `plots_dir`: where trend plots are written (None: no plots, e.g. a ConfigMap cannot hold them).
    `confirm`: re-runs a suspected regression gets (None: the spec's); `acks`: acknowledged change points and
    accepted baselines (results/changepoints.py)."""
    if judge:
        V.apply(results, baseline, thresholds, confirm=confirm)
    if history is not None and history.get("_source"):  # where a cluster's history came from (controller/suite.py)
        results["history"] = {"source": history["_source"], "problem": history.get("_problem")}
    if record:
        history = H.append(history, results)
    if history is not None:
        points = CP.detect(history, acks=acks)
        results["change_points"] = [p.to_dict() for p in points][-CHANGE_POINTS_KEPT:] or None
    plots = render_trends(results, history, plots_dir, last=history_runs) if plots_dir is not None else {}
    report = render_report(results, history=history, plots=plots, history_runs=history_runs)
    return Finished(results=results, report=report, history=history, plots=plots)
