"""`trainbench run | report | compare | plan`: the user-facing CLI around a BenchmarkRun.

    trainbench run FILE.yaml --local --out DIR [--baseline PATH] [--device auto|cpu|cuda]
    trainbench run FILE.yaml [-n NS] [--kubeconfig F] [--context C]   # submit to the cluster
    trainbench plan FILE.yaml [--json]
    trainbench get [NAME] [-n NS] [--json]              # the runs of a namespace, or one run's cases
    trainbench watch NAME [-n NS] [--interval S] [--timeout S]
    trainbench report RESULTS... [--baseline PATH] [--history PATH] [--out DIR] [--json]
    trainbench compare A B [--json]
    trainbench publish RESULTS --repo URL [--branch B] [--path P] [--pr --base main]

RESULTS / A / B: a folder holding results.json, a results.json file, `configmap/NAME`, or `br/NAME` /
`benchmarkrun/NAME` (the run's results ConfigMap, found through its status). Cluster access goes through the
one loader (controller.client: --kubeconfig, --context, KUBECONFIG, in-cluster). Every error is one line on
stderr that says what to do, exit code 2 (bad input) or 1 (the cluster or a git server refused); bad manifests
get the operator's own messages (api.SpecError: the field, then what is wrong).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from trainbench.operator import clock
from trainbench.operator import kube as K
from trainbench.operator import publish as P
from trainbench.operator.api import API_VERSION, GROUP, KIND, PLURAL, VERSION, BenchmarkRunSpec, SpecError, parse_spec
from trainbench.operator.controller import suite as S
from trainbench.operator.controller.client import Api, ClientError, api_message, choose
from trainbench.operator.local import ACKS_FILE, LocalOptions, load_acks, run_local
from trainbench.operator.manifest import ManifestError, check_metadata, read_manifest
from trainbench.operator.plan import plan
from trainbench.operator.report.finalize import finalize
from trainbench.operator.report.markdown import render_compare
from trainbench.operator.results import baseline as B
from trainbench.operator.results import document as R
from trainbench.operator.results import history as H
from trainbench.trainer.contract import RESULT_SCHEMA

TAKES_SUBCOMMAND = True
EXIT_USAGE = 2


class CliError(Exception):
    """A one-line error for the user; `code` is the exit code (2: bad input, 1: the cluster/a server refused)."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def load_manifest(path: str | Path) -> tuple[str, str | None, dict, str | None]:
    """(name, namespace, spec dict, generateName) of the BenchmarkRun in a YAML file (manifest.read_run: one
    document, read with the bounded strict loader, metadata checked as the API server does). With only
    metadata.generateName, name is that prefix without its dash (for the local executor and messages); the
    cluster picks the real name. Raises ManifestError / SpecError naming the problem."""
    doc = read_manifest(path)
    name, namespace, generate = check_metadata(doc.get("metadata"), str(path))
    spec = doc.get("spec")
    if spec is None:
        raise SpecError("spec", "is required")
    return name, namespace, spec, generate


def _parse_manifest(
    path: str, *, model_paths: bool = True
) -> tuple[str, str | None, BenchmarkRunSpec, dict, str | None]:
    """`model_paths`: a model may be a path to a config.json (not for a run submitted to the cluster)."""
    try:
        name, namespace, raw, generate = load_manifest(path)
        spec = parse_spec(raw)
        plan(spec, model_paths=model_paths)  # the planner's errors (unknown model, bad parallelism, ...) first
    except ManifestError as e:
        raise CliError(str(e)) from None
    except SpecError as e:
        raise CliError(f"{path}: {e}") from None
    return name, namespace, spec, raw, generate


def _error(msg: str, code: int = EXIT_USAGE) -> int:
    print(f"trainbench: error: {' '.join(str(msg).split())}", file=sys.stderr)
    return code


# --- the cluster ---------------------------------------------------------------------------------------------

NO_CLUSTER = "no cluster configured: set KUBECONFIG or pass --kubeconfig FILE (and --context NAME)"


