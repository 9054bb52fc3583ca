"""trainbench: nightly GPU training benchmarks, Kubernetes-native.

`trainbench.trainer` is the data plane (bench mode), `trainbench.operator` the control plane.
"""

__version__ = "0.1.0"
