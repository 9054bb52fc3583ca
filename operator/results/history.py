"""Per-suite history: a compact document of the last runs of one suite, small enough for one ConfigMap.

`{"schema": HISTORY_SCHEMA, "suite": ..., "runs": [oldest ... newest]}`, each run
`{run, started_at, finished_at, commit, image, cases: [{id, key fields, hardware, phase, reason, metrics}]}`
with metrics reduced to what baselines, verdicts and trend plots need. `append()` adds a results document
and drops the oldest runs until the document, stored as one ConfigMap value, fits under the limit
(a ConfigMap holds at most 1 MiB in all, metadata included).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainbench.operator.clock import parse_time
from trainbench.operator.kube import CONFIGMAP_VALUE_LIMIT_BYTES
from trainbench.operator.results.keys import case_key

HISTORY_SCHEMA = "trainbench.dev/history/v1"
CONFIGMAP_KEY = "history.json"
HISTORY_LIMIT_BYTES = CONFIGMAP_VALUE_LIMIT_BYTES  # the history fits one ConfigMap key
DEFAULT_MAX_RUNS = 90

_CASE_FIELDS = ("id", "model", "type", "seq_len", "ac", "attn", "attn_backend", "ep", "cp", "lora_rank", "pool")
_CASE_FIELDS += ("hardware", "gpus", "phase", "reason")


def empty(suite: str) -> dict:
    return {"schema": HISTORY_SCHEMA, "suite": suite, "runs": []}


def is_history(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("schema") == HISTORY_SCHEMA


def _round(x: Any, digits: int = 5) -> Any:
    if isinstance(x, float):
        return float(f"{x:.{digits}g}")
    return x


def _compact_metrics(metrics: dict | None) -> dict | None:
    if not metrics:
        return None
    out: dict[str, Any] = {}
    for name in ("tps", "mfu", "mfu_done", "step_time", "power_w"):
        s = metrics.get(name)
        if isinstance(s, dict) and s.get("mean") is not None:
            out[name] = {"mean": _round(s["mean"]), "std": _round(s.get("std")), "n": s.get("n")}
    for name in ("peak_memory_gib", "energy_j", "tokens_per_joule", "gemm_tflops", "attention_tflops"):
        if metrics.get(name) is not None:
            out[name] = _round(metrics[name])
    return out or None


def _health_brief(case: dict) -> dict | None:
    """What a later run compares its environment with (results/taint.py differs): CPUs, GPU clocks, power limit."""
    reps = [r for r in case.get("repeats") or [] if not r.get("baseline_image")]
    health = next((r.get("health") for r in reps if r.get("health")), None)
    health = health or (case.get("trainer") or {}).get("health")
    if not isinstance(health, dict):
        return None
    gpu = health.get("gpu") if isinstance(health.get("gpu"), dict) else {}
    brief = {k: health.get(k) for k in ("cpu_count", "affinity") if health.get(k) is not None}
    g = {k: gpu.get(k) for k in ("sm_clock_max_mhz", "mem_clock_max_mhz", "power_limit_w") if gpu.get(k) is not None}
    if g:
        brief["gpu"] = g
    return brief or None


def run_entry(results: dict, uid: str | None = None) -> dict:
    """The compact history entry of one results document (`uid`: the BenchmarkRun's, which keys the entry on a
    cluster: a finish retried after a restart replaces it instead of adding the run twice)."""
    env = results.get("environment") or {}
    cases = []
    for c in results.get("cases", []):
        entry = {k: c.get(k) for k in _CASE_FIELDS if c.get(k) is not None}
        m = _compact_metrics(c.get("metrics")) if c.get("phase") == "Succeeded" else None
        if m:
            reps = [r for r in c.get("repeats") or [] if r.get("phase") == "Succeeded" and r.get("metrics")]
            reps = [r for r in reps if not r.get("baseline_image")]  # runs of the baseline's image: not this run
            for name, summary in m.items():  # each repeat's mean: the run-to-run spread of this run
                if isinstance(summary, dict) and len(reps) > 1:
                    means = [(r["metrics"].get(name) or {}).get("mean") for r in reps]
                    summary["means"] = [_round(x) for x in means if x is not None]
            entry["metrics"] = m
        verdict = c.get("verdict") or {}
        if verdict.get("state"):
            entry["state"] = verdict["state"]  # suspected | confirmed | cleared: baselines skip regressions
        if any(v.get("status") == "improvement" for v in (c.get("verdicts") or {}).values()):
            entry["improved"] = True  # the baseline moves to this run
        if verdict.get("tainted"):
            entry["tainted"] = verdict["tainted"]
        health = _health_brief(c)
        if health:
            entry["health"] = health
        cases.append(entry)
    entry = {"run": results.get("run"), "uid": uid} if uid else {"run": results.get("run")}
    return {
        **entry,
        "started_at": results.get("started_at"),
        "finished_at": results.get("finished_at"),
        "commit": env.get("commit"),
        "image": env.get("image"),
        "image_digest": env.get("image_digest"),
        "cases": cases,
    }


def stored_size(doc: dict) -> int:
    """Bytes the document takes as one ConfigMap value (a JSON string inside the object's JSON)."""
    text = dumps(doc)
    return len(json.dumps({CONFIGMAP_KEY: text}).encode())


def dumps(doc: dict) -> str:
    return json.dumps(doc, separators=(",", ":"))


def trim(doc: dict, limit_bytes: int = HISTORY_LIMIT_BYTES, max_runs: int = DEFAULT_MAX_RUNS) -> dict:
    """Drop the oldest runs until at most max_runs remain and the stored size is under limit_bytes. A single
    run that is still too big keeps its first cases only and is marked `truncated`."""
    runs = list(doc.get("runs", []))[-max_runs:] if max_runs > 0 else []
    out = {**doc, "runs": runs}
    while len(out["runs"]) > 1 and stored_size(out) > limit_bytes:
        out["runs"] = out["runs"][1:]
    if out["runs"] and stored_size(out) > limit_bytes:
        last = dict(out["runs"][-1])
        cases = list(last.get("cases", []))
        last["truncated"] = True
        while cases and stored_size({**out, "runs": [{**last, "cases": cases}]}) > limit_bytes:
            cases = cases[: len(cases) * 9 // 10]
        out["runs"] = [{**last, "cases": cases}]
    return out


def _same(entry: dict, other: dict) -> bool:
    """One run: the same uid when both have one (a deleted run's namesake is another run), else the same name."""
    if entry.get("uid") and other.get("uid"):
        return entry["uid"] == other["uid"]
    return entry.get("run") == other.get("run")


def append(
    doc: dict | None,
    results: dict,
    limit_bytes: int = HISTORY_LIMIT_BYTES,
    max_runs: int = DEFAULT_MAX_RUNS,
    uid: str | None = None,
) -> dict:
    """A new history document with `results` added as the newest run (replacing an entry of the same run: its
    uid, else its name), trimmed to fit."""
    suite = results.get("suite") or results.get("run")
    doc = doc if is_history(doc) else empty(suite)
    entry = run_entry(results, uid)
    runs = [r for r in doc.get("runs", []) if not _same(entry, r)] + [entry]
    return trim({**doc, "suite": doc.get("suite") or suite, "runs": runs}, limit_bytes, max_runs)


def parse(text: str | None) -> tuple[dict | None, str | None]:
    """(history, problem) of a stored history text (a ConfigMap's history.json): (None, None) for no text, (None,
    why) for one that is not a usable history document (never raises: a garbage history is said, not fatal)."""
    if text is None:
        return None, None
    try:
        doc = json.loads(text)
    except (TypeError, ValueError) as e:
        return None, f"{CONFIGMAP_KEY} is not JSON ({' '.join(str(e).split())[:120]})"
    if not is_history(doc):
        schema = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        return None, f"{CONFIGMAP_KEY} is not a trainbench history document (schema {schema!r})"
    runs = doc.get("runs")
    if not isinstance(runs, list) or not all(
        isinstance(r, dict) and isinstance(r.get("cases", []), list) and all(isinstance(c, dict) for c in r["cases"])
        for r in runs
    ):
        return None, f"{CONFIGMAP_KEY}: runs is not a list of runs with a list of cases each"
    return doc, None


def before(doc: dict, started_at: str | None, run: str | None = None, uid: str | None = None) -> dict:
    """The history a run is judged against: the runs that had finished before it started (`started_at`, ISO
    8601), the run itself left out (by uid when known: a finish retried after a restart finds itself there)."""
    started = parse_time(started_at)
    runs = []
    for r in doc.get("runs", []):
        if (uid and r.get("uid") == uid) or (r.get("run") == run and not (uid and r.get("uid"))):
            continue
        finished = parse_time(r.get("finished_at"))
        if started is not None and (finished is None or finished > started):
            continue
        runs.append(r)
    return {**doc, "runs": runs}


def load(path: str | Path) -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    if not is_history(doc):
        raise ValueError(f"{path}: not a trainbench history document (schema {doc.get('schema')!r})")
    return doc


def save(doc: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(doc) + "\n")
    return path


def series(doc: dict | None, key: tuple, last: int = 10) -> list[dict]:
    """[{run, started_at, phase, metrics}] for the case matching `key` (keys.case_key) over the last runs,
    oldest first."""
    if not doc:
        return []
    out = []
    for run in doc.get("runs", []):
        for c in run.get("cases", []):
            if case_key(c) == key:
                out.append(
                    {
                        "run": run.get("run"),
                        "started_at": run.get("started_at"),
                        "commit": run.get("commit"),
                        "phase": c.get("phase"),
                        "metrics": c.get("metrics"),
                    }
                )
                break
    return out[-last:]


def from_results(
    docs: list[dict], limit_bytes: int = HISTORY_LIMIT_BYTES, max_runs: int = DEFAULT_MAX_RUNS
) -> dict | None:
    """A history document from several results documents of one suite (e.g. the operator's per-run results
    ConfigMaps), oldest first by start time; None for no documents."""
    doc = None
    for r in sorted(docs, key=lambda d: (d.get("started_at") or "", d.get("run") or "")):
        doc = append(doc, r, limit_bytes, max_runs)
    return doc
