"""Kernels of the fast path: document-masked attention over packed sequences, the chunked LM head."""
