"""Trend plots for the report: one PNG (or SVG) per model, TPS and MFU of each case over the last runs.

matplotlib with the Agg backend (no display). Imported lazily by the report so that rendering markdown
alone never needs matplotlib.
"""

from __future__ import annotations

import re
from pathlib import Path

from trainbench.operator.clock import parse_time
from trainbench.operator.results.history import series
from trainbench.operator.results.keys import case_key, case_label

PLOTS_DIR = "plots"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "model"


def trend_series(results: dict, history: dict | None, last: int = 10) -> dict[str, list[tuple[dict, list[dict]]]]:
    """model -> [(case, points oldest..newest incl. this run)] for cases with at least two points."""
    out: dict[str, list] = {}
    for case in results.get("cases", []):
        points = [p for p in series(history, case_key(case), last=last + 1) if p["run"] != results.get("run")]
        points.append(
            {
                "run": results.get("run"),
                "started_at": results.get("started_at"),
                "phase": case.get("phase"),
                "metrics": case.get("metrics") if case.get("phase") == "Succeeded" else None,
            }
        )
        points = points[-last:]
        if sum(1 for p in points if p.get("metrics")) >= 2:
            out.setdefault(case["model"], []).append((case, points))
    return out


def render_trends(results: dict, history: dict | None, out_dir: str | Path, last: int = 10, fmt: str = "png") -> dict:
    """Write one trend plot per model into out_dir/plots/; return {model: path relative to out_dir}."""
    groups = trend_series(results, history, last)
    if not groups:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    (out_dir / PLOTS_DIR).mkdir(parents=True, exist_ok=True)
    written = {}
    for model, cases in groups.items():
        runs: list[str] = []
        labels: dict[str, str] = {}
        for _, points in cases:
            for p in points:
                if p["run"] not in runs:
                    runs.append(p["run"])
                    t = parse_time(p.get("started_at"))
                    labels[p["run"]] = t.isoformat() if t else str(p["run"])[-14:]
        times = {r: parse_time(v) for r, v in labels.items()}
        fmt_t = (
            "%m-%d %H:%M"
            if len({t.strftime("%m-%d %H:%M") for t in times.values() if t}) == len(runs)
            else "%m-%d %H:%M:%S"
        )
        labels = {r: (times[r].strftime(fmt_t) if times[r] else v) for r, v in labels.items()}
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True)
        for case, points in cases:
            by_run = {p["run"]: p.get("metrics") or {} for p in points}
            for ax, metric, scale in ((axes[0], "tps", 1e-3), (axes[1], "mfu", 1.0)):
                xs, ys, errs = [], [], []
                for i, run in enumerate(runs):
                    s = (by_run.get(run) or {}).get(metric) or {}
                    if s.get("mean") is not None:
                        xs.append(i)
                        ys.append(s["mean"] * scale)
                        errs.append((s.get("std") or 0.0) * scale)
                ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=case_label(case))
        axes[0].set_ylabel("tokens/s (k)")
        axes[1].set_ylabel("MFU (%)")
        for ax, title in zip(axes, ("TPS", "MFU"), strict=True):
            ax.set_title(f"{model}: {title} over the last {len(runs)} runs", fontsize=9)
            ax.set_xticks(range(len(runs)))
            ax.set_xticklabels([labels[r] for r in runs], rotation=30, ha="right", fontsize=7)
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=6, loc="best")
        rel = f"{PLOTS_DIR}/trend-{slug(model)}.{fmt}"
        fig.savefig(out_dir / rel, dpi=110, metadata={"Software": None} if fmt == "png" else None)
        plt.close(fig)
        written[model] = rel
    return written
