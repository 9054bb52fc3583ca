"""`trainbench run | report | compare | plan`: the user-facing CLI around a BenchmarkRun.

    trainbench run FILE.yaml --local --out DIR [--baseline PATH] [--device auto|cpu|cuda]
    trainbench run FILE.yaml [--namespace NS]          # submit to the cluster (kubeconfig)
    trainbench report RESULTS... [--baseline PATH] [--history PATH] [--out DIR] [--json]
    trainbench compare A B [--json]
    trainbench plan FILE.yaml [--json]

RESULTS / A / B: a folder holding results.json, a results.json file, or `configmap/NAME` (read with the
kubernetes client). Bad manifests get the operator's own messages (api.SpecError: the field, then what is
wrong) and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from trainbench.operator.api import API_VERSION, GROUP, KIND, PLURAL, VERSION, BenchmarkRunSpec, SpecError, parse_spec
from trainbench.operator.controller.client import Api, ClientError, choose
from trainbench.operator.local import LocalOptions, run_local
from trainbench.operator.plan import plan
from trainbench.operator.report.finalize import finalize
from trainbench.operator.report.markdown import render_compare
from trainbench.operator.results import baseline as B
from trainbench.operator.results import document as R
from trainbench.operator.results import history as H
from trainbench.trainer.contract import RESULT_SCHEMA

TAKES_SUBCOMMAND = True
EXIT_USAGE = 2


class ManifestError(ValueError):
    """A manifest file that is not a usable BenchmarkRun."""


def load_manifest(path: str | Path) -> tuple[str, str | None, dict]:
    """(name, namespace, spec dict) of the BenchmarkRun in a YAML file (the first one when it holds several
    documents). Raises ManifestError / SpecError with a message that names the problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ManifestError(f"{path}: {e.strerror}") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise ManifestError(f"{path}: not valid YAML ({e})") from None
    runs = [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    if not runs:
        kinds = sorted({str(d.get("kind")) for d in docs if isinstance(d, dict)})
        raise ManifestError(f"{path}: no {KIND} in the file (found kinds: {', '.join(kinds) or 'none'})")
    doc = runs[0]
    if doc.get("apiVersion") != API_VERSION:
        raise ManifestError(f"{path}: apiVersion must be {API_VERSION}, got {doc.get('apiVersion')!r}")
    meta = doc.get("metadata") or {}
    name = meta.get("name") or meta.get("generateName", "").rstrip("-")
    if not name:
        raise ManifestError(f"{path}: metadata.name is required")
    spec = doc.get("spec")
    if spec is None:
        raise SpecError("spec", "is required")
    return name, meta.get("namespace"), spec


def _parse_manifest(path: str) -> tuple[str, str | None, BenchmarkRunSpec, dict]:
    name, namespace, raw = load_manifest(path)
    spec = parse_spec(raw)
    plan(spec)  # the planner's errors (unknown model, bad parallelism, ...) before anything starts
    return name, namespace, spec, raw


def _error(msg: str) -> int:
    print(f"trainbench: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


# --- run ------------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    try:
        name, namespace, spec, raw = _parse_manifest(args.file)
    except (ManifestError, SpecError) as e:
        return _error(f"{args.file}: {e}" if isinstance(e, SpecError) else str(e))
    if not args.local:
        return submit(name, args.namespace or namespace, raw, args.file)
    if args.baseline:
        try:
            B.load_baseline(args.baseline)  # fail before running anything
        except (B.BaselineError, R.ResultsError) as e:
            return _error(str(e))
    opts = LocalOptions(out=Path(args.out), device=args.device, baseline=args.baseline, progress=not args.no_progress)
    done = run_local(name, spec, opts)
    s = done.results["summary"]
    print(f"trainbench: {done.out / 'report.md'}: {s['cases']} cases, {s['succeeded']} passed, {s['failed']} failed")
    if args.print_report:
        print(done.report)
    code = done.exit_code
    if code == 0 and args.fail_on_regression and s["regressions"]:
        code = 1
    return code


def submit(name: str, namespace: str | None, spec: dict, path: str) -> int:
    """Create the BenchmarkRun in the cluster the kubeconfig points at."""
    try:
        api = Api()
        ns = namespace or api.namespace
        body = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}
        api.create_custom(GROUP, VERSION, PLURAL, ns, body)
    except ClientError as e:
        return _error(f"{path}: cannot submit {KIND} {name!r}: {e}")
    except Exception as e:  # noqa: BLE001 - config and API errors alike: say what failed
        return _error(f"{path}: cannot submit {KIND} {name!r}: {e.__class__.__name__}: {str(e).splitlines()[0]}")
    print(f"{PLURAL}.{GROUP}/{name} created in namespace {ns}")
    return 0


# --- report / compare -------------------------------------------------------------------------------------


def load_any_results(source: str, namespace: str | None = None) -> dict:
    """A results document from a folder, a JSON file or configmap/NAME."""
    if source.startswith(("configmap/", "cm/")):
        name = source.split("/", 1)[1]
        data = B.read_configmap(name, namespace)
        if R.CONFIGMAP_KEY not in data:
            raise R.ResultsError(f"{source}: has no {R.CONFIGMAP_KEY} key")
        return R.validate(json.loads(data[R.CONFIGMAP_KEY]))
    path = Path(source)
    if path.is_file():
        try:
            doc = json.loads(path.read_text())
        except ValueError as e:
            raise R.ResultsError(f"{path}: not JSON ({e})") from None
        if isinstance(doc, dict) and doc.get("schema") == RESULT_SCHEMA:  # a trainer's --output file
            return R.from_trainer_results([doc])
    return R.load_results(source)


def merge_results(docs: list[dict]) -> dict:
    """Several results documents as one (cases concatenated; the first document's run facts)."""
    if len(docs) == 1:
        return docs[0]
    out = dict(docs[0])
    out["cases"] = [c for d in docs for c in d["cases"]]
    out["pools"] = list({p["name"]: p for d in docs for p in d.get("pools", [])}.values())
    out["summary"] = R.counts(out["cases"])
    return R.validate(out)


def _folder_history(sources: list[str]) -> str | None:
    """The history.json next to the results of a single folder (`trainbench run --local` writes both)."""
    if len(sources) == 1 and Path(sources[0]).is_dir() and (Path(sources[0]) / H.CONFIGMAP_KEY).is_file():
        return str(Path(sources[0]) / H.CONFIGMAP_KEY)
    return None


def cmd_report(args: argparse.Namespace) -> int:
    history_path = args.history or _folder_history(args.results)
    try:
        results = merge_results([load_any_results(s, args.namespace) for s in args.results])
        base = B.load_baseline(args.baseline, args.namespace) if args.baseline else None
        history = H.load(history_path) if history_path else None
    except (R.ResultsError, B.BaselineError, ValueError, OSError) as e:
        return _error(str(e))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    # without --baseline the verdicts the results already carry stand (judge only against a given baseline)
    done = finalize(results, baseline=base, judge=base is not None, history=history, plots_dir=args.out)
    if args.out:
        (Path(args.out) / R.REPORT_KEY).write_text(done.report)
        R.write_results(results, Path(args.out) / R.CONFIGMAP_KEY)
    if args.json:
        print(json.dumps(results, indent=1))
    elif not args.out:
        print(done.report, end="")
    return 1 if args.fail_on_regression and results["summary"]["regressions"] else 0


def cmd_compare(args: argparse.Namespace) -> int:
    try:
        a = load_any_results(args.a, args.namespace)
        b = load_any_results(args.b, args.namespace)
    except (R.ResultsError, B.BaselineError, ValueError, OSError) as e:
        return _error(str(e))
    text, data = render_compare(a, b)
    print(json.dumps(data, indent=1) if args.json else text, end="\n" if args.json else "")
    return 1 if args.fail_on_regression and data["summary"]["regressions"] else 0


# --- plan -------------------------------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
    try:
        name, _, spec, _ = _parse_manifest(args.file)
    except (ManifestError, SpecError) as e:
        return _error(f"{args.file}: {e}" if isinstance(e, SpecError) else str(e))
    cases = plan(spec)
    if args.json:
        print(json.dumps([c.to_dict() for c in cases], indent=1))
        return 0
    head = ("ID", "MODEL", "TYPE", "SEQ", "AC", "ATTN", "EP", "CP", "POOL", "GPUS")
    rows = [
        (c.id, c.model, c.type, str(c.seq_len), c.ac, c.attn, str(c.ep), str(c.cp), c.pool, str(c.gpus)) for c in cases
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    print(f"{len(cases)} case(s) in {KIND} {name}")
    return 0


# --- entry point --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trainbench", description="Run, report and compare trainbench BenchmarkRuns.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a BenchmarkRun locally (--local) or submit it to the cluster")
    r.add_argument("file", help="a BenchmarkRun manifest (YAML)")
    r.add_argument("--local", action="store_true", help="run the cases on this machine, no cluster")
    r.add_argument("--out", default="out/run", help="output folder for results.json, report.md, plots (--local)")
    r.add_argument("--baseline", help="results folder/file, configmap/NAME, or prime-rl JSON (default: --out history)")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="--local: where cases run")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--print-report", action="store_true", help="print report.md when done")
    r.add_argument("--fail-on-regression", action="store_true", help="exit 1 when a regression is found")
    r.add_argument("--namespace", "-n", help="namespace to submit to (default: the kubeconfig's)")
    r.set_defaults(func=cmd_run)

    rep = sub.add_parser("report", help="render the markdown report of a run")
    rep.add_argument("results", nargs="+", help="folder, results.json, configmap/NAME, or trainer --output JSON files")
    rep.add_argument("--baseline", help="results folder/file, history.json, configmap/NAME, or prime-rl JSON")
    rep.add_argument("--history", help="the suite's history.json (default: the one in a results folder)")
    rep.add_argument("--out", help="write report.md, results.json and plots here instead of printing")
    rep.add_argument("--json", action="store_true", help="print the results document with verdicts as JSON")
    rep.add_argument("--fail-on-regression", action="store_true")
    rep.add_argument("--namespace", "-n")
    rep.set_defaults(func=cmd_report)

    c = sub.add_parser("compare", help="diff two runs (A = before, B = after)")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--json", action="store_true")
    c.add_argument("--fail-on-regression", action="store_true")
    c.add_argument("--namespace", "-n")
    c.set_defaults(func=cmd_compare)

    for cluster_cmd in (r, rep, c):  # configmap/NAME sources, submitting
        cluster_cmd.add_argument(
            "--kubeconfig", help="kubeconfig file (default: KUBECONFIG, in-cluster, ~/.kube/config)"
        )
        cluster_cmd.add_argument("--context", help="kubeconfig context (default: the current one)")

    pl = sub.add_parser("plan", help="print the cases a BenchmarkRun plans")
    pl.add_argument("file")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plan)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    choose(getattr(args, "kubeconfig", None), getattr(args, "context", None))
    return args.func(args)
