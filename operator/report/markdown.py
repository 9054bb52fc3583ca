"""The markdown report: what people read every morning.

`render_report(results, baseline=None, history=None, ...)` renders a results document in the format of
prime-rl's nightly page (seeds/002): a header (time, commit, image), a section per model with the same
columns (Type, SeqLen, AC, Attn, EP, CP, Hardware, MFU, TPS, Step Time, Peak Mem) plus power, energy and
tokens per joule where measured; regressions bold with :warning: and the change; other changes >= 1%
shown. Before the tables: a summary line. After them: failed benchmarks with classified reasons, a
cross-pool comparison (speed-up, cost per million tokens), per-case history with trend plots, the
good/excellent legend (seeds/000) and the environment.
"""

from __future__ import annotations

import copy
from typing import Any

from trainbench.operator.clock import human
from trainbench.operator.report import sections as T
from trainbench.operator.report.plots import trend_series
from trainbench.operator.results import verdict as V
from trainbench.operator.results.baseline import from_results
from trainbench.operator.results.keys import (
    ac_label,
    attn_label,
    case_key,
    case_label,
    model_title,
    type_label,
)

FIRST_STEP = "First Step (compile)"  # column of the first step's wall time (results: metrics.first_step_s)
SPARKS = "▁▂▃▄▅▆▇█"
LEGEND = [
    ("MFU", "> 30%", "> 50%"),
    ("Step Time", "< 60s", "< 30s"),
    ("Memory Utilization", "< 90%", "< 80%"),
]


# --- escaping -----------------------------------------------------------------------------------------

TEXT_LIMIT = 200  # characters of one user or cluster string in the report
BLOCK_LIMIT = 4000  # characters of a multi-line block (a failed case's last log lines)
_MD_SPECIAL = str.maketrans({"\\": "\\\\", "|": "\\|", "[": "\\[", "]": "\\]", "`": "'", "<": "&lt;", ">": "&gt;"})


def text(value: Any, limit: int = TEXT_LIMIT) -> str:
    """A user or cluster string as report text: one line, at most `limit` characters, with nothing markdown or
    HTML would act on (a `|` that splits a table cell, `[...](...)` links and images, backticks that end a code
    span, `<img onerror=...>`); a heading cannot be forged since the text is never at the start of a line.
    Identity for ordinary names (qwen3-0.6b, H100 HBM3, nightly-20260101)."""
    one = " ".join(str(value).replace("&", "&amp;").split())
    if len(one) > limit:
        one = one[: limit - 1] + "…"
    return one.translate(_MD_SPECIAL)


def block(value: Any, limit: int = BLOCK_LIMIT) -> str:
    """A multi-line string for a fenced code block: its tail of at most `limit` characters, no backticks (which
    could close the fence; inside it, markdown and HTML are inert)."""
    out = str(value).replace("`", "'")
    return out if len(out) <= limit else "…" + out[-(limit - 1) :]


_RAW_KEYS = ("message", "repro")  # multi-line: escaped where they are placed (block, fence)


def escaped(doc: Any, key: str | None = None) -> Any:
    """A copy of a results document with every string passed through `text` (multi-line ones through `block`),
    so that whatever the spec, the trainer or a results file says reaches the report as plain text."""
    if isinstance(doc, dict):
        return {k: escaped(v, k) for k, v in doc.items()}
    if isinstance(doc, list):
        return [escaped(v, key) for v in doc]
    if isinstance(doc, str):
        return block(doc) if key in _RAW_KEYS else text(doc)
    return doc


# --- formatting ---------------------------------------------------------------------------------------


def fmt_tps(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.2f}k"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def fmt_seconds(v: float) -> str:
    return f"{v:.2f}s" if v >= 0.1 else f"{v * 1000:.1f}ms"


def fmt_gib(v: float) -> str:
    return f"{v:.1f} GiB" if v >= 0.1 else f"{v * 1024:.1f} MiB"


