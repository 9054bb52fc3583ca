"""The local executor: run a BenchmarkRun on this machine, no cluster (`trainbench run FILE.yaml --local`).

Plans the manifest with the operator's planner, runs each case as a local process one after the other
(`torchrun --nproc-per-node N -m trainbench.trainer ...` over the local GPUs, `python -m trainbench.trainer
... --device cpu` without GPUs), follows each with a progress bar fed by the trainer's own /metrics
(`--metrics-port 0` and the `TRAINBENCH_METRICS_PORT` line), collects with the operator's code
(`collect.parse_result`, `collect.classify_exit`), and writes into the output folder:

    results.json     the results document (trainbench.dev/results/v1)
    report.md        the markdown report
    plots/           trend plots (once the folder holds two runs or more)
    history.json     the suite's history (the baseline of the next run into the same folder)
    cases/<id>.json  each trainer's own result JSON; logs/<id>.log its output

Ctrl-C stops the running case cleanly (SIGTERM to its process group, then SIGKILL), keeps every finished
result and still writes the report.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from trainbench.operator import collect
from trainbench.operator.api import BenchmarkRunSpec
from trainbench.operator.clock import now as _now
from trainbench.operator.plan import Case, plan, with_repeats
from trainbench.operator.report.finalize import HISTORY_RUNS, finalize
from trainbench.operator.results import baseline as B
from trainbench.operator.results import document as R
from trainbench.operator.results import history as H
from trainbench.operator.results import verdict as V
from trainbench.operator.results.keys import plain_label
from trainbench.operator.results.repeats import group_outcomes
from trainbench.trainer import contract as C

KILL_GRACE_S = 10.0


@dataclass
class LocalOptions:
    out: Path
    device: str = "auto"  # auto | cpu | cuda
    baseline: str | None = None  # a baseline source (baseline.load_baseline); default: this folder's history
    progress: bool = True
    scrape_interval: float = 0.5
    history_runs: int = HISTORY_RUNS
    plots: bool = True  # trend plots into out/plots (once the folder holds two runs or more)
    trainer_cmd: list[str] = field(default_factory=lambda: [sys.executable, "-m", "trainbench.trainer"])
    extra_args: list[str] = field(default_factory=list)  # appended to every trainer command line
    # real weights: model (name or Hugging Face id) -> a local safetensors file or directory (--weights MODEL=DIR;
    # spec.weights entries without a persistentVolumeClaim are added by run_local)
    weights: dict[str, str] = field(default_factory=dict)
    log: Any = None  # a file for status lines (default: stderr)
    repeats: int | None = None  # processes per case (None: the spec's repeats)
    confirm: int | None = None  # re-runs of a suspected regression (None: the spec's confirm)


@dataclass
class LocalRun:
    results: dict
    report: str
    out: Path
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        s = self.results["summary"]
        return 1 if (s["failed"] or s["metrics_unavailable"]) else 0


def local_gpus() -> int:
    """GPUs on this machine (nvidia-smi or rocm-smi), without importing torch."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return len([d for d in env.split(",") if d.strip() and d.strip() != "-1"])
    for tool, args in (("nvidia-smi", ["-L"]), ("rocm-smi", ["--showid"])):
        if shutil.which(tool):
            try:
                out = subprocess.run([tool, *args], capture_output=True, text=True, timeout=20).stdout
            except (OSError, subprocess.SubprocessError):
                continue
            n = sum(1 for line in out.splitlines() if line.startswith("GPU") or "GPU[" in line)
            if n:
                return n
    return 0