def _api(doing: str, hint: str = NO_CLUSTER) -> Api:
    """The one API client (controller.client), or a CliError that says how to point at a cluster."""
    try:
        return Api()
    except ClientError as e:
        detail = str(e).removeprefix("no cluster: ")
        raise CliError(f"{doing}: {hint} ({detail})") from None


def _refused(api: Api, e: Exception, doing: str) -> CliError:
    """An API error as one line: the server's own message, never the HTTP headers."""
    if isinstance(e, api.client.ApiException):
        return CliError(f"{doing}: the API server said {e.status} {e.reason}: {api_message(e)}", code=1)
    return CliError(f"{doing}: cannot reach the cluster ({e.__class__.__name__}: {str(e).splitlines()[0]})", code=1)


def read_run(api: Api, name: str, namespace: str | None) -> dict:
    ns = namespace or api.namespace
    try:
        return api.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    except Exception as e:  # noqa: BLE001 - ApiException or a connection error: one line either way
        if getattr(e, "status", None) == 404:
            raise CliError(
                f"benchmarkrun/{name}: not found in namespace {ns} (trainbench get -n {ns} lists the runs there)"
            ) from None
        raise _refused(api, e, f"benchmarkrun/{name}") from None


def list_runs(api: Api, namespace: str | None) -> list[dict]:
    ns = namespace or api.namespace
    try:
        return api.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL).get("items") or []
    except Exception as e:  # noqa: BLE001
        if getattr(e, "status", None) == 404:
            raise CliError(f"the cluster does not serve {PLURAL}.{GROUP}: install the CRD (trainbench crd)") from None
        raise _refused(api, e, f"listing {PLURAL} in namespace {ns}") from None


def read_configmap_data(api: Api, name: str, namespace: str | None, what: str) -> dict[str, str]:
    ns = namespace or api.namespace
    try:
        cm = api.read_configmap(ns, name)
    except Exception as e:  # noqa: BLE001
        raise _refused(api, e, what) from None
    if cm is None:
        raise CliError(f"{what}: cannot read it: no ConfigMap {name} in namespace {ns}")
    return dict(cm.get("data") or {})


RUN_PREFIXES = ("br/", "benchmarkrun/", "benchmarkruns/", f"{PLURAL}.{GROUP}/")


def run_source(source: str) -> str | None:
    """The run name of a `br/NAME` / `benchmarkrun/NAME` source, else None."""
    for prefix in RUN_PREFIXES:
        if source.startswith(prefix) and source[len(prefix) :]:
            return source[len(prefix) :]
    return None


def run_configmaps(source: str, namespace: str | None) -> tuple[dict, dict[str, str], dict[str, str]]:
    """(the run, its results ConfigMap's data, its report ConfigMap's data) of `br/NAME`, found through the status."""
    name = run_source(source)
    api = _api(source)
    run = read_run(api, name, namespace)
    status = run.get("status") or {}
    cm = status.get("resultsConfigMap")
    if not cm:
        phase = status.get("phase") or "not started"
        raise CliError(
            f"{source}: no results yet (phase {phase}, {status.get('progress') or '0/?'} cases done): "
            f"trainbench watch {name} follows it until it finishes"
        )
    ns = run["metadata"].get("namespace") or namespace
    results = read_configmap_data(api, cm, ns, f"{source}: results configmap/{cm}")
    report_cm = status.get("reportConfigMap")
    report = read_configmap_data(api, report_cm, ns, f"{source}: report configmap/{report_cm}") if report_cm else {}
    return run, results, report


# --- run ------------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    name, namespace, spec, raw, generate = _parse_manifest(args.file, model_paths=args.local)
    if not args.local:
        return submit(name, args.namespace or namespace, raw, args.file, generate_name=generate)
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