def fmt_energy(j: float) -> str:
    if j >= 1e6:
        return f"{j / 3.6e6:.2f} kWh"
    if j >= 1e3:
        return f"{j / 1e3:.1f} kJ"
    return f"{j:.0f} J"


FORMATS = {
    "mfu": lambda v: f"{v:.1f}%",
    "tps": fmt_tps,
    "step_time": fmt_seconds,
    "first_step": fmt_seconds,
    "peak_memory": fmt_gib,
    "tokens_per_joule": lambda v: f"{v:.1f}" if v >= 10 else f"{v:.3g}",
}


def cell(metric: str, value: float | None, verdict: dict | None = None) -> str:
    """One table cell: the value, and its change against the baseline when it matters."""
    if value is None:
        return "–"
    text = FORMATS[metric](value)
    if not verdict:
        return text
    status, change, state = verdict.get("status"), verdict.get("change_pct"), verdict.get("state")
    if status == "regression" and state == "suspected":
        return f"**{text}** :mag: ({change:+.1f}% suspected)"
    if status == "regression":
        return f"**{text}** :warning: ({change:+.1f}%)"
    if status == "noise":
        return f"{text} ({change:+.1f}% ~noise)"
    if status == "tainted":
        return f"{text} ({change:+.1f}% ~tainted)"
    if status in ("improvement", "changed"):
        return f"{text} ({change:+.1f}%)"
    return text


def sparkline(values: list[float | None]) -> str:
    nums = [v for v in values if v is not None]
    if not nums:
        return ""
    lo, hi = min(nums), max(nums)
    out = []
    for v in values:
        if v is None:
            out.append("·")
        elif hi == lo:
            out.append(SPARKS[3])
        else:
            out.append(SPARKS[round((v - lo) / (hi - lo) * (len(SPARKS) - 1))])
    return "".join(out)


def _sort_key(case: dict) -> tuple:
    tps = ((case.get("metrics") or {}).get("tps") or {}).get("mean") or 0.0
    return (type_label(case), case.get("seq_len") or 0, -tps, case.get("hardware") or "", case.get("ac") or "")


# --- sections -----------------------------------------------------------------------------------------


def _model_sections(cases: list[dict]) -> list[str]:
    lines: list[str] = []
    by_model: dict[str, list[dict]] = {}
    for c in cases:
        by_model.setdefault(model_title(c), []).append(c)
    for title, group in by_model.items():
        extra = []
        if any((c.get("metrics") or {}).get("power_w") for c in group):
            extra.append(("Power", lambda m: f"{m['power_w']['mean']:.0f} W" if m.get("power_w") else "–"))
        if any((c.get("metrics") or {}).get("energy_j") is not None for c in group):
            extra.append(("Energy", lambda m: fmt_energy(m["energy_j"]) if m.get("energy_j") is not None else "–"))
        if any((c.get("metrics") or {}).get("first_step_s") is not None for c in group):
            extra.insert(0, (FIRST_STEP, lambda m: cell("first_step", m.get("first_step_s"))))
        tpj = any((c.get("metrics") or {}).get("tokens_per_joule") is not None for c in group)
        done = any((c.get("metrics") or {}).get("mfu_done") for c in group)
        floor = any(c.get("ceilings") for c in group)
        mfu_cols = (["MFU (prime-rl)", "MFU (done)"] if done else ["MFU"]) + ([FLOOR] if floor else [])
        head = ["Type", "SeqLen", "AC", "Attn", "EP", "CP", "Hardware", *mfu_cols, "TPS", "Step Time", "Peak Mem"]
        head += [name for name, _ in extra] + (["Tok/J"] if tpj else [])
        lines += [f"## {title}", "", "| " + " | ".join(head) + " |"]
        lines.append("|" + "|".join("-" * max(len(h) + 2, 4) for h in head) + "|")
        for c in sorted(group, key=_sort_key):
            m = c.get("metrics") or {}
            vd = c.get("verdicts") or {}
            nominal = "†" if c.get("peak_flops_source") == "cpu-nominal" else ""
            row = [
                type_label(c),
                str(c.get("seq_len")),
                ac_label(c.get("ac")),
                attn_label(c),
                str(c.get("ep", 1)),
                str(c.get("cp", 1)),
                c.get("hardware") or "?",
                cell("mfu", V.metric_value(m, "mfu")[0], vd.get("mfu")) + nominal + _beyond(c, "mfu"),
                *([cell("mfu", V.metric_value(m, "mfu_done")[0]) + nominal + _beyond(c, "mfu_done")] if done else []),
                *([floor_cell(c)] if floor else []),
                cell("tps", V.metric_value(m, "tps")[0], vd.get("tps")),
                cell("step_time", V.metric_value(m, "step_time")[0], vd.get("step_time")),
                cell("peak_memory", m.get("peak_memory_gib"), vd.get("peak_memory")),
            ]
            row += [fn(m) for _, fn in extra]
            if tpj:
                row.append(cell("tokens_per_joule", m.get("tokens_per_joule"), vd.get("tokens_per_joule")))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return lines


