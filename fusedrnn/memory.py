"""The memory the `cpu` backend keeps between calls, and how to give it back.

A training call's saved activations and gate gradients, and a layer's output, are large (65 MB at T=100, N=64,
H=512 in float32). Fresh memory of that size costs its page faults on first touch, so the `cpu` backend keeps the
buffers of released tensors for the next call (csrc/cpu_buffers.h): up to 256 MB a process, of buffers from 1 MB.
"""

from __future__ import annotations

import torch

from . import _extension


def empty_cache() -> int:
    """Hand the buffers the `cpu` backend keeps for reuse back to the OS, as torch.cuda.empty_cache does for the CUDA
    caching allocator; returns their bytes. Tensors still in use are untouched (their memory is kept again when they
    are released); the next calls pay the page faults of fresh memory. A no-op returning 0 when the compiled
    operators were never loaded in this process."""
    if not _extension.loaded():
        return 0
    return int(torch.ops.fusedrnn.cpu_release_kept_buffers())
