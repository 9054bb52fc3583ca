"""`trainbench operator`: run the kopf operator in this process.

    trainbench operator [--namespace NS ...] [--all-namespaces] [--interval S] [--metrics-port P]
                        [--liveness-port P] [--log-format json|plain] [--print-crd]

Watches BenchmarkRuns in the given namespaces (or cluster-wide), serves its own /metrics and a liveness
endpoint (/healthz). Uses the in-cluster service account, else KUBECONFIG / ~/.kube/config.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import kopf
from pydantic import ValidationError

from trainbench.operator.api import PodTemplate
from trainbench.operator.controller import client, handlers, metrics
from trainbench.operator.crd import crd_yaml
from trainbench.trainer.contract import OPERATOR_METRICS_PORT

ENV_POD_ANNOTATIONS = "TRAINBENCH_TRAINER_POD_ANNOTATIONS"  # JSON object: annotations for every trainer pod
# JSON object: an api.PodTemplate (the chart's trainerPods values), the lowest-priority trainer pod settings
ENV_POD_DEFAULTS = "TRAINBENCH_TRAINER_POD_DEFAULTS"


def crd_text() -> str:
    return crd_yaml()  # generated from the API types (operator/crd.py)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("k8s_ref",):  # kopf puts the object reference on its records
            if hasattr(record, key):
                doc["object"] = getattr(record, key)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def _logging(fmt: str, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # kopf reports every successful timer run; a run reconciles every few seconds for its whole life
    logging.getLogger("kopf.objects").addFilter(lambda r: not r.getMessage().endswith("' succeeded."))
    for noisy in ("kubernetes.client.rest", "urllib3", "asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="trainbench operator", description=__doc__.split("\n\n")[0])
    p.add_argument("--namespace", "-n", action="append", default=[], help="namespace to watch (repeatable; globs ok)")
    p.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (cluster-wide)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between reconciliations of a run")
    p.add_argument("--metrics-port", type=int, default=OPERATOR_METRICS_PORT, help="/metrics port (0: any; -1: off)")
    p.add_argument("--liveness-port", type=int, default=8081, help="/healthz port (-1: off)")
    p.add_argument("--watch-timeout", type=int, default=300, help="server-side watch timeout, seconds")
    p.add_argument("--unschedulable-grace", type=float, default=None, help="seconds a pod may wait for a node")
    p.add_argument("--image-pull-grace", type=float, default=None, help="seconds of ImagePullBackOff before failing")
    p.add_argument("--scrape-timeout", type=float, default=2.0)
    p.add_argument("--log-format", choices=("json", "plain"), default="json")
    p.add_argument("--verbose", "-v", action="store_true")
    p.add_argument("--print-crd", action="store_true", help="print the BenchmarkRun CRD and exit")
    return p.parse_args(argv)


def pod_defaults(text: str) -> dict:
    """The trainer pod defaults from their JSON (checked as an api.PodTemplate); ValueError names the field."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ValueError(f"not JSON ({e})") from None
    try:
        template = PodTemplate.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top)"
        raise ValueError(f"{where}: {err['msg'].removeprefix('Value error, ')}") from None
    return template.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True, mode="json")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.print_crd:
        sys.stdout.write(crd_text())
        return 0
    if not args.namespace and not args.all_namespaces:
        print("trainbench operator: give --namespace NS (repeatable) or --all-namespaces", file=sys.stderr)
        return 2
    _logging(args.log_format, args.verbose)

    config = handlers.Config(
        interval=args.interval,
        scrape_timeout=args.scrape_timeout,
        watch_server_timeout=args.watch_timeout,
        watch_client_timeout=args.watch_timeout + 30,
    )
    annotations = os.environ.get(ENV_POD_ANNOTATIONS, "").strip()
    if annotations:
        try:
            config.pod_annotations = {str(k): str(v) for k, v in json.loads(annotations).items()}
        except (ValueError, AttributeError):
            print(f"trainbench operator: {ENV_POD_ANNOTATIONS} must be a JSON object", file=sys.stderr)
            return 2
    defaults = os.environ.get(ENV_POD_DEFAULTS, "").strip()
    if defaults:
        try:
            config.pod_defaults = pod_defaults(defaults)
        except ValueError as e:
            print(f"trainbench operator: {ENV_POD_DEFAULTS}: {e}", file=sys.stderr)
            return 2
    try:  # the API calls' client-side timeout (controller/client.py); a bad value is said now, once
        client.request_timeout()
    except client.ClientError as e:
        print(f"trainbench operator: {e}", file=sys.stderr)
        return 2
    if args.unschedulable_grace is not None:
        config.unschedulable_grace_s = args.unschedulable_grace
    if args.image_pull_grace is not None:
        config.image_pull_grace_s = args.image_pull_grace
    if args.metrics_port >= 0:
        port = metrics.serve(config.metrics, args.metrics_port)
        logging.getLogger("trainbench.operator").info("serving /metrics on port %d", port)
        print(f"TRAINBENCH_OPERATOR_METRICS_PORT {port}", flush=True)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, config)
    liveness = f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port >= 0 else None
    # No stop_flag: kopf stops on SIGTERM/SIGINT by itself. A threading.Event as stop_flag is waited for in an
    # executor thread, and asyncio's shutdown then joins that thread forever: the operator never exited on
    # SIGTERM (a Deployment rollout waited for the kill at terminationGracePeriodSeconds).
    kopf.run(
        registry=registry,
        standalone=True,
        namespaces=args.namespace,
        clusterwide=args.all_namespaces,
        liveness_endpoint=liveness,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