# Where no calibration case measured a pool (spec.calibrate), MFU above this share of the peak is flagged: dense
# bf16 GEMMs reach ~81% of the H200's 989 TF (799 TF measured, docs/performance.md); prime-rl's formula gets there
# by counting attention over the whole packed sequence, which causal, document-masked attention does not compute.
MFU_CEILING_PCT = 81.0
BEYOND = "‡"
FLOOR = "% of floor"


def ceiling_pct(case: dict) -> float | None:
    """The pool's measured ceiling as a percent of the case's peak (the faster of its GEMM and attention: no work
    runs faster than its fastest kernel); None where no calibration measured the pool."""
    ceil, peak = case.get("ceilings") or {}, case.get("peak_flops")
    best = max(ceil.get("gemm_tflops") or 0, ceil.get("attention_tflops") or 0)
    return 100 * best * 1e12 / peak if best and peak else None


def beyond(case: dict, metric: str) -> str | None:
    """Why a reported figure cannot be real, or None: `measured` (above the pool's measured ceiling; % of floor
    above 100) or `fixed` (MFU above MFU_CEILING_PCT where the pool has no calibration)."""
    value = V.metric_value(case.get("metrics"), metric)[0]
    if value is None:
        return None
    if metric == "pct_of_floor":
        return "measured" if value > 100 else None
    limit = ceiling_pct(case)
    if limit is not None:
        return "measured" if value > limit else None
    return "fixed" if value > MFU_CEILING_PCT else None


def _beyond(case: dict, metric: str) -> str:
    return BEYOND if beyond(case, metric) else ""


def floor_cell(case: dict) -> str:
    """% of floor: the share of the attainable speed a step reached; "—" where the pool's ceilings are unknown."""
    pct = V.metric_value(case.get("metrics"), "pct_of_floor")[0]
    return "—" if pct is None else f"{pct:.1f}%" + _beyond(case, "pct_of_floor")


def _beyond_notes(cases: list[dict]) -> list[str]:
    """The footnotes of the ‡ marks: why each flagged figure cannot be real work."""
    why = {beyond(c, m) for c in cases for m in ("mfu", "mfu_done", "pct_of_floor")}
    lines = []
    if "measured" in why:
        lines += [
            f"{BEYOND} above the pool's measured ceiling (its calibration case: the best bf16 GEMM and attention "
            "TFLOP/s of one GPU), or a % of floor above 100: more work per second than the GPU's kernels run at. "
            "prime-rl's formula counts attention over the whole packed sequence, which causal, per-document "
            "attention does not compute; a % of floor above 100 means a step ran faster than its own work allows "
            "(FLOPs counted that did not run, or a GPU faster than when it was calibrated).",
            "",
        ]
    if "fixed" in why:
        lines += [
            f"{BEYOND} above {MFU_CEILING_PCT:g}% of peak on a pool without calibration (spec.calibrate): a fixed "
            "figure, the H200's measured dense bf16 GEMMs (799 of 989 TF), stands in for the pool's ceiling; prime-rl's "
            "formula counts attention over the whole packed sequence; MFU (done) counts the causal, per-document "
            "attention that ran.",
            "",
        ]
    return lines


