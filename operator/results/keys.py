"""What identifies a case across runs (its key) and how a case is named for people (its labels).

`case_key` is the one matching key: baselines, history series, trend plots and the report's cross-pool table
group cases with it. The labels are the one place for the words a report, a plot, a webhook message and the
local progress lines use for a case."""

from __future__ import annotations

import re

from trainbench.trainer.specs import UnknownModelError, resolve_model

KEY_FIELDS = ("model", "hardware", "type", "lora_rank", "seq_len", "ac", "attn", "ep", "cp")

# the metrics a run is judged on (results.verdict), in report order
METRICS = ("mfu", "tps", "step_time", "peak_memory", "tokens_per_joule")
METRIC_LABELS = {
    "mfu": "MFU",
    "tps": "TPS",
    "step_time": "Step Time",
    "peak_memory": "Peak Mem",
    "tokens_per_joule": "Tok/J",
}

TYPE_LABELS = {
    "sft-full": "SFT Full",
    "rl-full": "RL Full",
    "rl-lora": "RL LoRA",
    "generate": "Generate",
    "verify": "Verify",
}
AC_LABELS = {"recompute": "Recompute", "offload": "Offload", "none": "None", "selective": "Selective", "auto": "Auto"}
ATTN_LABELS = {
    "fa2": "FA2",
    "fa3": "FA3",
    "fa4": "FA4",
    "sdpa": "SDPA",
    "sdpa-cudnn": "SDPA cuDNN",
    "sdpa-flash": "SDPA flash",
    "sdpa-efficient": "SDPA mem-eff",
    "sdpa-math": "SDPA math",
    "flex": "Flex",
    "eager": "Eager",
    "auto": "Auto",
}

_STRIP_WORDS = ("NVIDIA", "AMD", "RTX", "80GB", "40GB", "141GB", "192GB")


# --- hardware and model names --------------------------------------------------------------------------


def short_gpu_name(name: str | None) -> str | None:
    """'NVIDIA H100 80GB HBM3' -> 'H100 HBM3' (prime-rl's convention, so hardware columns compare)."""
    if not name:
        return None
    words = [w for w in re.split(r"\s+", name.strip()) if w and w not in _STRIP_WORDS]
    return " ".join(words) or name


def hardware_label(gpus: int, name: str | None) -> str:
    return f"{gpus}x{name or 'unknown'}"


def normalise_model(name: str | None) -> str:
    if not name:
        return "unknown"
    candidates = [name]
    short = name.split("/")[-1]
    for suffix in ("-Instruct-2507", "-Thinking-2507", "-Instruct", "-Base", "-Thinking"):
        if short.lower().endswith(suffix.lower()):
            candidates.append(short[: -len(suffix)])
    for cand in candidates:
        try:
            return resolve_model(cand).name
        except (UnknownModelError, OSError, ValueError):
            continue
    return short.lower()


def normalise_hardware(hw: str | None) -> str:
    """'8xNVIDIA H100 80GB HBM3' and '8xH100 HBM3' compare equal; case and spaces do not matter."""
    if not hw:
        return "unknown"
    m = re.match(r"^\s*(\d+)\s*x\s*(.*)$", hw)
    count, name = (m.group(1), m.group(2)) if m else ("1", hw)
    return f"{count}x{(short_gpu_name(name) or name).lower().replace(' ', '')}"


# --- the key ---------------------------------------------------------------------------------------------


def case_key(case: dict, attn: str | None = None, *, hardware: bool = True) -> tuple:
    """The matching key of a case (results document case, history case or imported baseline), fields as in
    KEY_FIELDS. `attn`: match as if the case had asked for this backend (the one it ran). `hardware=False`:
    the same case on any hardware (the report's cross-pool table)."""
    lora = case.get("lora_rank") if case.get("type") == "rl-lora" or case.get("lora_rank") else None
    return (
        normalise_model(case.get("model")),
        normalise_hardware(case.get("hardware")) if hardware else None,
        case.get("type"),
        int(lora) if lora else None,
        int(case.get("seq_len") or 0),
        str(case.get("ac") or "").lower(),
        str(attn or case.get("attn") or "").lower(),
        int(case.get("ep") or 1),
        int(case.get("cp") or 1),
    )


# --- labels ----------------------------------------------------------------------------------------------


def type_label(case: dict) -> str:
    label = TYPE_LABELS.get(case.get("type"), str(case.get("type")))
    if case.get("type") == "rl-lora" and case.get("lora_rank"):
        label += f"(r={case['lora_rank']})"
    return label


def ac_label(ac: str | None) -> str:
    return AC_LABELS.get(str(ac), str(ac))


def attn_label(case: dict) -> str:
    asked, ran = case.get("attn"), case.get("attn_backend")
    if asked == "auto" and ran:
        return f"{ATTN_LABELS.get(ran, ran)} (auto)"
    if ran and ran != asked:
        return f"{ATTN_LABELS.get(asked, asked)}→{ATTN_LABELS.get(ran, ran)}"
    return ATTN_LABELS.get(asked, str(asked))


def model_title(case: dict) -> str:
    """The model as a report heading: the Hugging Face name's last part (a tiny test model: its own name)."""
    hf = case.get("hf_name") or ""
    return hf.split("/")[-1] if hf and not hf.startswith("trainbench/") else case.get("model", "?")


def case_label(case: dict, *, detail: bool = True) -> str:
    """A case for people, model aside: `SFT Full 8192 Recompute FA3 1xH100 HBM3` (report rows, plot legends);
    `detail=False`: `SFT Full 8192 1xH100 HBM3` (the compare table)."""
    if not detail:
        return f"{type_label(case)} {case.get('seq_len')} {case.get('hardware')}"
    return (
        f"{type_label(case)} {case.get('seq_len')} {ac_label(case.get('ac'))} {attn_label(case)} {case.get('hardware')}"
    )


def plain_label(case: dict) -> str:
    """A case in plain words with its model, for text without tables (webhook messages, progress lines):
    `qwen3-0.6b sft-full 8192 recompute fa3 on 1xH100 HBM3` (the pool when the hardware is not known yet)."""
    parts = [case.get("model", "?"), case.get("type", "?"), str(case.get("seq_len", "?"))]
    for key in ("ac", "attn"):
        if case.get(key):
            parts.append(str(case[key]))
    return " ".join(parts) + f" on {case.get('hardware') or case.get('pool', '?')}"