def submit(name: str, namespace: str | None, spec: dict, path: str, *, generate_name: str | None = None) -> int:
    """Create the BenchmarkRun in the cluster the kubeconfig points at (metadata.generateName: the API server
    picks the name)."""
    what = f"{path}: cannot submit {KIND} {name!r}"
    api = _api(what, "use --local to run it on this machine, or " + NO_CLUSTER.split(": ", 1)[1] + " to submit it")
    ns = namespace or api.namespace
    meta = {"generateName": generate_name} if generate_name else {"name": name}
    body = {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": spec}
    try:
        created = api.create_custom(GROUP, VERSION, PLURAL, ns, body)
    except Exception as e:  # noqa: BLE001 - ApiException or no connection: one line either way
        if getattr(e, "status", None) == 409:
            raise CliError(
                f"{path}: {KIND} {name!r} already exists in namespace {ns}: delete it "
                f"(kubectl delete {PLURAL}.{GROUP} {name} -n {ns}), change metadata.name, or use "
                f"metadata.generateName: {name}- for a fresh name each time",
                code=1,
            ) from None
        raise _refused(api, e, what) from None
    made = ((created or {}).get("metadata") or {}).get("name") or name
    print(f"{PLURAL}.{GROUP}/{made} created in namespace {ns}")
    print(f"follow it: trainbench watch {made} -n {ns}; read it: trainbench report br/{made} -n {ns}", file=sys.stderr)
    return 0


# --- get / watch ------------------------------------------------------------------------------------------

TERMINAL = ("Succeeded", "PartiallyFailed", "Failed", "Cancelled")


def _age(stamp: str | None) -> str:
    t = clock.parse_time(stamp)
    if t is None:
        return "?"
    s = max(0, int((clock.now() - t).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def _table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows])


def run_row(run: dict) -> tuple[str, ...]:
    meta, status, spec = run.get("metadata") or {}, run.get("status") or {}, run.get("spec") or {}
    suite = spec.get("suite") or (meta.get("labels") or {}).get("trainbench.dev/suite") or "-"
    regressions = status.get("regressions")
    return (
        meta.get("name", "?"),
        suite,
        status.get("phase") or "Pending",
        status.get("progress") or "-",
        "-" if regressions is None else str(regressions),
        _age(meta.get("creationTimestamp")),
    )


def cmd_get(args: argparse.Namespace) -> int:
    api = _api("trainbench get")
    if args.name:
        run = read_run(api, args.name, args.namespace)
        if args.json:
            print(json.dumps(run, indent=1))
            return 0
        status = run.get("status") or {}
        print(_table(("NAME", "SUITE", "PHASE", "CASES", "REGRESSIONS", "AGE"), [run_row(run)]))
        if status.get("message"):
            print(f"message: {status['message']}")
        cases = status.get("cases") or []
        if cases:
            rows = [
                (
                    c.get("id") or "?",
                    c.get("phase") or "Pending",
                    c.get("reason") or "-",
                    f"{c.get('step')}/{c.get('stepsTotal')}" if c.get("stepsTotal") else "-",
                    f"{c['tps']:.4g}" if isinstance(c.get("tps"), (int, float)) else "-",
                )
                for c in cases
            ]
            print()
            print(_table(("CASE", "PHASE", "REASON", "STEP", "TPS"), rows))
        if status.get("resultsConfigMap"):
            print(f"\nreport: trainbench report br/{args.name}" + (f" -n {args.namespace}" if args.namespace else ""))
        return 0
    runs = list_runs(api, args.namespace)
    runs.sort(key=lambda r: (r.get("metadata") or {}).get("creationTimestamp") or "", reverse=True)
    if args.json:
        print(json.dumps(runs, indent=1))
        return 0
    if not runs:
        print(f"no {PLURAL} in namespace {args.namespace or api.namespace}", file=sys.stderr)
        return 0
    print(_table(("NAME", "SUITE", "PHASE", "CASES", "REGRESSIONS", "AGE"), [run_row(r) for r in runs]))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Set spec.cancel on a run: the operator stops its running cases, marks what has not ended Cancelled and
    writes the results and report of what finished."""
    api = _api(f"trainbench cancel {args.name}")
    run = read_run(api, args.name, args.namespace)
    ns = run["metadata"]["namespace"]
    phase = (run.get("status") or {}).get("phase")
    if phase in TERMINAL and phase != "Cancelled":
        print(f"benchmarkrun/{args.name} already ended ({phase}): nothing to cancel", file=sys.stderr)
        return 0
    try:
        api.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, args.name, {"spec": {"cancel": True}})
    except Exception as e:  # noqa: BLE001
        raise _refused(api, e, f"cancelling benchmarkrun/{args.name}") from None
    print(
        f"benchmarkrun/{args.name} cancelled: running cases stop, the results of what finished are written "
        f"(trainbench watch {args.name} -n {ns})",
        file=sys.stderr,
    )
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    """Print a line whenever the run's phase, progress or message changes; exit when it finishes: 0 Succeeded,
    1 otherwise (and 1 when --timeout passes first)."""
    if args.interval <= 0:
        return _error("--interval must be more than 0 seconds")
    api = _api(f"trainbench watch {args.name}")
    deadline = time.monotonic() + args.timeout if args.timeout else None
    last = None
    while True:
        run = read_run(api, args.name, args.namespace)
        status = run.get("status") or {}
        phase = status.get("phase") or "Pending"
        seen = (phase, status.get("progress"), status.get("message"))
        if seen != last:
            stamp = clock.now().strftime("%H:%M:%S")
            print(f"{stamp}  {phase:<15} {status.get('progress') or '-':>7}  {status.get('message') or ''}".rstrip())
            sys.stdout.flush()
            last = seen
        if phase in TERMINAL and status.get("observedGeneration") == (run["metadata"].get("generation") or 1):
            if status.get("resultsConfigMap"):
                print(f"report: trainbench report br/{args.name}" + (f" -n {args.namespace}" if args.namespace else ""))
            return 0 if phase == "Succeeded" else 1
        if deadline is not None and time.monotonic() >= deadline:
            return _error(f"benchmarkrun/{args.name} is still {phase} after --timeout {args.timeout:g} s", code=1)
        time.sleep(args.interval)


# --- report / compare -------------------------------------------------------------------------------------


def load_any_results(source: str, namespace: str | None = None) -> dict:
    """A results document from a folder, a JSON file, configmap/NAME or br/NAME."""
    if run_source(source):
        _, data, _ = run_configmaps(source, namespace)
        if R.CONFIGMAP_KEY not in data:
            raise R.ResultsError(f"{source}: its results ConfigMap has no {R.CONFIGMAP_KEY} key")
        return R.validate(json.loads(data[R.CONFIGMAP_KEY]))
    if source.startswith(("configmap/", "cm/")):
        name = source.split("/", 1)[1]
        data = read_configmap_data(_api(source), name, namespace, source)
        if R.CONFIGMAP_KEY not in data:
            raise R.ResultsError(f"{source}: has no {R.CONFIGMAP_KEY} key")
        return R.validate(json.loads(data[R.CONFIGMAP_KEY]))
    path = Path(source)
    if not path.exists():
        raise R.ResultsError(
            f"{source}: no such file or folder (results are a folder, a results.json, configmap/NAME or br/NAME)"
        )
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
        acks = load_acks(Path(history_path).parent) if history_path else []
    except (R.ResultsError, B.BaselineError, ValueError, OSError) as e:
        return _error(str(e))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    # without --baseline the verdicts the results already carry stand (judge only against a given baseline)
    done = finalize(results, baseline=base, judge=base is not None, history=history, plots_dir=args.out, acks=acks)
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
    name, _, spec, _, _ = _parse_manifest(args.file)
    cases = plan(spec, model_paths=True)
    if args.json:
        print(json.dumps([c.to_dict() for c in cases], indent=1))
        return 0
    head = ("ID", "MODEL", "TYPE", "SEQ", "AC", "ATTN", "EP", "CP", "POOL", "GPUS")
    rows = [
        (c.id, c.model, c.type, str(c.seq_len), c.ac, c.attn, str(c.ep), str(c.cp), c.pool, str(c.gpus)) for c in cases
    ]
    print(_table(head, rows))
    print(f"{len(cases)} case(s) in {KIND} {name}")
    return 0


# --- publish ------------------------------------------------------------------------------------------------

ENV_TOKEN = ("TRAINBENCH_GIT_TOKEN", "GITHUB_TOKEN")
ENV_USERNAME = "TRAINBENCH_GIT_USERNAME"


def _publish_source(source: str, namespace: str | None) -> tuple[str, dict, dict]:
    """(report.md, results document, the run's spec.publish or {}) of a results folder/file or br/NAME."""
    if run_source(source):
        run, data, report = run_configmaps(source, namespace)
        if R.CONFIGMAP_KEY not in data:
            raise CliError(f"{source}: its results ConfigMap has no {R.CONFIGMAP_KEY} key")
        results = R.validate(json.loads(data[R.CONFIGMAP_KEY]))
        text = report.get(R.REPORT_KEY)
        if text is None:
            text = finalize(results, judge=False).report
        return text, results, (run.get("spec") or {}).get("publish") or {}
    try:
        results = load_any_results(source, namespace)
    except (R.ResultsError, B.BaselineError, ValueError, OSError) as e:
        raise CliError(str(e)) from None
    folder = Path(source) if Path(source).is_dir() else Path(source).parent
    report_file = folder / R.REPORT_KEY
    text = report_file.read_text() if report_file.is_file() else finalize(results, judge=False).report
    return text, results, {}


def cmd_publish(args: argparse.Namespace) -> int:
    report, results, spec_publish = _publish_source(args.source, args.namespace)
    pr_spec = spec_publish.get("pullRequest") or {}
    repo = args.repo or spec_publish.get("repo")
    if not repo:
        return _error("publish: give --repo URL (or publish br/NAME of a run with spec.publish.repo)")
    token = args.token or next((os.environ[v] for v in ENV_TOKEN if os.environ.get(v)), None)
    auth = None
    if token or args.ssh_key:
        try:
            key = Path(args.ssh_key).read_text() if args.ssh_key else None
        except OSError as e:
            return _error(f"--ssh-key {args.ssh_key}: {e.strerror}")
        auth = P.Auth(username=os.environ.get(ENV_USERNAME) or None, token=token, ssh_key=key)
    want_pr = args.pr or bool(pr_spec)
    target = P.Target(
        repo=repo,
        branch=args.branch or spec_publish.get("branch") or P.DEFAULT_BRANCH,
        path=args.path if args.path is not None else spec_publish.get("path") or P.DEFAULT_PATH,
        base=args.base or pr_spec.get("base") or ("main" if want_pr else None),
        report_url_template=args.report_url_template or spec_publish.get("reportUrlTemplate"),
    )
    run = results.get("run") or "run"
    suite = results.get("suite") or run
    date = (clock.parse_time(results.get("completed_at") or results.get("started_at")) or clock.now()).strftime(
        "%Y-%m-%d"
    )
    try:
        out = P.publish_run(
            target,
            report=report,
            results=results,
            suite=suite,
            run=run,
            date=date,
            auth=auth,
            pull_request=want_pr,
            api=args.api or pr_spec.get("api"),
            title=args.title or pr_spec.get("title"),
        )
    except P.PublishError as e:
        return _error(f"publish: {e}", code=1)
    if args.json:
        print(json.dumps(out.to_dict(), indent=1))
        return 0
    what = "committed" if out.changed else "already there, nothing to commit"
    print(f"{out.branch}@{out.commit[:12]}: {out.path}/report.md, results.json ({what})")
    if out.report_url:
        print(f"report: {out.report_url}")
    if out.pull_request:
        print(f"pull request: {out.pull_request}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    """Record an accepted baseline (`accept`: a slowdown becomes the baseline) or an acknowledged change point
    (`ack`: reported, no longer alerted) in a results folder's acks.json or the suite's `<suite>-acks`
    ConfigMap (docs/verdicts.md). The entry and the ConfigMap write are controller/suite.py's, which the
    operator also uses for the `trainbench.dev/accept-baseline` and `ack-change-points` annotations."""
    entry = S.ack_entry(args.action, args.run, args.case, args.metric, args.note)
    if args.out:
        out = Path(args.out)
        if not out.is_dir():
            raise CliError(f"{out}: no such results folder (the --out of trainbench run --local)")
        acks, added = S.add_entry(load_acks(out), entry)
        (out / ACKS_FILE).write_text(json.dumps(acks, indent=1) + "\n")
        where = out / ACKS_FILE
    else:
        if not args.suite:
            raise CliError("baseline: give --out DIR (a local results folder) or --suite SUITE (on the cluster)")
        api = _api("record the ack")
        ns = args.namespace or api.namespace
        name = K.acks_configmap_name(args.suite)
        try:
            added = bool(S.record_ack(api, ns, args.suite, [entry])[0])
        except S.AcksError as e:
            raise CliError(str(e)) from None
        except (ClientError, api.client.ApiException) as e:
            raise CliError(f"configmap/{name} in {ns}: {api_message(e)}", 1) from e
        where = f"configmap/{name} in namespace {ns}"
    what = "accepted as the baseline" if args.action == "accept" else f"change point of {entry['metric']} acknowledged"
    again = "" if added else ", already recorded"
    print(f"trainbench: run {args.run}, case {entry['case']}: {what} ({where}{again})")
    return 0


# --- entry point --------------------------------------------------------------------------------------------


def _cluster_flags(p: argparse.ArgumentParser, namespace_help: str = "namespace (default: the kubeconfig's)") -> None:
    p.add_argument("--namespace", "-n", help=namespace_help)
    p.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG, in-cluster, ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser and each subcommand's own (so a wrong flag is answered with that subcommand's usage)."""
    p = argparse.ArgumentParser(prog="trainbench", description="Run, follow, report and publish BenchmarkRuns.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subs: dict[str, argparse.ArgumentParser] = {}

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        subs[name] = sub.add_parser(name, help=help_, description=help_)
        return subs[name]

    r = add("run", "run a BenchmarkRun here (--local) or submit it to the cluster")
    r.add_argument("file", help="a BenchmarkRun manifest (YAML; metadata.name or metadata.generateName)")
    r.add_argument("--local", action="store_true", help="run the cases on this machine, no cluster")
    r.add_argument("--out", default="out/run", help="output folder for results.json, report.md, plots (--local)")
    r.add_argument("--baseline", help="results folder/file, configmap/NAME, or prime-rl JSON (default: --out history)")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="--local: where cases run")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--print-report", action="store_true", help="print report.md when done")
    r.add_argument("--fail-on-regression", action="store_true", help="exit 1 when a regression is found")
    _cluster_flags(r, "namespace to submit to (default: the manifest's, else the kubeconfig's)")
    r.set_defaults(func=cmd_run)

    pl = add("plan", "print the cases a BenchmarkRun manifest plans")
    pl.add_argument("file", help="a BenchmarkRun manifest (YAML)")
    pl.add_argument("--json", action="store_true", help="the cases as JSON")
    pl.set_defaults(func=cmd_plan)

    g = add("get", "list the BenchmarkRuns of a namespace, or show one run and its cases")
    g.add_argument("name", nargs="?", help="a run's name (default: list them all)")
    g.add_argument("--json", action="store_true", help="the objects as JSON")
    _cluster_flags(g)
    g.set_defaults(func=cmd_get)

    w = add("watch", "follow one BenchmarkRun until it finishes (exit 0: Succeeded, 1: otherwise)")
    w.add_argument("name", help="the run's name")
    w.add_argument("--interval", type=float, default=5.0, help="seconds between looks (default 5)")
    w.add_argument("--timeout", type=float, default=0.0, help="give up after this many seconds (default: never)")
    _cluster_flags(w)
    w.set_defaults(func=cmd_watch)

    cn = add("cancel", "stop a BenchmarkRun: running cases stop, results and report of what finished are written")
    cn.add_argument("name", help="the run's name")
    _cluster_flags(cn)
    cn.set_defaults(func=cmd_cancel)

    rep = add("report", "render the markdown report of a run's results")
    rep.add_argument(
        "results", nargs="+", help="folder, results.json, configmap/NAME, br/NAME, or trainer --output JSON files"
    )
    rep.add_argument("--baseline", help="results folder/file, history.json, configmap/NAME, or prime-rl JSON")
    rep.add_argument("--history", help="the suite's history.json (default: the one in a results folder)")
    rep.add_argument("--out", help="write report.md, results.json and plots here instead of printing")
    rep.add_argument("--json", action="store_true", help="print the results document with verdicts as JSON")
    rep.add_argument("--fail-on-regression", action="store_true", help="exit 1 when a regression is found")
    _cluster_flags(rep)
    rep.set_defaults(func=cmd_report)

    c = add("compare", "diff two runs' results (A = before, B = after)")
    c.add_argument("a", help="before: folder, results.json, configmap/NAME or br/NAME")
    c.add_argument("b", help="after: the same forms")
    c.add_argument("--json", action="store_true", help="the comparison as JSON")
    c.add_argument("--fail-on-regression", action="store_true", help="exit 1 when a regression is found")
    _cluster_flags(c)
    c.set_defaults(func=cmd_compare)

    pub = add("publish", "commit a run's report.md and results.json to a git branch (optionally open a PR)")
    pub.add_argument("source", help="a results folder (report.md + results.json), results.json, or br/NAME")
    pub.add_argument("--repo", help="git URL (https://, ssh://, git@host:, file://); br/NAME: spec.publish.repo")
    pub.add_argument("--branch", help=f"branch to commit to (default: spec.publish.branch, else {P.DEFAULT_BRANCH})")
    pub.add_argument(
        "--path", help=f"folder in the repository; {{suite}} {{run}} {{date}} are filled in (default {P.DEFAULT_PATH})"
    )
    pub.add_argument("--pr", action="store_true", help="open a pull request from --branch into --base")
    pub.add_argument("--base", help="base branch of a new branch and of the pull request (default main with --pr)")
    pub.add_argument("--api", help="the forge's API URL (default: api.github.com, or https://HOST/api/v3)")
    pub.add_argument("--title", help="the pull request's title")
    pub.add_argument(
        "--token", help="HTTPS token (better: TRAINBENCH_GIT_TOKEN or GITHUB_TOKEN; user: TRAINBENCH_GIT_USERNAME)"
    )
    pub.add_argument("--ssh-key", help="private SSH key file for ssh:// and git@host: URLs")
    pub.add_argument("--report-url-template", help="the report link: {web} {branch} {commit} {file} {suite} {run}")
    pub.add_argument("--json", action="store_true", help="print what was published as JSON")
    _cluster_flags(pub)
    pub.set_defaults(func=cmd_publish)

    bl = add("baseline", "accept a run as the baseline (a slowdown is meant) or acknowledge a change point")
    bl.add_argument("action", choices=("accept", "ack"), help="accept: the run becomes the baseline; ack: known")
    bl.add_argument("run", help="the run's name (results.json's run)")
    bl.add_argument("--case", help="one case id (default: every case of the run)")
    bl.add_argument("--metric", help="ack: the metric of the change point (tps, mfu, step_time, ...; default all)")
    bl.add_argument("--note", help="why (kept with the entry)")
    bl.add_argument("--out", help="a local results folder (its acks.json)")
    bl.add_argument("--suite", help="on the cluster: the suite (its <suite>-acks ConfigMap)")
    _cluster_flags(bl)
    bl.set_defaults(func=cmd_baseline)
    return p, subs


def parse(argv: list[str]) -> argparse.Namespace:
    parser, subs = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse reports these with the top parser's usage: answer with the subcommand's
        subs[args.command].error(
            f"unrecognized arguments: {' '.join(extra)} (trainbench {args.command} --help lists its options)"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    choose(getattr(args, "kubeconfig", None), getattr(args, "context", None))
    try:
        return args.func(args)
    except CliError as e:
        return _error(str(e), e.code)