def _verdict_section(cases: list[dict]) -> list[str]:
    """Suspected, confirmed and cleared regressions with their test, and tainted cases with the reason."""
    lines = []
    for c in cases:
        v = c.get("verdict") or {}
        state, tainted = v.get("state"), v.get("tainted") or []
        if not state and not tainted:
            continue
        fams = v.get("families") or {}
        fam = next((f for f in fams.values() if f.get("status") == "regression"), None)
        fam = fam or fams.get("throughput") or next(iter(fams.values()), {})
        reps = [r for r in c.get("repeats") or [] if not r.get("baseline_image")]  # the baseline's image: the note
        runs = f"{len(reps)} run{'s' if len(reps) != 1 else ''}" if reps else "1 run"
        confirm = sum(1 for r in reps if r.get("confirm"))
        what = f"**{model_title(c)}** {case_label(c, detail=False)}"
        if state:
            test = ""
            if fam.get("change_pct") is not None:
                test = f": {V.LABELS.get(fam.get('metric'), fam.get('metric'))} {fam['change_pct']:+.1f}%"
                if fam.get("p_value") is not None:
                    test += f", p = {fam['p_value']:.3g}"
            rerun = f", {confirm} confirming re-run{'s' if confirm != 1 else ''}" if confirm else ""
            word = state.capitalize() if confirm or state != "confirmed" else "Regression"  # not re-run
            note = (c.get("baseline") or {}).get("note")  # judged against the baseline's image, or why not
            lines.append(f"- {what}: **{word}**{test} ({runs}{rerun}{'; ' + note if note else ''})")
        for reason in tainted:
            lines.append(f"- {what}: **Tainted**: {reason}")
    return ["## Verdicts", "", *lines, ""] if lines else []


