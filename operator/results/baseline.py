"""Baselines: the numbers a run is compared with.

Sources (`load_baseline` detects which from the content):
- a trainbench results document (a pinned results.json file, a folder holding one, or a ConfigMap);
- a suite's history document: per case, its last healthy runs pooled (`from_history`);
- prime-rl benchmark JSON files (`config` + `metrics.{mfu,throughput,step_time}.{mean,std,min,max}` +
  `peak_memory.{gib,pct}`), one file, a list, or a folder of them.

Cases match on model, hardware, type, LoRA rank, seq len, AC, attention, EP and CP (`case_key`). The
attention a case asked for is tried first, then the one that ran (a case that asked for `auto` and ran
FA3 matches a prime-rl FA3 baseline).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainbench.operator.controller.client import Api
from trainbench.operator.results import document as R
from trainbench.operator.results import history as H
from trainbench.operator.results.keys import case_key, hardware_label, normalise_model, short_gpu_name
from trainbench.operator.results.repeats import combine_metrics


class BaselineError(ValueError):
    """A baseline source that cannot be read."""


@dataclass
class Baseline:
    source: str  # "results" | "history" | "prime-rl"
    description: str
    entries: dict[tuple, dict] = field(default_factory=dict)

    def add(self, case: dict, entry: dict) -> None:
        self.entries[case_key(case)] = entry
        ran = case.get("attn_backend")
        if ran and ran != case.get("attn"):
            self.entries.setdefault(case_key(case, attn=ran), entry)

    def find(self, case: dict) -> dict | None:
        """The baseline entry for a results-document case, or None."""
        entry = self.entries.get(case_key(case))
        if entry is None and case.get("attn_backend"):
            entry = self.entries.get(case_key(case, attn=case["attn_backend"]))
        return entry

    def __len__(self) -> int:
        return len({id(e) for e in self.entries.values()})


def case_image(case: dict, environment: dict | None = None) -> tuple[str | None, str | None]:
    """(image reference, digest) a results-document case ran: pinned by digest where the pod reported one."""
    env = {**(environment or {}), **{k: v for k, v in (case.get("environment") or {}).items() if v}}
    ref = env.get("image_pinned") or case.get("image") or env.get("image")
    return ref, env.get("image_digest")


def from_results(doc: dict, description: str | None = None) -> Baseline:
    """A pinned baseline: the successful cases of one results document."""
    doc = R.validate(doc)
    b = Baseline("results", description or f"run {doc['run']} ({doc.get('started_at') or 'unknown time'})")
    for c in doc["cases"]:
        if c.get("phase") == "Succeeded" and c.get("metrics"):
            image, digest = case_image(c, doc.get("environment"))
            b.add(
                c,
                {
                    "source": "results",
                    "run": doc["run"],
                    "when": doc.get("started_at"),
                    "hardware": c.get("hardware"),
                    "metrics": c["metrics"],
                    "comparable": None,
                    "image": image,
                    "image_digest": digest,
                },
            )
    return b


BASELINE_RUNS = 5  # history runs pooled into a case's baseline (their run-to-run spread feeds the verdict's test)
_SAMPLE_KEYS = {"tps": "tps", "mfu": "mfu", "step_time": "step_time", "peak_memory": "peak_memory_gib"}
_SAMPLE_KEYS |= {"tokens_per_joule": "tokens_per_joule"}


def _accepted(accepted: list[dict] | None, run: dict, case: dict) -> bool:
    for a in accepted or []:
        if a.get("accept") and a.get("run") == run.get("run") and a.get("case") in (None, "*", case.get("id")):
            return True
    return False


def _history_samples(items: list[tuple[dict, dict]]) -> dict[str, list]:
    out: dict[str, list] = {}
    for _, c in items:
        m = c.get("metrics") or {}
        for metric, key in _SAMPLE_KEYS.items():
            v = m.get(key)
            if isinstance(v, dict) and v.get("means"):
                out.setdefault(metric, []).extend({"mean": x} for x in v["means"])
            elif v is not None:
                out.setdefault(metric, []).append(v)
    return out


def from_history(
    doc: dict,
    exclude_run: str | None = None,
    description: str | None = None,
    accepted: list[dict] | None = None,
    max_runs: int = BASELINE_RUNS,
) -> Baseline:
    """Per case, its baseline from the suite's history (the run being judged excluded): the case's last runs,
    newest first, up to `max_runs`, pooled so that their run-to-run spread is known to the verdict's test.

    Left out: failed and tainted runs, and runs whose regression was suspected or confirmed, unless accepted
    (`accepted`: ack entries {run, case?, accept: true}, `trainbench baseline accept`). The window ends at the
    newest run that improved or was accepted: improvements move the baseline by themselves, slowdowns only when
    accepted."""
    if not H.is_history(doc):
        raise BaselineError(f"not a trainbench history document (schema {doc.get('schema')!r})")
    runs = [r for r in doc.get("runs", []) if r.get("run") != exclude_run]
    newest = runs[-1].get("run") if runs else None
    b = Baseline(
        "history",
        description or f"last runs of suite {doc.get('suite')!r} per case (up to {max_runs}, newest {newest})",
    )
    pooled: dict[tuple, list[tuple[dict, dict]]] = {}
    closed: set[tuple] = set()
    for run in reversed(runs):  # newest first
        for c in run.get("cases", []):
            key = case_key(c)
            if key in closed or c.get("phase") != "Succeeded" or not c.get("metrics") or c.get("tainted"):
                continue
            accept = _accepted(accepted, run, c)
            if c.get("state") in ("suspected", "confirmed") and not accept:
                continue
            pooled.setdefault(key, []).append((run, c))
            if c.get("improved") or accept or len(pooled[key]) >= max_runs:
                closed.add(key)
    for items in pooled.values():
        run, c = items[0]
        b.add(
            c,
            {
                "source": "history",
                "run": run.get("run"),
                "runs": [r.get("run") for r, _ in items],
                "when": run.get("started_at"),
                "hardware": c.get("hardware"),
                "metrics": c["metrics"],
                "samples": _history_samples(items),
                "health": c.get("health"),
                "comparable": None,
                "image": run.get("image"),
                "image_digest": run.get("image_digest"),
            },
        )
    return b


def baseline_images(base: Baseline | None, results: dict, case_ids: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """For the suspected cases `case_ids` of a results document: ({case id: the image its baseline was measured
    with}, where that image differs from the one the case ran and is known: the confirming re-runs alternate with
    runs of it) and ({case id: why not}, for the others: the re-runs are then compared with the stored baseline)."""
    images, why = {}, {}
    for c in results.get("cases") or []:
        if c.get("id") not in case_ids:
            continue
        entry = base.find(c) if base is not None else None
        ref, digest = (entry.get("image"), entry.get("image_digest")) if entry else (None, None)
        cur_ref, cur_digest = case_image(c, results.get("environment"))
        if not ref:
            why[c["id"]] = "the baseline's image is not known"
        elif (digest and cur_digest and digest == cur_digest) or (not (digest and cur_digest) and ref == cur_ref):
            why[c["id"]] = "the baseline ran the same image"
        else:
            images[c["id"]] = ref
    return images, why


def same_window(base: Baseline | None, results: dict) -> Baseline | None:
    """`base` with each suspected case whose baseline's image ran beside its confirming re-runs (repeats marked
    `baseline_image`, plan.with_repeats) judged against those runs instead: the same window of the cluster on
    both sides, so a drift of the cluster is not blamed on the code. A case whose baseline-image runs all failed
    (the image is gone: ImagePullBackOff) keeps its stored baseline, with a note that says so."""
    if base is None:
        return None
    out = Baseline(base.source, base.description, dict(base.entries))
    n = 0
    for c in results.get("cases") or []:
        reps = [r for r in c.get("repeats") or [] if r.get("baseline_image")]
        if not reps:
            continue
        image, stored = reps[0]["baseline_image"], base.find(c)
        ok = [r for r in reps if r.get("phase") == "Succeeded" and r.get("metrics")]
        if not ok:
            if stored is not None:
                reasons = ", ".join(sorted({r.get("reason") or r.get("phase") or "?" for r in reps}))
                note = f"baseline image {image} did not run ({reasons}): re-runs compared with the stored baseline"
                out.add(c, {**stored, "note": note})
            continue
        samples = {m: [r["metrics"][k] for r in ok if r["metrics"].get(k) is not None] for m, k in _SAMPLE_KEYS.items()}
        out.add(
            c,
            {
                "source": "same-window",
                "run": results.get("run"),
                "when": ok[0].get("started_at"),
                "hardware": c.get("hardware"),
                "metrics": combine_metrics([r["metrics"] for r in ok]),
                "samples": {m: v for m, v in samples.items() if v},
                "health": None,
                "comparable": (stored or {}).get("comparable"),
                "image": image,
                "note": f"baseline image {image} run {len(ok)}x alternating with the re-runs",
            },
        )
        n += 1
    if n:
        out.description += f"; {n} suspected case(s) judged against their baseline's image run in the same window"
    return out


_PRIME_ATTN = {
    "flash_attention_2": "fa2",
    "flash_attention_3": "fa3",
    "flash_attention_4": "fa4",
    "fa2": "fa2",
    "fa3": "fa3",
    "fa4": "fa4",
    "sdpa": "sdpa",
    "eager": "eager",
    "flex_attention": "flex",
}


def is_prime_rl(doc: Any) -> bool:
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("config"), dict)
        and isinstance(doc.get("metrics"), dict)
        and "model_name" in doc["config"]
    )


def prime_rl_case(doc: dict) -> dict:
    """A prime-rl benchmark JSON -> a case-like dict (key fields, hardware, metrics block)."""
    cfg, m = doc["config"], doc["metrics"]
    kind = str(cfg.get("type", "rl")).lower()
    lora = cfg.get("lora_rank")
    type_ = "sft-full" if kind.startswith("sft") else ("rl-lora" if lora else "rl-full")
    gpus = int(cfg.get("num_gpus") or 1)
    peak = m.get("peak_memory") or {}

    def summary(name: str) -> dict | None:
        s = m.get(name)
        return {k: s.get(k) for k in ("mean", "std", "min", "max", "n") if k in s} if isinstance(s, dict) else None

    attn = str(cfg.get("attention") or "unknown")
    return {
        "model": normalise_model(cfg.get("model_name")),
        "hf_name": cfg.get("model_name"),
        "hardware": hardware_label(gpus, short_gpu_name(cfg.get("device_name"))),
        "type": type_,
        "lora_rank": lora if type_ == "rl-lora" else None,
        "seq_len": cfg.get("seq_len"),
        "ac": str(cfg.get("ac") or "none").lower(),
        "attn": _PRIME_ATTN.get(attn.lower(), attn.lower()),
        "ep": cfg.get("ep", 1),
        "cp": cfg.get("cp", 1),
        "success": bool(cfg.get("success", True)),
        "when": cfg.get("timestamp"),
        "commit": cfg.get("commit_sha"),
        "metrics": {
            "tps": summary("throughput"),
            "mfu": summary("mfu"),
            "step_time": summary("step_time"),
            "peak_memory_gib": peak.get("gib"),
            "peak_memory_pct": peak.get("pct"),
        },
    }


def from_prime_rl(docs: list[dict], description: str | None = None) -> Baseline:
    """prime-rl benchmark JSON files as a baseline. Step time is left out of the comparison: prime-rl's step
    covers its own batch (micro batches x sequence length), not trainbench's."""
    b = Baseline("prime-rl", description or f"{len(docs)} prime-rl benchmark file(s)")
    for doc in docs:
        c = prime_rl_case(doc)
        if not c["success"]:
            continue
        b.add(
            c,
            {
                "source": "prime-rl",
                "run": c.get("commit") or "prime-rl",
                "when": c.get("when"),
                "hardware": c["hardware"],
                "metrics": c["metrics"],
                "comparable": ["mfu", "tps", "peak_memory"],
            },
        )
    return b


