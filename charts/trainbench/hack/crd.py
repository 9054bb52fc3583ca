"""Write the BenchmarkRun CRD, generated from the API types (operator/api.py via operator/crd.py), to its two
shipped copies: the chart's crds/ and manifests/crd.yaml.

    python charts/trainbench/hack/crd.py          # rewrite both copies
    python charts/trainbench/hack/crd.py --check  # exit 1 when either copy is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

from generated import write_or_check  # charts/trainbench/hack/generated.py

from trainbench.operator.crd import crd_yaml

ROOT = Path(__file__).resolve().parents[3]
COPIES = [
    ROOT / "charts" / "trainbench" / "crds" / "benchmarkruns.trainbench.dev.yaml",
    ROOT / "manifests" / "crd.yaml",
]


def main(argv: list[str]) -> int:
    text = crd_yaml()
    return write_or_check(dict.fromkeys(COPIES, text), argv, "charts/trainbench/hack/crd.py")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