def git_commit(path: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=8", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class _Output:
    """Reads a child's merged stdout/stderr into a log file and remembers the metrics port."""

    def __init__(self, proc: subprocess.Popen, log_path: Path):
        self.proc = proc
        self.lines: list[str] = []
        self.port: int | None = None
        self._log = open(log_path, "w", buffering=1)  # noqa: SIM115 - closed in join()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in self.proc.stdout:  # type: ignore[union-attr]
            line = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
            self._log.write(line)
            self.lines.append(line)
            if line.startswith(C.METRICS_PORT_LINE_PREFIX) and self.port is None:
                with contextlib.suppress(ValueError):
                    self.port = int(line[len(C.METRICS_PORT_LINE_PREFIX) :].strip())

    def join(self, timeout: float = 10.0) -> str:
        self._thread.join(timeout)
        self._log.close()
        return "".join(self.lines)


class _Bar:
    """A tqdm bar per case; silent when progress is off."""

    def __init__(self, label: str, total: int, enabled: bool):
        self.bar = None
        self.label = label
        self.last: dict = {}
        # a terminal gets a live bar; a log (CI, a pipe) gets one line when the case starts and one when it ends
        self.plain = enabled and not sys.stderr.isatty()
        if self.plain:
            print(f"{label}: started", file=sys.stderr, flush=True)
        elif enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=label, unit="step", leave=True, dynamic_ncols=True, file=sys.stderr)

    def update(self, progress: dict) -> None:
        self.last = progress
        if self.bar is None:
            return
        if progress.get("steps_total"):
            self.bar.total = progress["steps_total"]
        step = progress.get("step") or 0
        if step > self.bar.n:
            self.bar.update(step - self.bar.n)
        post = {"state": progress.get("state") or "?"}
        if progress.get("tps"):
            post["tps"] = f"{progress['tps']:.4g}"
        if progress.get("mfu"):
            post["mfu"] = f"{progress['mfu']:.3g}%"
        self.bar.set_postfix(post, refresh=False)
        self.bar.refresh()

    def close(self, phase: str, result: dict | None = None) -> None:
        if self.plain:
            metrics = (result or {}).get("metrics") or {}
            tps, mfu = (metrics.get("tps") or {}).get("mean"), (metrics.get("mfu") or {}).get("mean")
            extra = f", {(metrics.get('tps') or {}).get('n') or 0} measured steps"
            if tps:
                extra += f", mean {tps:.4g} tok/s"
            if mfu:
                extra += f", {mfu:.3g}% MFU"
            print(f"{self.label}: {phase}{extra}", file=sys.stderr, flush=True)
        if self.bar is None:
            return
        if phase == "Succeeded" and self.bar.total and self.bar.n < self.bar.total:
            self.bar.update(self.bar.total - self.bar.n)
        self.bar.set_postfix_str(phase)
        self.bar.close()


def _skip(case: Case, reason: str | None, message: str) -> dict:
    return {"phase": "Skipped", "reason": reason, "message": message}


def case_command(case: Case, run: str, device: str, opts: LocalOptions, output: Path) -> list[str]:
    args = case.trainer_args(run=run, metrics_port=0) + ["--device", device, "--output", str(output)]
    args += opts.extra_args
    weights = next((opts.weights[k] for k in (case.model, case.hf_name) if k in opts.weights), None)
    if weights:
        args += ["--weights", str(Path(weights).expanduser().resolve())]
    if device == "cuda" and case.gpus_per_node > 1:
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        return [*torchrun, "--nproc-per-node", str(case.gpus_per_node), "-m", "trainbench.trainer", *args]
    return [*opts.trainer_cmd, *args]


