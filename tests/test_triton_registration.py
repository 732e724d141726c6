"""How the Triton ops are registered follows what the installed torch's `wrap_triton` does with this Triton's kernel
objects (a capability probe), never a version number: torch 2.11 rejects interpreter kernels, torch 2.14 hands them
back bare, and on a GPU both record real `@triton.jit` kernels, where the ops must be `triton_op`s (torch.compile then
sees the kernels)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from fusedrnn import triton_ops  # after the skip: importing it imports triton
from fusedrnn.backends.triton import interpreter_enabled

KERNEL = triton_ops.recurrence_forward_kernel
OPS = ("fusedrnn::triton_recurrence_forward", "fusedrnn::triton_recurrence_backward")


def test_probe_agrees_with_torch():
    try:
        traceable = torch.library.wrap_triton(KERNEL) is not KERNEL
    except RuntimeError:
        traceable = False
    assert triton_ops.KERNELS_TRACEABLE == traceable


@pytest.mark.skipif(not interpreter_enabled(), reason="the interpreter's kernel objects are what torch may reject")
def test_under_the_interpreter_kernels_launch_bare_from_opaque_ops():
    assert not triton_ops.KERNELS_TRACEABLE
    assert triton_ops.wrap_triton(KERNEL) is KERNEL
    from torch._library.triton import triton_ops_to_kernels

    assert not set(OPS) & set(triton_ops_to_kernels)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or interpreter_enabled(), reason="needs compiled Triton on a GPU")
def test_on_a_gpu_the_ops_are_triton_ops_that_name_their_kernels():
    from torch._library.triton import triton_ops_to_kernels

    assert triton_ops.KERNELS_TRACEABLE
    # triton_op finds an op's kernels by scanning its body for `wrap_triton(...)` calls: the launcher keeps that name.
    assert KERNEL in triton_ops_to_kernels[OPS[0]]
    assert triton_ops.recurrence_backward_kernel in triton_ops_to_kernels[OPS[1]]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or interpreter_enabled(), reason="needs compiled Triton on a GPU")
def test_on_a_gpu_the_slstm_ops_name_their_kernels():
    from torch._library.triton import triton_ops_to_kernels

    from fusedrnn import triton_slstm_ops

    assert triton_slstm_ops.slstm_forward_kernel in triton_ops_to_kernels["fusedrnn::triton_slstm_forward"]
    assert triton_slstm_ops.slstm_backward_kernel in triton_ops_to_kernels["fusedrnn::triton_slstm_backward"]