def read_configmap(name: str, namespace: str | None = None) -> dict[str, str]:
    """The data of a ConfigMap, read with the one API client (controller.client: kubeconfig or in-cluster)."""
    try:
        api = Api()
        cm = api.read_configmap(namespace or api.namespace, name)
    except Exception as e:  # noqa: BLE001 - no cluster, no access: say so
        raise BaselineError(f"configmap/{name}: cannot read it ({e.__class__.__name__}: {e})") from None
    if cm is None:
        raise BaselineError(f"configmap/{name}: cannot read it (NotFound)")
    return dict(cm.get("data") or {})


UNAVAILABLE = "unavailable"  # Baseline.source of a baseline that was asked for and could not be read


def unavailable(why: str) -> Baseline:
    """An empty baseline that says why the one asked for is missing (a pinned ConfigMap that is absent or holds
    garbage): no case matches it, and the results' `baseline` says so (the report's Baseline line, the run's
    BaselineUnavailable condition) instead of reading as "no baseline asked for"."""
    return Baseline(UNAVAILABLE, " ".join(why.split())[:500])


def from_configmap(cm: dict | None, name: str, namespace: str | None = None) -> Baseline:
    """A baseline from a ConfigMap object as read from the API (None: not found). BaselineError names what is
    wrong: missing, no results.json/history.json key, not JSON, not a baseline document."""
    where = f"configmap/{name}" + (f" in namespace {namespace}" if namespace else "")
    if cm is None:
        raise BaselineError(f"baseline {where}: not found")
    data = cm.get("data") or {}
    if not isinstance(data, dict):
        raise BaselineError(f"baseline {where}: its data is not a mapping")
    for key in (R.CONFIGMAP_KEY, H.CONFIGMAP_KEY):
        if key in data:
            try:
                doc = json.loads(data[key])
            except (TypeError, ValueError) as e:
                raise BaselineError(f"baseline {where}: {key} is not JSON ({' '.join(str(e).split())[:120]})") from None
            try:
                return from_document(doc, f"configmap/{name}")
            except BaselineError as e:
                raise BaselineError(f"baseline {where}: {key}: {e}") from None
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise BaselineError(
                    f"baseline {where}: {key} is not a usable results document ({e.__class__.__name__}: {e})"
                ) from None
    raise BaselineError(f"baseline {where}: has no {R.CONFIGMAP_KEY} or {H.CONFIGMAP_KEY} key")


