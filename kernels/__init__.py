"""Triton kernels of fusedrnn, installed as `fusedrnn.kernels` (filled by the Triton backend)."""
