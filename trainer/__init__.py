"""trainbench.trainer: the data plane (bench mode).

This package's __init__ and its `contract`, `specs` and `hardware` modules are torch-free so that the
operator can import them; everything that needs torch is imported lazily by the modules that use it.
"""
