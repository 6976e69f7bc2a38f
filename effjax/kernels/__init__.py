"""Pallas kernels (accelerator paths of the XLA implementations in effjax.models)."""
