"""End to end: kubectl apply -> kopf operator -> Jobs -> real trainer processes -> results and report."""

from __future__ import annotations

import json

from conftest import wait_for

RUN = """
apiVersion: trainbench.dev/v1alpha1
kind: BenchmarkRun
metadata:
  name: e2e
spec:
  suite: e2e
  pools:
    - name: cpu-a
      nodeSelector: {trainbench.dev/test-pool: a}
      resourceName: amd.com/gpu
      image: trainer:test
      maxConcurrent: 2
      cpu: "1"
    - name: cpu-b
      nodeSelector: {trainbench.dev/test-pool: b}
      tolerations: [{key: gpu, operator: Exists, effect: NoSchedule}]
      image: trainer:test
      memory: 64Mi
  matrix:
    models: [tiny-qwen3]
    types: [sft-full, rl-full]
    seqLens: [128]
    pools: [cpu-a]
    include:
      - {model: tiny-qwen3, type: rl-lora, pool: cpu-a}
      - {model: tiny-llama, pool: cpu-b}
  lora: {rank: 4, alpha: 8}
  steps: 2
  warmupSteps: 1
  timeoutSeconds: 300
"""


def test_e2e(cluster, kubectl, operator):
    operator.start()
    kubectl.apply(RUN)

    def run():
        return kubectl.get_json("benchmarkrun", "e2e")

    wait_for(lambda: run().get("status", {}).get("total") == 4, 30, "4 cases planned", on_fail=operator.log)
    final = wait_for(
        lambda: (s := run().get("status", {})).get("phase") in ("Succeeded", "PartiallyFailed", "Failed") and s,
        240,
        "the run to end",
        on_fail=lambda: json.dumps(run().get("status"), indent=1) + operator.log(),
    )
    print(json.dumps(final, indent=1))
    assert final["phase"] == "PartiallyFailed"
