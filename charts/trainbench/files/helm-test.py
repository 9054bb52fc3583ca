"""`helm test`: submit a one-step tiny BenchmarkRun, wait for the operator to finish it, print its report.

Runs in the operator image (templates/tests/benchmarkrun-test.yaml) with the run manifest in TRAINBENCH_TEST_RUN
(JSON) and the time limit in TRAINBENCH_TEST_TIMEOUT (seconds). Exit 0 when the run Succeeded and its report
ConfigMap `<run>-report` exists (the run is then deleted, its Jobs and ConfigMaps with it); else 1, leaving the
run for `kubectl describe benchmarkrun NAME`.
"""

import json
import os
import sys
import time

from kubernetes import client, config

GROUP, VERSION, PLURAL = "trainbench.dev", "v1alpha1", "benchmarkruns"
FINISHED = ("Succeeded", "PartiallyFailed", "Failed")


def main() -> int:
    run = json.loads(os.environ["TRAINBENCH_TEST_RUN"])
    timeout = float(os.environ.get("TRAINBENCH_TEST_TIMEOUT", "900"))
    interval = float(os.environ.get("TRAINBENCH_TEST_INTERVAL", "5"))
    ns, name = run["metadata"]["namespace"], run["metadata"]["name"]
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    runs, core = client.CustomObjectsApi(), client.CoreV1Api()
    try:  # a run left by an earlier failed test
        runs.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        while True:
            runs.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
            time.sleep(1)
    except client.ApiException as e:
        if e.status != 404:
            raise
    runs.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, run)
    print(f"benchmarkrun {ns}/{name} created; waiting up to {timeout:.0f}s for the operator", flush=True)
    deadline, phase, status = time.monotonic() + timeout, None, {}
    while time.monotonic() < deadline:
        status = runs.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name).get("status") or {}
        if status.get("phase") != phase:
            phase = status.get("phase")
            print(f"phase: {phase}", flush=True)
        if phase in FINISHED:
            break
        time.sleep(interval)
    else:
        print(
            f"FAIL: run {name} did not finish in {timeout:.0f}s (phase {phase}); kubectl -n {ns} describe benchmarkrun {name}"
        )
        return 1
    try:
        report = core.read_namespaced_config_map(f"{name}-report", ns).data or {}
    except client.ApiException as e:
        print(f"FAIL: run {name} is {phase} but its report ConfigMap {name}-report is missing ({e.status})")
        return 1
    print(report.get("report.md", ""), flush=True)
    if phase != "Succeeded":
        print(
            f"FAIL: run {name} ended {phase}: {status.get('message', '')}; kubectl -n {ns} describe benchmarkrun {name}"
        )
        return 1
    runs.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    print(f"PASS: run {name} Succeeded and wrote its report", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
