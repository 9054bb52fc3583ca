"""Benchmark type `verify`: sample C++ programs from the model, compile and run them, score pass@k (`--type verify`).

halo-forge's demo pipeline, measured properly:

- prompts: the built-in set `prompts/cpp16.jsonl` (16 C++ tasks in five categories: basic I/O, arithmetic, arrays,
  algorithms, strings; each with its expected output and a reference solution that the tests verify) or
  `--prompts FILE.jsonl` ({"id", "prompt", "expected_output", optional "category"});
- `--samples` k completions per prompt, sampled as one batch of k rows of the same prompt with independent sampling
  (generate.decode, `--new-tokens`, `--temperature`); text <-> tokens with the tokenizer found next to `--weights`,
  else a byte-level one (random weights: the compile rate is then near zero, which is the expected outcome);
- code extraction (`extract_code`): the first fenced block that holds `main(` (```cpp, ```c++ or bare fences),
  else the text from the first `#include`;
- `Verifier`: g++ -std=c++17 -O1 under `--compile-timeout`; the binary runs in its own process group with
  resource limits set in the child (RLIMIT_CPU, RLIMIT_AS = `--run-memory-mib`, RLIMIT_FSIZE on its output file,
  no core files) and a wall-clock `--run-timeout`; outcomes: no_code, compile_error, compile_timeout, timeout,
  memory (allocation failed under the cap), output_limit, crash (signal or non-zero exit), wrong_output, passed.
  Output comparison ignores trailing whitespace on each line and trailing empty lines;
- scores per prompt and overall: compile rate, pass rate and the unbiased pass@k = 1 - C(n-c, k) / C(n, k) for
  k in 1, 2, 4, ... up to n (Chen et al. 2021; n samples, c passed; overall = mean over prompts);
- `--raft-cycles N`: after the baseline evaluation, each cycle keeps the passing samples, fine-tunes the model on
  them (the SFT loss of bench mode on prompt + completion, completion tokens only, AdamW at `--lr`, `--steps`
  steps) and evaluates again; every cycle is reported (a cycle without passing samples does not train);
- files in `--out-dir` (default: next to `--output`, `<output>.verify/`): `samples.jsonl` (one line per sample:
  cycle, prompt, completion, extracted code, outcome, detail) and `hardware.csv` (time, device power, memory and
  utilisation sampled every 0.5 s; on a CPU the process's RSS and CPU use).

Headline metrics (baselines, dashboards): tps = sampling tokens/s of the last evaluation; the pass@k and compile
rate of the last cycle are in `verify`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from trainbench.trainer import contract as c
from trainbench.trainer import losses
from trainbench.trainer.config import BadConfig, JobConfig
from trainbench.trainer.context import RunContext
from trainbench.trainer.generate import build_eval_model, decode, eos_ids
from trainbench.trainer.result import base_result, environment, summary

OUTCOMES = (
    "passed",
    "wrong_output",
    "crash",
    "timeout",
    "memory",
    "output_limit",
    "compile_error",
    "compile_timeout",
    "no_code",
)
COMPILED = ("passed", "wrong_output", "crash", "timeout", "memory", "output_limit")
OUTPUT_LIMIT_BYTES = 1 << 20


# --- prompts and code extraction ---------------------------------------------------------------------------------


def load_prompts(path: str | None = None) -> list[dict]:
    if path:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise BadConfig(f"--prompts {path!r}: {e.strerror}") from None
    else:
        text = resources.files("trainbench.trainer").joinpath("prompts", "cpp16.jsonl").read_text()
    prompts = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        p = json.loads(line)
        if not {"id", "prompt", "expected_output"} <= set(p):
            raise BadConfig(f"prompt set line {i + 1}: needs id, prompt and expected_output")
        prompts.append(p)
    if not prompts:
        raise BadConfig("the prompt set is empty")
    return prompts


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9+#_-]*)[^\n]*\n(.*?)```", re.DOTALL)


def extract_code(text: str) -> str | None:
    """The program in a completion: the first fenced block with `main(`, else the first fenced block in a C/C++
    language, else everything from the first `#include`; None when there is none."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    for _lang, body in blocks:
        if "main(" in body:
            return body
    for lang, body in blocks:
        if lang in ("cpp", "c++", "cxx", "cc", "c"):
            return body
    at = text.find("#include")
    if at >= 0:
        return text[at:].split("```")[0]
    return None


