"""`trainbench submit`: create a BenchmarkRun with a dated name from a suite template (the nightly CronJob's command).

    trainbench submit SUITE.yaml [--name-prefix P] [--namespace N] [--dry-run] [--now ISO]
                                 [--keep-succeeded N] [--keep-failed N]

SUITE.yaml is a BenchmarkRun manifest without a name (the Helm chart renders one per suite into a ConfigMap)
or a bare spec. The run is named `<prefix>-<YYYYMMDD-HHMM>` (UTC); the prefix defaults to the suite name. The
spec is checked with the operator's own parser and planner first, so a broken suite fails the CronJob with
a one-line reason instead of creating a run that cannot start. Uses the in-cluster service account, else
KUBECONFIG / ~/.kube/config. Exit codes: 0 created, 2 bad suite or arguments, 1 the API refused.

With --keep-succeeded / --keep-failed (the chart's suite history limits, like a CronJob's
successfulJobsHistoryLimit / failedJobsHistoryLimit), finished runs of the same suite beyond the newest N
Succeeded and N Failed/PartiallyFailed ones are deleted after the create; their Jobs, Services and ConfigMaps
go with them (owner references). Runs that have not finished are never touched.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import yaml

from trainbench.operator import clock
from trainbench.operator.api import API_VERSION, GROUP, KIND, PLURAL, VERSION, SpecError
from trainbench.operator.controller.client import Api, api_message, choose
from trainbench.operator.plan import plan

L_SUITE = "trainbench.dev/suite"
A_SUBMITTED_BY = "trainbench.dev/submitted-by"
A_SCHEDULED = "trainbench.dev/scheduled-at"
_DNS = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_PREFIX = 40  # the dated name stays well inside the 63 characters of a label value


class SuiteError(ValueError):
    pass


def load_suite(path: str | Path) -> dict:
    """The BenchmarkRun manifest of a suite file (a bare spec is wrapped into one)."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise SuiteError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise SuiteError(f"{path}: not YAML: {e}") from None
    if not isinstance(doc, dict):
        raise SuiteError(f"{path}: expected a BenchmarkRun manifest or spec, got {type(doc).__name__}")
    if "spec" not in doc and ("matrix" in doc or "pools" in doc):
        doc = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {}, "spec": doc}
    if doc.get("kind", KIND) != KIND or doc.get("apiVersion", API_VERSION) != API_VERSION:
        raise SuiteError(
            f"{path}: expected kind {KIND} ({API_VERSION}), got {doc.get('kind')} ({doc.get('apiVersion')})"
        )
    if not isinstance(doc.get("spec"), dict):
        raise SuiteError(f"{path}: the manifest has no spec")
    return doc


def run_name(prefix: str, now: datetime) -> str:
    return f"{prefix}-{now.astimezone(timezone.utc):%Y%m%d-%H%M}"


def build_run(suite: dict, *, prefix: str | None = None, now: datetime | None = None) -> dict:
    """The BenchmarkRun to create: the template with a dated name, suite label and spec.suite set.

    Raises SuiteError (bad prefix) or SpecError (naming the field) for anything the operator would refuse.
    """
    now = now or clock.now()
    run = copy.deepcopy(suite)
    run.setdefault("apiVersion", API_VERSION)
    run.setdefault("kind", KIND)
    meta = run.setdefault("metadata", {}) or {}
    run["metadata"] = meta
    spec = run["spec"]
    suite_name = spec.get("suite") or (meta.get("labels") or {}).get(L_SUITE) or prefix or meta.get("name")
    prefix = prefix or suite_name
    if not prefix:
        raise SuiteError("no name prefix: give --name-prefix, spec.suite or metadata.name")
    if not _DNS.match(prefix) or len(prefix) > MAX_PREFIX:
        raise SuiteError(f"name prefix {prefix!r} must be a DNS label of at most {MAX_PREFIX} characters")
    spec.setdefault("suite", suite_name or prefix)
    plan(spec)  # parse + plan: SpecError names the first bad field
    for key in ("generateName", "resourceVersion", "uid", "creationTimestamp"):
        meta.pop(key, None)
    meta["name"] = run_name(prefix, now)
    meta.setdefault("labels", {})[L_SUITE] = spec["suite"]
    meta.setdefault("annotations", {}).update(
        {A_SUBMITTED_BY: "trainbench submit", A_SCHEDULED: now.astimezone(timezone.utc).isoformat(timespec="seconds")}
    )
    run.pop("status", None)
    return run


def create(run: dict, namespace: str | None) -> tuple[str, str]:
    """Create the run; on a name clash (a manual run in the same minute) add seconds. Returns (ns, name)."""
    api = Api()
    ns = namespace or api.namespace
    run = copy.deepcopy(run)
    run["metadata"]["namespace"] = ns
    for attempt in range(3):
        try:
            api.create_custom(GROUP, VERSION, PLURAL, ns, run)
            return ns, run["metadata"]["name"]
        except api.client.ApiException as e:
            if e.status != 409 or attempt == 2:
                raise
            stamp = clock.now()
            base = re.sub(r"-\d{8}-\d{4}(\d{2})?(-\d+)?$", "", run["metadata"]["name"])
            run["metadata"]["name"] = f"{base}-{stamp:%Y%m%d-%H%M%S}" + (f"-{attempt}" if attempt else "")
    raise AssertionError("unreachable")