def _change_points_section(results: dict) -> list[str]:
    """Change points of the suite's history (results/changepoints.py), newest first."""
    points = results.get("change_points") or []
    if not points:
        return []
    lines = ["## Change Points", "", "| Case | Metric | First run after the change | Change | p | Commit | Image | |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for p in sorted(points, key=lambda p: str(p.get("run")), reverse=True):
        ack = "acknowledged" if p.get("acknowledged") else ":warning:"
        lines.append(
            f"| {p.get('case')} | {V.LABELS.get(p.get('metric'), p.get('metric'))} | `{p.get('run')}` | "
            f"{p.get('change_pct', 0):+.1f}% | {p.get('p_value', 1):.2g} | `{p.get('commit') or 'unknown'}` | "
            f"`{p.get('image') or 'unknown'}` | {ack} |"
        )
    return [*lines, ""]


def _failed_section(cases: list[dict]) -> list[str]:
    bad = [c for c in cases if c.get("phase") not in ("Succeeded", "Pending", "Running")]
    if not bad:
        return []
    lines = ["## Failed Benchmarks", ""]
    details = []
    for c in bad:
        reason = c.get("reason") or c.get("phase")
        msg = (c.get("message") or "").strip()
        first = text(msg.splitlines()[0]) if msg else ""  # a block (multi-line): escaped here as one line
        what = f"seq {c.get('seq_len')}, {ac_label(c.get('ac'))}, {attn_label(c)}"
        if (c.get("ep") or 1) > 1 or (c.get("cp") or 1) > 1:
            what += f", EP {c.get('ep')}, CP {c.get('cp')}"
        line = f"- **{model_title(c)}** ({type_label(c)}, {what}) on {c.get('hardware')}: **{reason}**"
        lines.append(line + (f": {first}" if first else ""))
        if msg and len(msg.splitlines()) > 1:
            details += [f"<details><summary>{c['id']}: last log lines</summary>", "", "```", msg, "```", "</details>"]
    lines.append("")
    if details:
        lines += details + [""]
    return lines


def _cross_pool(results: dict, cases: list[dict]) -> list[str]:
    prices = {p["name"]: p.get("price_per_gpu_hour") for p in results.get("pools") or []}
    groups: dict[tuple, list[dict]] = {}
    for c in cases:
        if c.get("phase") != "Succeeded" or not V.metric_value(c.get("metrics"), "tps")[0]:
            continue
        groups.setdefault(case_key(c, hardware=False), []).append(c)
    groups = {k: v for k, v in groups.items() if len({c["pool"] for c in v}) > 1}
    if not groups:
        return []
    priced = any(prices.get(c["pool"]) is not None for g in groups.values() for c in g)
    head = ["Model", "Type", "SeqLen", "AC", "Attn", "Pool", "Hardware", "TPS", "Speed-up"]
    head += ["$/GPU-h", "$/M tokens"] if priced else []
    lines = [
        "## Across pools",
        "",
        "The same case on several pools; speed-up against the slowest pool"
        + (", cost per million tokens from each pool's declared GPU-hour price." if priced else "."),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("-" * (len(h) + 2) for h in head) + "|",
    ]
    for group in groups.values():
        slowest = min(V.metric_value(c["metrics"], "tps")[0] for c in group)
        for c in sorted(group, key=lambda c: -V.metric_value(c["metrics"], "tps")[0]):
            tps = V.metric_value(c["metrics"], "tps")[0]
            row = [model_title(c), type_label(c), str(c["seq_len"]), ac_label(c["ac"]), attn_label(c)]
            row += [c["pool"], c.get("hardware") or "?", fmt_tps(tps), f"{tps / slowest:.2f}×"]
            if priced:
                price = prices.get(c["pool"])
                if price is None:
                    row += ["–", "–"]
                else:
                    per_m = price * (c.get("gpus") or 1) / 3600.0 / tps * 1e6
                    row += [f"${price:.2f}", f"${per_m:.3f}"]
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return lines


def _history_section(results: dict, history: dict | None, plots: dict | None, last: int) -> list[str]:
    groups = trend_series(results, history, last)
    if not groups:
        return []
    lines = [f"## History (last {last} runs)", ""]
    for model, cases in groups.items():
        title = text(model_title(cases[0][0]))
        lines += [f"### {title}", ""]
        if plots and plots.get(model):
            lines += [f"![{title}: TPS and MFU over the last runs]({plots[model]})", ""]
        lines += [
            "| Case | Runs | TPS trend | TPS (oldest → newest) | MFU (oldest → newest) |",
            "|---|---|---|---|---|",
        ]
        for case, points in cases:
            tps = [V.metric_value(p.get("metrics"), "tps")[0] for p in points]
            mfu = [V.metric_value(p.get("metrics"), "mfu")[0] for p in points]
            label = case_label(case)
            row = [
                label,
                str(len(points)),
                sparkline(tps),
                " → ".join(fmt_tps(v) if v is not None else "✗" for v in tps),
                " → ".join(f"{v:.1f}%" if v is not None else "✗" for v in mfu),
            ]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return lines


def _environment(results: dict, cases: list[dict]) -> list[str]:
    rows = []
    seen = set()
    for c in cases:
        env = c.get("environment") or {}
        row = (
            c.get("hardware") or "?",
            c.get("gpu") or env.get("gpu_name") or "–",
            c.get("driver") or env.get("driver") or "–",
            env.get("torch") or "–",
            env.get("cuda") or env.get("hip") or "–",
            env.get("transformers") or "–",
            c.get("image") or "–",
        )
        if any(v != "–" for v in row[1:6]) and row not in seen:
            seen.add(row)
            rows.append(row)
    if not rows:
        return []
    lines = ["<details><summary>Environment</summary>", ""]
    lines += ["| Hardware | GPU | Driver | torch | CUDA/HIP | transformers | Image |", "|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return lines + ["", "</details>", ""]


def _code(text) -> str:
    """A user or cluster string as an inline code span: one line, no backticks that could end it."""
    return " ".join(str(text).replace("`", "'").split())


PROVENANCE_COLUMNS = (
    ("Node", lambda c, e: c.get("node") or e.get("node")),
    ("Image digest", lambda c, e: (e.get("image_digest") or "")[:19] or None),  # sha256: + 12 hex digits
    ("Commit", lambda c, e: (e.get("image_revision") or "")[:12] or None),
    ("Built", lambda c, e: e.get("image_created")),
    ("cuDNN", lambda c, e: e.get("cudnn")),
    ("NCCL", lambda c, e: e.get("nccl")),
    ("flash-attn", lambda c, e: e.get("flash_attn")),
    ("SM clock max", lambda c, e: f"{e['sm_clock_max_mhz']:.0f} MHz" if e.get("sm_clock_max_mhz") else None),
    ("Power limit", lambda c, e: f"{e['power_limit_w']:.0f} W" if e.get("power_limit_w") else None),
    ("Kueue flavor", lambda c, e: e.get("kueue_flavor")),
    (
        "Flavor labels",
        lambda c, e: ", ".join(f"{k}={v}" for k, v in sorted((e.get("kueue_flavor_node_labels") or {}).items())),
    ),
)


def _provenance(cases: list[dict]) -> list[str]:
    """What ran, per case: node, image digest and commit, build date, library versions, GPU clocks and power
    limit, the Kueue flavor's node labels; then one repro command per case. Columns nobody reported are left out."""
    ran = [c for c in cases if c.get("phase") not in ("Pending", "Skipped")]
    table = [[fn(c, c.get("environment") or {}) or "–" for _, fn in PROVENANCE_COLUMNS] for c in ran]
    keep = [i for i in range(len(PROVENANCE_COLUMNS)) if any(row[i] != "–" for row in table)]
    lines: list[str] = []
    if any(PROVENANCE_COLUMNS[i][0] != "Node" for i in keep):
        lines += ["<details><summary>What ran</summary>", ""]
        lines += ["| Case | " + " | ".join(PROVENANCE_COLUMNS[i][0] for i in keep) + " |"]
        lines += ["|---|" + "---|" * len(keep)]
        for c, row in zip(ran, table, strict=True):
            label = _code(f"{model_title(c)} {case_label(c, detail=False)}")
            lines += [f"| {label} | " + " | ".join(_code(row[i]) for i in keep) + " |"]
        lines += ["", "</details>", ""]
    repro = [c for c in cases if c.get("repro")]
    if repro:
        lines += ["<details><summary>Reproduce a case</summary>", ""]
        for c in repro:
            label = _code(f"{model_title(c)} {case_label(c, detail=False)}")
            fence = "````" if "```" in c["repro"] else "```"
            lines += [f"{label} (`{_code(c['id'])}`):", "", f"{fence}sh", " ".join(c["repro"].split()), fence, ""]
        lines += ["</details>", ""]
    return lines


# --- the report ---------------------------------------------------------------------------------------


def summary_line(results: dict) -> str:
    s = results.get("summary") or {}
    parts = [f"{s.get('cases', 0)} cases", f"{s.get('succeeded', 0)} passed", f"{s.get('failed', 0)} failed"]
    if s.get("metrics_unavailable"):
        parts.append(f"{s['metrics_unavailable']} without metrics")
    if s.get("skipped"):
        parts.append(f"{s['skipped']} skipped")
    if s.get("pending"):
        parts.append(f"{s['pending']} not finished")
    if s.get("cancelled"):
        parts.append(f"{s['cancelled']} cancelled")
    regs = s.get("regressions", 0)
    if results.get("baseline") is None:
        parts.append("no baseline")
    else:
        parts.append(f"{regs} regression{'s' if regs != 1 else ''}")
        for key, word in (("suspected", "suspected"), ("cleared", "cleared on re-run"), ("tainted", "tainted")):
            if s.get(key):
                parts.append(f"{s[key]} {word}")
    icon = ":x:" if s.get("failed") or regs else ":white_check_mark:"
    return f"{icon} **{', '.join(parts)}**"


def render_report(
    results: dict,
    baseline: Any | None = None,
    history: dict | None = None,
    *,
    thresholds: dict | Any | None = None,
    plots: dict | None = None,
    history_runs: int = 10,
    title: str = "Performance Benchmarks",
) -> str:
    """Markdown for a results document. `baseline`: a baseline.Baseline (verdicts are computed) or None
    (verdicts already attached to the document are used); `history`: the suite's history document;
    `plots`: {model: relative path} from plots.render_trends."""
    results = copy.deepcopy(results)
    if baseline is not None:
        V.apply(results, baseline, thresholds)
    results = escaped(results)  # every user string bounded and escaped, after the verdicts matched the baseline
    th = V.thresholds_for(thresholds if thresholds is not None else (results.get("thresholds") or None))
    env = results.get("environment") or {}
    cases = results.get("cases") or []
    image = env.get("image") or next((c.get("image") for c in cases if c.get("image")), None)
    if image is None and env.get("executor") == "local":
        image = "none (local executor)"
    if env.get("image_digest") and "@" not in (image or ""):
        image = f"{image}@{env['image_digest']}" if image else env["image_digest"]

    lines = [f"# {title}: {results.get('suite')}", "", summary_line(results), ""]
    lines += [
        f"**Last Updated:** {human(results.get('finished_at') or results.get('started_at'))}  ",
        f"**Run:** `{results.get('run')}` ({env.get('executor', 'unknown')} executor"
        + (f", {results['duration_s']:.0f}s" if results.get("duration_s") is not None else "")
        + ")  ",
        f"**Commit:** `{_code(env.get('commit') or 'unknown')}`  ",
        f"**Docker Image:** `{_code(image or 'None')}`  ",
    ]
    if env.get("image_created"):
        lines.append(f"**Image Built:** {_code(env['image_created'])}  ")
    b = results.get("baseline")
    if b and b.get("source") == "unavailable":  # asked for and not readable (results/baseline.unavailable)
        lines.append(f"**Baseline:** :warning: unavailable, no comparison: {b.get('description')}")
    elif b:
        lines.append(f"**Baseline:** {b.get('description')} ({b.get('matched', 0)} of {len(cases)} cases matched)")
    else:
        lines.append("**Baseline:** none (first run of this suite, or no baseline given)")
    if (results.get("history") or {}).get("problem"):  # a garbage <suite>-history ConfigMap (controller/suite.py)
        h = results["history"]
        lines.append(f"**History:** :warning: {h['problem']}; read from the {h.get('source')} instead")
    lines.append("")
    if len(set(th.values())) == 1:
        th_text = f"{th['mfu']:g}%"
    else:
        th_text = ", ".join(f"{V.LABELS[m]} {th[m]:g}%" for m in V.METRICS)
    ok = [c for c in cases if c.get("phase") == "Succeeded"]
    clock = (
        "> :clock10: Step Time is the wall time of one optimizer step (all micro batches); TPS counts tokens over "
        "all GPUs; MFU uses prime-rl's FLOPs formula (MFU (done), where shown, the work actually done: causal "
        "attention within each document, the real head_dim); Peak Mem is the maximum reserved device memory."
    )
    if any(c.get("ceilings") for c in ok):
        clock += (
            f" {FLOOR} is the floor (the step's GEMM FLOPs at the pool's measured GEMM TFLOP/s plus its attention "
            "FLOPs at the measured attention TFLOP/s) over the measured step time: the share of the attainable speed "
            "reached."
        )
    if any((c.get("metrics") or {}).get("first_step_s") is not None for c in ok):
        clock += (
            f" {FIRST_STEP} is the wall time of the first (warm-up) step, where torch.compile and autotuning run: "
            "minutes on a cold compile cache, seconds on a warm one; Step Time leaves warm-up steps out."
        )
    lines += [
        f"> :warning: indicates regression > {th_text} from baseline",
        f"> diffs shown when abs(change) >= {V.SHOW_PCT:.1f}% (except regressions, which always show diffs); "
        "`~noise` marks a change that fresh processes of identical code also show (a test over the run-to-run and "
        "step-to-step spread of both sides); :mag: a suspected regression awaiting its re-runs; `~tainted` a case "
        "measured in an unhealthy environment (never a regression)",
        "",
        clock,
        "",
    ]
    lines += _model_sections([c for c in ok if c.get("type") not in T.NON_TRAINING])
    lines += T.autobatch_section(ok) + T.generate_section(ok, cell) + T.verify_section(ok)
    if any(c.get("peak_flops_source") == "cpu-nominal" for c in ok):
        lines += ["† MFU against a nominal CPU peak (no GPU): compare it only with other CPU runs.", ""]
    lines += _beyond_notes([c for c in ok if c.get("type") not in T.NON_TRAINING])
    lines += T.calibration_section(cases, th.get("tps", V.DEFAULT_THRESHOLD))
    lines += _verdict_section(cases)
    lines += _change_points_section(results)
    lines += _failed_section(cases)
    lines += _cross_pool(results, cases)
    lines += _history_section(results, history, plots, history_runs)
    lines += ["## Metrics Interpretation", "", "| Metric | Good | Excellent |", "|--------|------|-----------|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in LEGEND]
    lines.append("")
    lines += _environment(results, cases)
    lines += _provenance(cases)
    return "\n".join(lines).rstrip() + "\n"


def render_compare(a: dict, b: dict, thresholds: dict | Any | None = None) -> tuple[str, dict]:
    """Diff two results documents (A = before, B = after): markdown and a JSON-ready dict."""
    base = from_results(a)
    b = V.apply(copy.deepcopy(b), base, thresholds if thresholds is not None else (b.get("thresholds") or None))
    a, b = escaped(a), escaped(b)  # every user string bounded and escaped (the JSON half too: it is shown)
    rows, data = [], []
    for c in b.get("cases", []):
        if c.get("type") == "calibrate":  # a pool's ceilings, not a measurement of a model (the report shows them)
            continue
        vd = c.get("verdicts")
        entry = {"case": c["id"], "phase": c.get("phase"), "verdicts": vd, "baseline_run": a.get("run")}
        data.append(entry)
        if not vd:
            label = case_label(c, detail=False)
            rows.append(f"| {model_title(c)} | {label} | – | – | – | – | no match in A |")
            continue
        parts = []
        for metric in ("mfu", "tps", "step_time", "peak_memory"):
            v = vd.get(metric)
            parts.append(cell(metric, v.get("current"), v) if v else "–")
        worst = [v["status"] for v in vd.values()]
        status = "regression" if "regression" in worst else ("improvement" if "improvement" in worst else "ok")
        label = case_label(c, detail=False)
        rows.append(f"| {model_title(c)} | {label} | " + " | ".join(parts) + f" | {status} |")
    md = [
        f"# Compare: `{a.get('run')}` → `{b.get('run')}`",
        "",
        summary_line(b),
        "",
        "| Model | Case | MFU | TPS | Step Time | Peak Mem | Verdict |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    return "\n".join(md), {"a": a.get("run"), "b": b.get("run"), "summary": b.get("summary"), "cases": data}
