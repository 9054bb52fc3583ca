"""Generate the Grafana dashboards in ../dashboards/ (JSON the chart ships in a sidecar ConfigMap).

    python charts/trainbench/hack/dashboards.py          # rewrite the JSON files
    python charts/trainbench/hack/dashboards.py --check  # exit 1 when a file is out of date

Metric names come from trainbench.trainer.contract, so a renamed metric breaks here, not silently in
Grafana. tests/chart/test_prometheus.py evaluates every panel's query against a real Prometheus.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from generated import write_or_check  # charts/trainbench/hack/generated.py (the script's folder is on sys.path)

from trainbench.trainer import contract as c

OUT = Path(__file__).resolve().parent.parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}

# The latest completed run of each suite: result gauges keep every run, a panel shows the newest.
LATEST_RUN = f'topk by (suite) (1, {c.OM_RUN_COMPLETED}{{suite=~"$suite"}})'
RESULT_SEL = 'suite=~"$suite", model=~"$model", type=~"$type", pool=~"$pool"'
CASE_BY = "model, type, seq_len, ac, attn, pool"
CASE_LEGEND = "{{model}} {{type}} {{seq_len}} {{ac}} {{attn}} {{pool}}"
LIVE_SEL = 'model=~"$model", type=~"$type", pool=~"$pool"'
LIVE_LEGEND = "{{model}} {{type}} {{pool}} ({{case}})"


def latest(metric: str, extra: str = "") -> str:
    """A result gauge of the latest run per suite, one series per case configuration."""
    return f"max by ({CASE_BY}) ({metric}{{{RESULT_SEL}{extra}}} and on (suite, run) {LATEST_RUN})"


def target(expr: str, legend: str = "", instant: bool = False, fmt: str = "time_series", ref: str = "A") -> dict:
    t = {"datasource": DS, "expr": expr, "refId": ref, "legendFormat": legend or "__auto", "format": fmt}
    if instant:
        t.update(instant=True, range=False)
    else:
        t.update(instant=False, range=True)
    return t


class Layout:
    def __init__(self):
        self.id = 0
        self.y = 0
        self.x = 0
        self.row_h = 0

    def place(self, w: int, h: int) -> dict:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        self.id += 1
        return pos

    def newline(self):
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0


def panel(lay: Layout, kind: str, title: str, targets: list[dict], w=12, h=8, unit="", desc="", **extra) -> dict:
    p = {
        "id": 0,
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": lay.place(w, h),
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit} if unit else {}, "overrides": []},
        "options": {},
    }
    p["id"] = lay.id
    if kind == "timeseries":
        p["fieldConfig"]["defaults"]["custom"] = {"drawStyle": "line", "lineInterpolation": "stepAfter"}
        p["options"] = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull"]}}
    p.update(extra)
    return p


def row(lay: Layout, title: str) -> dict:
    lay.newline()
    pos = lay.place(24, 1)
    lay.newline()
    return {"id": lay.id, "type": "row", "title": title, "collapsed": False, "gridPos": pos, "panels": []}


def variable(name: str, label: str, query: str) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"var-{name}"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def templating(source_metric: str, suite: bool = True) -> dict:
    items = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
        }
    ]
    if suite:
        items.append(variable("suite", "Suite", f"label_values({c.OM_RUN_COMPLETED}, suite)"))
    items += [
        variable("model", "Model", f"label_values({source_metric}, model)"),
        variable("type", "Type", f"label_values({source_metric}, type)"),
        variable("pool", "Pool", f"label_values({source_metric}, pool)"),
    ]
    return {"list": items}


def dashboard(uid: str, title: str, desc: str, panels: list[dict], tmpl: dict, time_from: str, refresh: str) -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": desc,
        "tags": ["trainbench", "benchmarks", "gpu"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "refresh": refresh,
        "timezone": "utc",
        "templating": tmpl,
        "annotations": {"list": []},
        "links": [
            {
                "title": "trainbench",
                "type": "dashboards",
                "tags": ["trainbench"],
                "asDropdown": True,
                "includeVars": True,
            }
        ],
        "panels": panels,
    }


def results_dashboard() -> dict:
    lay = Layout()
    ps = [row(lay, "Latest runs")]
    ps.append(
        panel(
            lay,
            "stat",
            "BenchmarkRuns by phase",
            [target(f"sum by (phase) ({c.OM_RUNS})", "{{phase}}", True)],
            w=6,
            h=4,
        )
    )
    ps.append(
        panel(lay, "stat", "Cases by phase", [target(f"sum by (phase) ({c.OM_CASES})", "{{phase}}", True)], w=6, h=4)
    )
    ps.append(
        panel(
            lay,
            "stat",
            "Regressions (latest run)",
            [target(f"count({latest(c.OM_REGRESSION)} > 0) or vector(0)", "regressions", True)],
            w=6,
            h=4,
            desc="Cases worse than their baseline by more than the run's threshold.",
        )
    )
    ps.append(
        panel(
            lay,
            "stat",
            "Failed cases (latest run)",
            [
                target(
                    f"count({c.OM_CASE_FAILED}{{{RESULT_SEL}}} > 0 and on (suite, run) {LATEST_RUN}) or vector(0)",
                    "failed",
                    True,
                )
            ],
            w=6,
            h=4,
        )
    )
    ps.append(row(lay, "Performance over time (latest run of each suite)"))
    series = [
        (c.OM_RESULT_MFU, "MFU", "percent", "Model FLOPs utilisation, mean over measured steps."),
        (c.OM_RESULT_TPS, "Tokens per second", "short", "Global tokens/s (all GPUs of the case)."),
        (c.OM_RESULT_STEP_TIME, "Step time", "s", "Wall time of one optimizer step."),
        (c.OM_RESULT_PEAK_MEMORY, "Peak memory (reserved)", "bytes", "Max reserved device memory."),
        (c.OM_RESULT_POWER, "GPU power", "watt", "Mean device power over measured steps (where NVML/amdsmi read it)."),
        (c.OM_RESULT_TOKENS_PER_JOULE, "Tokens per joule", "short", "Energy efficiency: tokens / energy."),
    ]
    for metric, title, unit, desc in series:
        ps.append(panel(lay, "timeseries", title, [target(latest(metric), CASE_LEGEND)], unit=unit, desc=desc))
    ps.append(row(lay, "Generation and code verification (latest run of each suite)"))
    ps.append(
        panel(
            lay,
            "timeseries",
            "Compile rate (verify)",
            [target(latest(c.OM_RESULT_VER_COMPILE_RATE), CASE_LEGEND)],
            w=24,
            h=6,
            unit="percentunit",
            desc="Share of sampled programs that g++ compiled, last RAFT cycle.",
        )
    )
    by_label = [
        (c.OM_RESULT_GEN_DECODE_TPS, "batch_size", "Decode tokens/s (generate)", "short",
         "Tokens/s of KV-cache decoding per batch size (tokens after EOS not counted)."),
        (c.OM_RESULT_GEN_TTFT, "batch_size", "Time to first token (generate)", "s",
         "Prefill plus the first sampled token, per batch size."),
        (c.OM_RESULT_VER_PASS_AT_K, "k", "pass@k (verify)", "percentunit",
         "Unbiased pass@k over the C++ prompt set, last RAFT cycle."),
    ]  # fmt: skip
    for metric, label, title, unit, desc in by_label:
        expr = f"max by ({CASE_BY}, {label}) ({metric}{{{RESULT_SEL}}} and on (suite, run) {LATEST_RUN})"
        legend = CASE_LEGEND + f" {label}={{{{{label}}}}}"
        ps.append(panel(lay, "timeseries", title, [target(expr, legend)], w=8, unit=unit, desc=desc))
    ps.append(row(lay, "Failures and regressions"))
    ps.append(
        panel(
            lay,
            "table",
            "Regressions",
            [
                target(
                    f"{c.OM_REGRESSION}{{{RESULT_SEL}}} > 0 and on (suite, run) {LATEST_RUN}",
                    instant=True,
                    fmt="table",
                )
            ],
            w=12,
            h=8,
            desc="One row per case and metric that regressed in the latest run of its suite.",
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True}}}],
        )
    )
    ps.append(
        panel(
            lay,
            "table",
            "Failed cases",
            [
                target(
                    f"{c.OM_CASE_FAILED}{{{RESULT_SEL}}} > 0 and on (suite, run) {LATEST_RUN}",
                    instant=True,
                    fmt="table",
                )
            ],
            w=12,
            h=8,
            desc="Failed cases of the latest run with their reason (OOMKilled, Timeout, ...).",
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True}}}],
        )
    )
    ps.append(
        panel(
            lay,
            "table",
            "Unacknowledged change points",
            [target(f"{c.OM_CHANGE_POINTS}{{{RESULT_SEL}}} > 0", instant=True, fmt="table")],
            w=24,
            h=8,
            desc="Change points of each suite's history (Apache Otava) that no ack covers: per case and metric, the "
            "direction (worse/better) and the first run after the newest change. TrainbenchChangePoint fires on "
            "the worse ones; `trainbench baseline ack RUN --suite SUITE` or `kubectl annotate br RUN "
            "trainbench.dev/ack-change-points=all` acknowledges them (docs/verdicts.md).",
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True}}}],
        )
    )
    ps.append(
        panel(
            lay,
            "timeseries",
            "Time since the last completed run",
            [target(f'time() - max by (suite) ({c.OM_RUN_COMPLETED}{{suite=~"$suite"}})', "{{suite}}")],
            w=12,
            unit="s",
            desc="A nightly suite should stay under 24h; TrainbenchRunMissing fires past alerts.runMissingAfterHours.",
        )
    )
    ps.append(
        panel(
            lay,
            "table",
            "Latest results",
            [
                target(latest(c.OM_RESULT_MFU), instant=True, fmt="table", ref="A"),
                target(latest(c.OM_RESULT_TPS), instant=True, fmt="table", ref="B"),
                target(latest(c.OM_RESULT_STEP_TIME), instant=True, fmt="table", ref="C"),
            ],
            w=12,
            desc="MFU (A), tokens/s (B) and step time (C) of each case in the latest run.",
            transformations=[{"id": "merge", "options": {}}],
        )
    )
    return dashboard(
        "trainbench-results",
        "trainbench / Results",
        "Nightly training benchmark results: MFU, throughput, step time, memory, power and energy per model, "
        "type and pool; failures and regressions.",
        ps,
        templating(c.OM_RESULT_MFU),
        "now-30d",
        "5m",
    )


def live_dashboard() -> dict:
    lay = Layout()
    ps = [row(lay, "Progress")]
    ps.append(
        panel(
            lay,
            "bargauge",
            "Case progress (operator)",
            [target(f'{c.OM_CASE_PROGRESS}{{suite=~"$suite", pool=~"$pool"}}', "{{run}} {{case}}", True)],
            w=12,
            unit="percentunit",
            options={"orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True},
            fieldConfig={"defaults": {"unit": "percentunit", "min": 0, "max": 1}, "overrides": []},
        )
    )
    ps.append(
        panel(
            lay,
            "bargauge",
            "Steps done (trainer)",
            [target(f"{c.M_STEP}{{{LIVE_SEL}}} / {c.M_STEPS_TOTAL}{{{LIVE_SEL}}}", LIVE_LEGEND, True)],
            w=12,
            options={"orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True},
            fieldConfig={"defaults": {"unit": "percentunit", "min": 0, "max": 1}, "overrides": []},
        )
    )
    ps.append(
        panel(
            lay,
            "table",
            "Trainer state",
            [target(f"{c.M_STATE}{{{LIVE_SEL}}} == 1", instant=True, fmt="table")],
            w=24,
            h=6,
            desc=f"One of {', '.join(c.STATES)} per running case.",
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}],
        )
    )
    ps.append(row(lay, "Live metrics (rank 0 of each running case)"))
    live = [
        (c.M_TPS, "Tokens per second", "short"),
        (c.M_MFU, "MFU", "percent"),
        (c.M_STEP_TIME, "Step time", "s"),
        (c.M_LOSS, "Loss", "short"),
        (c.M_PEAK_MEMORY, "Peak memory (reserved)", "bytes"),
        (c.M_POWER, "GPU power", "watt"),
    ]
    for metric, title, unit in live:
        ps.append(panel(lay, "timeseries", title, [target(f"{metric}{{{LIVE_SEL}}}", LIVE_LEGEND)], unit=unit))
    return dashboard(
        "trainbench-live",
        "trainbench / Live",
        "Running benchmark cases: progress, state and live metrics scraped from the trainers.",
        ps,
        templating(c.M_STEP),
        "now-1h",
        "10s",
    )


DASHBOARDS = {"trainbench-results.json": results_dashboard, "trainbench-live.json": live_dashboard}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2, sort_keys=False) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    files = {OUT / name: text for name, text in render().items()}
    return write_or_check(files, argv, "charts/trainbench/hack/dashboards.py")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