FAILED_PHASES = ("Failed", "PartiallyFailed")


def runs_to_prune(runs: list[dict], keep_succeeded: int | None, keep_failed: int | None) -> list[str]:
    """Names of finished runs beyond the newest `keep_succeeded` Succeeded and `keep_failed` failed ones (by
    completion time, else creation time); None keeps all of that kind. Unfinished runs are never listed."""
    groups: dict[str, list[dict]] = {"ok": [], "failed": []}
    for run in runs:
        phase = (run.get("status") or {}).get("phase")
        if phase == "Succeeded":
            groups["ok"].append(run)
        elif phase in FAILED_PHASES:
            groups["failed"].append(run)

    def newest_first(run: dict) -> tuple:
        meta, status = run.get("metadata") or {}, run.get("status") or {}
        return (status.get("completedAt") or meta.get("creationTimestamp") or "", meta.get("name", ""))

    out = []
    for kind, keep in (("ok", keep_succeeded), ("failed", keep_failed)):
        if keep is None:
            continue
        out += [r["metadata"]["name"] for r in sorted(groups[kind], key=newest_first, reverse=True)[keep:]]
    return sorted(out)


def prune(namespace: str, suite: str, keep_succeeded: int | None, keep_failed: int | None) -> list[str]:
    """Delete the suite's finished runs beyond the history limits (runs_to_prune); returns their names."""
    kube = Api()
    client, api = kube.client, kube.custom
    listed = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, label_selector=f"{L_SUITE}={suite}")
    names = runs_to_prune(listed.get("items") or [], keep_succeeded, keep_failed)
    for name in names:
        try:
            api.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, body=client.V1DeleteOptions(propagation_policy="Background")
            )
        except client.ApiException as e:
            if e.status != 404:  # already gone: fine
                raise
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trainbench submit", description=__doc__.split("\n\n")[0])
    p.add_argument("suite", help="suite file: a BenchmarkRun manifest without a name, or a bare spec")
    p.add_argument("--name-prefix", help="run name prefix (default: the suite name)")
    p.add_argument("--namespace", "-n", help="namespace (default: in-cluster namespace or the kubeconfig's)")
    p.add_argument("--dry-run", action="store_true", help="print the BenchmarkRun as YAML, create nothing")
    p.add_argument("--now", help="ISO time to date the name with (default: now, UTC)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG, in-cluster, ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument(
        "--keep-succeeded", type=int, metavar="N", help="delete Succeeded runs of the suite beyond the newest N"
    )
    p.add_argument("--keep-failed", type=int, metavar="N", help="delete failed runs of the suite beyond the newest N")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    choose(args.kubeconfig, args.context)
    for flag in ("keep_succeeded", "keep_failed"):
        if getattr(args, flag) is not None and getattr(args, flag) < 0:
            print(f"trainbench submit: --{flag.replace('_', '-')} must be 0 or more", file=sys.stderr)
            return 2
    try:
        now = clock.parse_time(args.now) if args.now else None
        if args.now and now is None:
            raise ValueError(f"--now {args.now!r} is not an ISO 8601 time")
        run = build_run(load_suite(args.suite), prefix=args.name_prefix, now=now)
    except (SuiteError, SpecError, ValueError) as e:
        where = "" if str(e).startswith(f"{args.suite}:") else f"{args.suite}: "  # load_suite names the file
        print(f"trainbench submit: {where}{' '.join(str(e).split())}", file=sys.stderr)
        return 2
    if args.dry_run:
        if args.namespace:
            run["metadata"]["namespace"] = args.namespace
        sys.stdout.write(yaml.safe_dump(run, sort_keys=False))
        return 0
    try:
        ns, name = create(run, args.namespace)
    except Exception as e:
        if getattr(e, "status", None) is not None and hasattr(e, "body"):  # the API answered (ApiException)
            print(f"trainbench submit: the API refused the run ({e.status}): {api_message(e)}", file=sys.stderr)
            return 1
        detail = " ".join(str(e).splitlines()[0].split()) if str(e) else e.__class__.__name__
        print(
            f"trainbench submit: cannot reach the cluster ({detail}): set KUBECONFIG or pass --kubeconfig FILE "
            "(in a pod: its service account is used)",
            file=sys.stderr,
        )
        return 1
    print(f"{PLURAL}.{GROUP}/{name} created in namespace {ns}", flush=True)
    if args.keep_succeeded is None and args.keep_failed is None:
        return 0
    try:
        pruned = prune(ns, run["metadata"]["labels"][L_SUITE], args.keep_succeeded, args.keep_failed)
    except Exception as e:  # the run is created; a failed cleanup is reported, not fatal for tonight's run
        print(f"trainbench submit: could not prune old runs: {getattr(e, 'reason', None) or e}", file=sys.stderr)
        return 0
    for old in pruned:
        print(f"{PLURAL}.{GROUP}/{old} deleted (suite history limit)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