def from_document(doc: Any, description: str | None = None, exclude_run: str | None = None) -> Baseline:
    """A baseline from a parsed JSON document (results, history, prime-rl, or a list of prime-rl files)."""
    if R.is_results(doc):
        return from_results(doc, description)
    if H.is_history(doc):
        return from_history(doc, exclude_run=exclude_run, description=description)
    if is_prime_rl(doc):
        return from_prime_rl([doc], description)
    if isinstance(doc, list) and doc and all(is_prime_rl(d) for d in doc):
        return from_prime_rl(doc, description)
    raise BaselineError(
        "not a baseline: expected a trainbench results or history document, or prime-rl benchmark JSON "
        "(config + metrics.{mfu,throughput,step_time} + peak_memory)"
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise BaselineError(f"{path}: not JSON ({e})") from None


def load_baseline(source: str | Path | dict | list, namespace: str | None = None) -> Baseline:
    """A baseline from `configmap/NAME`, a JSON file, a folder (results.json, or prime-rl JSON files), or a
    parsed document."""
    if isinstance(source, (dict, list)):
        return from_document(source)
    text = str(source)
    if text.startswith(("configmap/", "cm/")):
        name = text.split("/", 1)[1]
        data = read_configmap(name, namespace)
        for key in (R.CONFIGMAP_KEY, H.CONFIGMAP_KEY):
            if key in data:
                return from_document(json.loads(data[key]), f"configmap/{name}")
        raise BaselineError(f"configmap/{name}: has no {R.CONFIGMAP_KEY} or {H.CONFIGMAP_KEY} key")
    path = Path(source)
    if path.is_dir():
        if (path / "results.json").exists():
            return from_document(_read_json(path / "results.json"), str(path))
        files = sorted(path.rglob("*.json"))
        docs = [d for d in (_read_json(f) for f in files) if is_prime_rl(d)]
        if not docs:
            raise BaselineError(f"{path}: no results.json and no prime-rl benchmark JSON files")
        b = from_prime_rl(docs)
        skipped = len(docs) - len(b)
        b.description = f"{len(b)} prime-rl benchmark file(s) in {path}" + (
            f" ({skipped} failed run(s) left out)" if skipped else ""
        )
        return b
    if not path.exists():
        raise BaselineError(f"{path}: no such file or folder")
    return from_document(_read_json(path), str(path))