def run_case(case: Case, run: str, device: str, gpus: int, opts: LocalOptions, label: str) -> dict:
    """Run one case (or a repeat of one: plan.with_repeats) as a local process; the outcome dict of
    results.build_results. KeyboardInterrupt is re-raised after the process is stopped, with the outcome attached
    as `exc.outcome`."""
    if case.nodes > 1:
        return _skip(case, None, f"needs {case.nodes} nodes; the local executor runs on this machine only")
    if device == "cuda" and case.gpus_per_node > gpus:
        return _skip(case, None, f"needs {case.gpus_per_node} GPUs; this machine has {gpus}")
    if device == "cpu" and case.gpus > 1:
        return _skip(case, None, f"needs {case.gpus} GPUs; on CPU the local executor runs single-process cases only")
    out = opts.out
    result_path = out / "cases" / f"{case.id}.json"
    log_path = out / "logs" / f"{case.id}.log"
    result_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.unlink(missing_ok=True)
    cmd = case_command(case, run, device, opts, result_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = _now()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
    )
    reader = _Output(proc, log_path)
    bar = _Bar(label, case.steps + case.warmup_steps, opts.progress)
    progress: dict | None = None
    timed_out = interrupted = False
    deadline = time.monotonic() + case.timeout_seconds
    try:
        while proc.poll() is None:
            if reader.port is not None:
                try:
                    progress = collect.scrape(f"127.0.0.1:{reader.port}", timeout=1.0)
                    bar.update(progress)
                except collect.ScrapeError:
                    pass
            if time.monotonic() > deadline:
                timed_out = True
                _stop(proc)
                break
            time.sleep(opts.scrape_interval)
    except KeyboardInterrupt:
        interrupted = True
        _stop(proc)
    proc.wait()
    logs = reader.join()
    result = None
    if result_path.exists():
        try:
            result = collect.parse_result(result_path.read_text())
        except OSError:
            result = None
    if result is None:
        result = collect.parse_result(logs)
    phase, reason, message = collect.classify_exit(
        proc.returncode, result, logs, timed_out=timed_out, interrupted=interrupted
    )
    if result is not None and progress is not None and result.get("status") == "ok":
        progress = {**progress, "state": "done"}
    bar.close(phase if not reason else f"{phase}: {reason}", result)
    env_info = (result or {}).get("environment") or {}
    outcome = {
        "phase": phase,
        "reason": reason,
        "message": message,
        "result": result,
        "progress": progress,
        "node": socket.gethostname(),
        "gpu": env_info.get("gpu_name"),
        "driver": env_info.get("driver"),
        "image": None,  # no container: the local executor runs this checkout's trainer
        "repro": shlex.join(cmd),
        "job": f"pid {proc.pid}",
        "started_at": started,
        "finished_at": _now(),
    }
    if interrupted:
        exc = KeyboardInterrupt()
        exc.outcome = outcome  # type: ignore[attr-defined]
        raise exc
    return outcome


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the case's process group (torchrun and its ranks), SIGKILL after a grace period."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def case_label(case: Case) -> str:
    return plain_label(case.to_dict())


def _sigterm_as_interrupt():
    """In the main thread: SIGTERM (a CI job cancelled, `kill`) stops like Ctrl-C. Returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _run_units(
    units: list[Case], run: str, device: str, gpus: int, opts: LocalOptions, outcomes: dict[str, dict], log
) -> bool:
    """Run the units (plan.with_repeats: cases, their repeats, confirming re-runs) one after the other into
    `outcomes[unit.id]`; True when stopped by the user (cases not run at all get a Skipped outcome)."""
    for i, unit in enumerate(units):
        tag = " confirm" if unit.confirm else (f" r{unit.repeat}" if unit.repeat > 1 else "")
        label = f"[{i + 1}/{len(units)}{tag}] {case_label(unit)}"
        try:
            outcomes[unit.id] = run_case(unit, run, device, gpus, opts, label)
        except KeyboardInterrupt as e:
            outcomes[unit.id] = getattr(e, "outcome", None) or {
                "phase": "Failed",
                "reason": "Interrupted",
                "message": "stopped by the user",
            }
            for rest in units[i + 1 :]:
                if rest.repeat == 1:
                    outcomes[rest.id] = _skip(rest, "Interrupted", "not run: stopped by the user")
            print("trainbench: interrupted; writing the results of the finished cases", file=log, flush=True)
            return True
        o = outcomes[unit.id]
        if o["phase"] != "Succeeded":
            first = (o.get("message") or "").splitlines()[0] if o.get("message") else ""
            print(f"  {unit.id}: {o['phase']} {o.get('reason') or ''} {first}".rstrip(), file=log, flush=True)
    return False


ACKS_FILE = "acks.json"


def load_acks(out: Path) -> list[dict]:
    """Acknowledged change points and accepted baselines of a results folder (`trainbench baseline accept`)."""
    path = Path(out) / ACKS_FILE
    if not path.exists():
        return []
    doc = json.loads(path.read_text())
    if not isinstance(doc, list) or not all(isinstance(a, dict) for a in doc):
        raise ValueError(f"{path}: expected a JSON list of {{run, case?, metric?, accept?, note?}} objects")
    return doc


def _inputs(out: Path, opts: LocalOptions, suite: str, run: str) -> tuple[Any, dict | None, list[dict]]:
    """(baseline, history, acks) of a run into `out`: opts.baseline, else this folder's history of the suite."""
    history = H.load(out / H.CONFIGMAP_KEY)
    if history is not None and history.get("suite") != suite:
        history = None
    acks = load_acks(out)
    if opts.baseline:
        base = B.load_baseline(opts.baseline)
    elif history is not None:
        base = B.from_history(history, exclude_run=run, accepted=acks)
    else:
        base = None
    return base, history, acks