def normalise_output(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


# --- the verifier ----------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    status: str  # one of OUTCOMES
    detail: str = ""
    compile_s: float | None = None
    run_s: float | None = None

    @property
    def compiled(self) -> bool:
        return self.status in COMPILED

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class Verifier:
    """Compile with g++ and run under limits; `check(code, expected)` -> Outcome. Thread-safe (a temp dir per call)."""

    def __init__(
        self,
        compile_timeout: float = 30.0,
        run_timeout: float = 5.0,
        memory_mib: int = 256,
        cxx: str | None = None,
        flags: tuple[str, ...] = ("-std=c++17", "-O1", "-pipe"),
    ):
        self.cxx = cxx or os.environ.get("CXX") or "g++"
        if shutil.which(self.cxx) is None:
            raise BadConfig(f"--type verify needs a C++ compiler: {self.cxx!r} is not on PATH (Debian: g++)")
        self.compile_timeout = compile_timeout
        self.run_timeout = run_timeout
        self.memory_bytes = int(memory_mib) << 20
        self.flags = flags

    def _limits(self) -> None:  # runs in the child between fork and exec
        import resource

        cpu = max(1, math.ceil(self.run_timeout))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (self.memory_bytes, self.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_LIMIT_BYTES, OUTPUT_LIMIT_BYTES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def check(self, code: str | None, expected: str) -> Outcome:
        if not code or "main" not in code:
            return Outcome("no_code", "no program found in the completion")
        with tempfile.TemporaryDirectory(prefix="trainbench-verify-") as tmp:
            src, exe = os.path.join(tmp, "prog.cpp"), os.path.join(tmp, "prog")
            Path(src).write_text(code)
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [self.cxx, *self.flags, "-o", exe, src],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            try:
                _, err = proc.communicate(timeout=self.compile_timeout)
            except subprocess.TimeoutExpired:
                self._kill(proc)
                return Outcome("compile_timeout", f"g++ ran past {self.compile_timeout:g} s")
            compile_s = time.perf_counter() - t0
            if proc.returncode != 0:
                first = next((ln for ln in err.decode(errors="replace").splitlines() if "error" in ln), "")
                return Outcome("compile_error", first[:300], compile_s)
            out_path = os.path.join(tmp, "stdout")
            t1 = time.perf_counter()
            with open(out_path, "wb") as out:
                run = subprocess.Popen(
                    [exe],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.PIPE,
                    cwd=tmp,
                    start_new_session=True,
                    preexec_fn=self._limits,  # noqa: PLW1509 - setrlimit in the child is the point
                )
                try:
                    _, err = run.communicate(timeout=self.run_timeout)
                    timed_out = False
                except subprocess.TimeoutExpired:
                    self._kill(run)
                    err, timed_out = b"", True
            run_s = time.perf_counter() - t1
            stderr = err.decode(errors="replace")
            rc = run.returncode
            if timed_out or rc in (-signal.SIGXCPU, -signal.SIGKILL):
                return Outcome("timeout", f"ran past {self.run_timeout:g} s (wall or CPU)", compile_s, run_s)
            if rc == -signal.SIGXFSZ:
                return Outcome("output_limit", f"wrote more than {OUTPUT_LIMIT_BYTES} bytes", compile_s, run_s)
            if "bad_alloc" in stderr or "cannot allocate memory" in stderr.lower():
                return Outcome(
                    "memory", f"allocation failed under the {self.memory_bytes >> 20} MiB cap", compile_s, run_s
                )
            if rc != 0:
                what = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
                return Outcome("crash", what, compile_s, run_s)
            got = Path(out_path).read_bytes().decode(errors="replace")
            if normalise_output(got) != normalise_output(expected):
                return Outcome("wrong_output", f"got {got[:80]!r}, expected {expected[:80]!r}", compile_s, run_s)
            return Outcome("passed", "", compile_s, run_s)


# --- scores --------------------------------------------------------------------------------------------------------


def pass_at_k(n: int, c_: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), exact in integers; needs k <= n."""
    if not 0 <= c_ <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c_}, k={k})")
    if n - c_ < k:
        return 1.0
    return 1.0 - math.comb(n - c_, k) / math.comb(n, k)


def ks_for(n: int) -> list[int]:
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def score(per_prompt: dict[str, list[Outcome]]) -> dict:
    """Compile rate, pass rate and pass@k per prompt and overall (overall pass@k: mean over prompts)."""
    rows, all_outcomes = [], []
    n_min = min(len(v) for v in per_prompt.values())
    ks = ks_for(n_min)
    for pid, outs in per_prompt.items():
        n, passed = len(outs), sum(o.passed for o in outs)
        rows.append(
            {
                "id": pid,
                "n": n,
                "compiled": sum(o.compiled for o in outs),
                "passed": passed,
                "pass_at_k": {str(k): pass_at_k(n, passed, k) for k in ks},
                "outcomes": {s: sum(o.status == s for o in outs) for s in OUTCOMES if any(o.status == s for o in outs)},
            }
        )
        all_outcomes += outs
    total = len(all_outcomes)
    return {
        "samples": total,
        "compile_rate": sum(o.compiled for o in all_outcomes) / total,
        "pass_rate": sum(o.passed for o in all_outcomes) / total,
        "pass_at_k": {str(k): sum(r["pass_at_k"][str(k)] for r in rows) / len(rows) for k in ks},
        "outcomes": {s: sum(o.status == s for o in all_outcomes) for s in OUTCOMES},
        "prompts": rows,
    }


def evaluate(prompts: list[dict], completions: dict[str, list[str]], verifier: Verifier, workers: int | None = None):
    """Verify every completion -> (score dict, sample records). `completions[id]` holds the k texts of a prompt."""
    jobs = [(p, i, text) for p in prompts for i, text in enumerate(completions[p["id"]])]
    codes = [extract_code(text) for _p, _i, text in jobs]
    with ThreadPoolExecutor(max_workers=workers or max(1, os.cpu_count() or 1)) as pool:
        outs = list(
            pool.map(
                lambda a: verifier.check(a[0], a[1]),
                [(cd, p["expected_output"]) for (p, _i, _t), cd in zip(jobs, codes, strict=True)],
            )
        )
    per_prompt: dict[str, list[Outcome]] = {p["id"]: [] for p in prompts}
    records = []
    for (p, i, text), code, out in zip(jobs, codes, outs, strict=True):
        per_prompt[p["id"]].append(out)
        records.append({"prompt_id": p["id"], "sample": i, "completion": text, "code": code, **asdict(out)})
    return score(per_prompt), records


# --- tokenizers --------------------------------------------------------------------------------------------------


class ByteTokenizer:
    """Text <-> ids for random-weight models: byte b is id b + 3 (ids 0..2 stay special); other ids decode to ''."""

    offset = 3

    def __init__(self, vocab: int):
        if vocab < 256 + self.offset:
            raise BadConfig(f"--type verify needs a vocabulary of at least {256 + self.offset} ids (got {vocab})")

    def encode(self, text: str) -> list[int]:
        return [b + self.offset for b in text.encode()]

    def decode(self, ids) -> str:
        return bytes(i - self.offset for i in ids if self.offset <= i < 256 + self.offset).decode(errors="replace")


class HFTokenizer:
    def __init__(self, path: str):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(path)

    def encode(self, text: str) -> list[int]:
        if getattr(self.tok, "chat_template", None):
            ids = self.tok.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
            )
            if hasattr(ids, "keys") and "input_ids" in ids:  # a BatchEncoding (transformers >= 5)
                ids = ids["input_ids"]
            return [int(i) for i in ids]
        return list(self.tok.encode(text))

    def decode(self, ids) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)


def make_tokenizer(cfg: JobConfig, vocab: int):
    if cfg.weights:
        d = cfg.weights if os.path.isdir(cfg.weights) else os.path.dirname(cfg.weights)
        if os.path.exists(os.path.join(d, "tokenizer.json")) or os.path.exists(
            os.path.join(d, "tokenizer_config.json")
        ):
            return HFTokenizer(d)
    return ByteTokenizer(vocab)


# --- hardware samples -------------------------------------------------------------------------------------------


class HardwareSampler:
    """A thread writing `hardware.csv`: time, power, memory and utilisation every `interval` seconds."""

    FIELDS = ("time_s", "power_w", "memory_used_bytes", "utilisation_pct", "process_rss_bytes", "process_cpu_pct")

    def __init__(self, path: Path | None, device, interval: float = 0.5):
        self.path, self.device, self.interval = path, device, interval
        self.rows: list[dict] = []
        self._stop = threading.Event()
        self._nv = self._h = None
        if device.type == "cuda":
            try:
                import pynvml

                pynvml.nvmlInit()
                self._nv, self._h = pynvml, pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            except Exception:
                self._nv = None
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self, t0: float, cpu0: float, w0: float) -> dict:
        row = {"time_s": round(time.perf_counter() - t0, 3)}
        if self._nv is not None:
            try:
                row["power_w"] = self._nv.nvmlDeviceGetPowerUsage(self._h) / 1000.0
                row["memory_used_bytes"] = self._nv.nvmlDeviceGetMemoryInfo(self._h).used
                row["utilisation_pct"] = self._nv.nvmlDeviceGetUtilizationRates(self._h).gpu
            except Exception:
                pass
        elif self.device.type == "cuda":
            import torch

            row["memory_used_bytes"] = torch.cuda.memory_reserved(self.device)
        try:
            with open("/proc/self/statm") as f:
                row["process_rss_bytes"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
        cpu, wall = time.process_time(), time.perf_counter()
        if wall > w0:
            row["process_cpu_pct"] = round(100.0 * (cpu - cpu0) / (wall - w0), 1)
        return row

    def _loop(self) -> None:
        t0 = time.perf_counter()
        cpu0, w0 = time.process_time(), t0
        while True:
            self.rows.append(self._sample(t0, cpu0, w0))
            cpu0, w0 = time.process_time(), time.perf_counter()
            if self._stop.wait(self.interval):
                break

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        if self.path is not None:
            with open(self.path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.FIELDS)
                w.writeheader()
                w.writerows(self.rows)

    def power_summary(self):
        return summary([r["power_w"] for r in self.rows if r.get("power_w") is not None])


# --- the model side ---------------------------------------------------------------------------------------------


def sample_completions(model, tok, prompts, k, cfg, eos, device, generator, sync) -> tuple[dict, dict, dict]:
    """k completions per prompt (one batch of k rows per prompt) -> ({id: [text]}, {id: [token ids]}, stats)."""
    import torch

    texts, ids, tokens, seconds = {}, {}, 0, 0.0
    model.eval()
    with torch.inference_mode():
        for p in prompts:
            prompt_ids = tok.encode(p["prompt"])
            prompt = torch.tensor([prompt_ids], device=device).expand(k, -1).contiguous()
            out = decode(
                model, prompt, cfg.new_tokens, eos=eos, temperature=cfg.temperature, generator=generator, sync=sync
            )
            seconds += out.ttft_s + out.decode_s
            tokens += out.counted
            rows = [out.tokens[i, : int(out.lengths[i])].tolist() for i in range(k)]
            texts[p["id"]] = [tok.decode(r) for r in rows]
            ids[p["id"]] = [(prompt_ids, r) for r in rows]
    return texts, ids, {"tokens": tokens, "seconds": seconds, "tps": tokens / seconds if seconds else None}


def raft_finetune(model, examples: list[tuple[list[int], list[int]]], cfg: JobConfig, device) -> list[float]:
    """Fine-tune on (prompt ids, completion ids) pairs with bench mode's SFT loss (completion tokens only):
    `cfg.steps` AdamW steps over the padded batch of all examples. Returns the losses."""
    import torch

    model.train()
    params = [p for p in model.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    T = max(len(a) + len(b) for a, b in examples)
    B = len(examples)
    input_ids = torch.zeros(B, T, dtype=torch.long)
    targets = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.bool)
    for i, (a, b) in enumerate(examples):
        seq = torch.tensor(a + b)
        input_ids[i, : len(seq)] = seq
        targets[i, : len(seq) - 1] = seq[1:]
        mask[i, len(a) - 1 : len(seq) - 1] = True  # predict each completion token
    input_ids, targets, mask = input_ids.to(device), targets.to(device), mask.to(device)
    positions = torch.arange(T, device=device).expand(B, T)
    normalizer = float(mask.sum()) or 1.0
    out = []
    for _ in range(cfg.steps):
        h = model.model(input_ids=input_ids, position_ids=positions, use_cache=False).last_hidden_state
        loss = losses.sft_loss(
            h.reshape(-1, h.shape[-1]),
            model.get_output_embeddings().weight,
            targets.reshape(-1),
            mask.reshape(-1),
            cfg.loss_chunk,
            normalizer,
        )
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        out.append(float(loss.detach()))
    model.eval()
    for p in params:
        p.requires_grad_(False)
    return out


class _Gauges:
    def __init__(self, exporter):
        from prometheus_client import Gauge

        r = exporter.registry
        self.labels = exporter.labels
        names = [*c.LABELS, "cycle"]
        self.compile_rate = Gauge(c.M_VER_COMPILE_RATE, "Share of samples that compiled", names, registry=r)
        self.pass_rate = Gauge(c.M_VER_PASS_RATE, "Share of samples whose output was right", names, registry=r)
        self.pass_at_k = Gauge(c.M_VER_PASS_AT_K, "Unbiased pass@k over the prompts", [*names, "k"], registry=r)

    def set(self, cycle: int, s: dict) -> None:
        lab = dict(self.labels, cycle=str(cycle))
        self.compile_rate.labels(**lab).set(s["compile_rate"])
        self.pass_rate.labels(**lab).set(s["pass_rate"])
        for k, v in s["pass_at_k"].items():
            self.pass_at_k.labels(**lab, k=k).set(v)


def out_dir_for(cfg: JobConfig) -> Path | None:
    if cfg.out_dir:
        return Path(cfg.out_dir)
    if cfg.output:
        return Path(str(cfg.output).removesuffix(".json") + ".verify")
    return None


def run_verify(ctx: RunContext) -> dict:
    import torch

    cfg, spec, device, world, peak, peak_source, exporter = (
        ctx.cfg, ctx.spec, ctx.device, ctx.world, ctx.peak, ctx.peak_source, ctx.exporter
    )  # fmt: skip
    if world.size > 1:
        raise BadConfig("--type verify runs on one process (one GPU); use a pool of 1 GPU")
    prompts = load_prompts(cfg.prompts)
    verifier = Verifier(cfg.compile_timeout, cfg.run_timeout, cfg.run_memory_mib)
    torch.manual_seed(cfg.seed)
    model, choice = build_eval_model(cfg, spec, device)
    tok = make_tokenizer(cfg, spec.vocab)
    eos = eos_ids(spec)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    is_cuda = device.type == "cuda"

    def sync():
        if is_cuda:
            torch.cuda.synchronize(device)

    out = out_dir_for(cfg)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    gauges = _Gauges(exporter) if exporter is not None else None
    if exporter is not None:
        exporter.set_info({"impl": "hf", "attn": choice.label, "samples": cfg.samples, "prompts": len(prompts)})
        exporter.steps_total.set(cfg.raft_cycles + 1)
        exporter.set_state("measuring")
    cycles, sample_lines, records, flat_ids = [], [], [], []
    with HardwareSampler(out / "hardware.csv" if out else None, device) as hw:
        for cycle in range(cfg.raft_cycles + 1):
            entry = {"cycle": cycle, "kept": None, "losses": None}
            if cycle > 0:
                kept = [ex for r, ex in zip(records, flat_ids, strict=True) if r["status"] == "passed"]
                entry["kept"] = len(kept)
                if kept:
                    entry["losses"] = raft_finetune(model, kept, cfg, device)
            t0 = time.perf_counter()
            texts, ids, gstats = sample_completions(model, tok, prompts, cfg.samples, cfg, eos, device, gen, sync)
            t1 = time.perf_counter()
            s, records = evaluate(prompts, texts, verifier)
            flat_ids = [x for p in prompts for x in ids[p["id"]]]
            entry.update(score=s, generation=gstats, generate_s=t1 - t0, verify_s=time.perf_counter() - t1)
            cycles.append(entry)
            sample_lines += [{"cycle": cycle, **r} for r in records]
            if exporter is not None:
                gauges.set(cycle, s)
                exporter.step.set(cycle + 1)
                if gstats["tps"]:
                    exporter.tps.set(gstats["tps"])
            print(
                f"verify cycle {cycle}: compile {100 * s['compile_rate']:.1f}%, pass {100 * s['pass_rate']:.1f}%, "
                f"pass@1 {100 * s['pass_at_k']['1']:.1f}%" + (f", kept {entry['kept']}" if cycle else ""),
                file=sys.stderr,
                flush=True,
            )
    if out is not None:
        with open(out / "samples.jsonl", "w") as f:
            for line in sample_lines:
                f.write(json.dumps(line) + "\n")
    last = cycles[-1]
    result = base_result(cfg, spec, world.size)
    result.update(
        impl="hf",
        attn_backend=choice.label,
        ac="none",
        peak_flops=peak,
        peak_flops_source=peak_source,
        flops_per_token=None,
        metrics={"tps": _one(last["generation"]["tps"]), "mfu": None, "step_time": None},
        peak_memory_gib=torch.cuda.max_memory_reserved(device) / 2**30 if is_cuda else None,
        power_w=hw.power_summary(),
        energy_j=None,
        tokens_per_joule=None,
        verify={
            "prompts": len(prompts),
            "prompt_set": cfg.prompts or "builtin:cpp16",
            "samples_per_prompt": cfg.samples,
            "new_tokens": cfg.new_tokens,
            "temperature": cfg.temperature,
            "tokenizer": type(tok).__name__,
            "compiler": verifier.cxx,
            "compile_rate": last["score"]["compile_rate"],
            "pass_rate": last["score"]["pass_rate"],
            "pass_at_k": last["score"]["pass_at_k"],
            "cycles": cycles,
            "files": {"samples": str(out / "samples.jsonl"), "hardware": str(out / "hardware.csv")} if out else None,
            "hardware_samples": len(hw.rows),
        },
        environment=environment(device),
    )
    return result


def _one(v):
    return summary([v]) if v is not None else None


def table(result: dict) -> str:
    v = result["verify"]
    lines = [
        f"verify {result['config']['model']}: {v['prompts']} prompts x {v['samples_per_prompt']} samples "
        f"({v['tokenizer']}, {v['compiler']})",
        f"{'cycle':>5} {'kept':>5} {'compile %':>10} {'pass %':>7}  pass@k",
    ]
    for cy in v["cycles"]:
        s = cy["score"]
        pk = ", ".join(f"@{k} {100 * x:.1f}%" for k, x in s["pass_at_k"].items())
        kept = "-" if cy["kept"] is None else str(cy["kept"])
        lines.append(f"{cy['cycle']:>5} {kept:>5} {100 * s['compile_rate']:>10.1f} {100 * s['pass_rate']:>7.1f}  {pk}")
    if v.get("files"):
        lines.append(f"samples: {v['files']['samples']}; hardware samples: {v['files']['hardware']}")
    return "\n".join(lines)
