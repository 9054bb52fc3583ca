"""trainbench.trainer: the data plane (bench mode). Flow and module map: docs/trainer.md.

This package's __init__ and its `contract`, `specs`, `hardware`, `config`, `memory` and `parallel.layout` modules
are torch-free so that the operator can import them (tests/trainer/test_layout.py checks it); the bench modules
(`bench`, `train`, `generate`, `verify`, `autobatch`, ...) import torch at the top and are only imported by
`python -m trainbench.trainer` / `trainbench bench`.
"""