def run_local(name: str, spec: BenchmarkRunSpec, opts: LocalOptions) -> LocalRun:
    """Run every case of a (parsed) BenchmarkRun spec locally and write results, report and plots.

    Each case runs `repeats` times, interleaved (every case once, then again, ...); then every case whose
    regression against the baseline is suspected runs `confirm` more times, and the verdict says Confirmed or
    Cleared (results/verdict.py)."""
    log = opts.log or sys.stderr
    cases = plan(spec, model_paths=True)  # the local executor reads model config paths
    local_weights = {m: w.path for m, w in spec.weights.items() if w.persistent_volume_claim is None}
    if local_weights:
        opts = replace(opts, weights={**local_weights, **opts.weights})
    for model, path in opts.weights.items():
        if not Path(path).expanduser().exists():
            raise ValueError(f"weights for {model}: {path}: no such file or directory")
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    gpus = local_gpus() if opts.device in ("auto", "cuda") else 0
    device = opts.device if opts.device != "auto" else ("cuda" if gpus else "cpu")
    suite = spec.suite or name
    repeats = opts.repeats if opts.repeats is not None else spec.repeats
    confirm = opts.confirm if opts.confirm is not None else spec.confirm
    started = _now()
    run = f"{name}-{started.strftime('%Y%m%d-%H%M%S')}"
    print(f"trainbench: run {run}: {len(cases)} case(s) on {device} ({gpus} GPU(s)) -> {out}", file=log, flush=True)
    base, history, acks = _inputs(out, opts, suite, run)
    environment = {
        "executor": "local",
        "commit": git_commit(Path.cwd()),
        "image": None,
        "hostname": socket.gethostname(),
        "device": device,
        "gpus": gpus,
        "python": sys.version.split()[0],
    }
    with contextlib.suppress(PackageNotFoundError):  # not installed as a distribution
        environment["trainbench"] = version("trainbench")
    units = with_repeats(cases, repeats)
    outcomes: dict[str, dict] = {}

    def build() -> dict:
        grouped = group_outcomes(units, outcomes)
        return R.build_results(run, suite, spec, cases, grouped, started, _now(), environment)

    previous = _sigterm_as_interrupt()
    try:
        interrupted = _run_units(units, run, device, gpus, opts, outcomes, log)
        if not interrupted and confirm > 0 and base is not None:
            ids = {c["id"] for c in V.suspected(V.apply(build(), base, confirm=confirm))}
            if ids:
                names = ", ".join(sorted(ids))
                print(f"trainbench: suspected regression: {names}; {confirm} re-run(s) each", file=log, flush=True)
                extra = with_repeats(cases, repeats, confirm=dict.fromkeys(ids, confirm))[len(units) :]
                units += extra
                interrupted = _run_units(extra, run, device, gpus, opts, outcomes, log)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    results = build()
    return finish(results, out, opts, interrupted, inputs=(base, history, acks), confirm=confirm)


def finish(
    results: dict,
    out: Path,
    opts: LocalOptions,
    interrupted: bool = False,
    inputs: tuple[Any, dict | None, list[dict]] | None = None,
    confirm: int | None = None,
) -> LocalRun:
    """Baseline, verdicts, history, change points, plots, report (report.finalize): write everything into
    `out`. The baseline: opts.baseline, else this folder's history of the same suite; an interrupted run is
    reported but not recorded in the history."""
    base, history, acks = inputs if inputs is not None else _inputs(out, opts, results["suite"], results["run"])
    done = finalize(
        results,
        baseline=base,
        history=history,
        record=not interrupted,
        plots_dir=out if opts.plots else None,
        history_runs=opts.history_runs,
        confirm=confirm,
        acks=acks,
    )
    if not interrupted:
        H.save(done.history, out / H.CONFIGMAP_KEY)
    R.write_results(results, out / R.CONFIGMAP_KEY)
    (out / R.REPORT_KEY).write_text(done.report)
    return LocalRun(results=results, report=done.report, out=out, interrupted=interrupted)
