"""The `cuda` backend's variants on a GPU: layer norm and zoneout run on the C++ loop with the per-step CUDA kernel
(step.h's element math, as the CPU's; layer norm one block per batch row over step.h's forward_row / backward_row),
IndRNN (with or without zoneout) on its whole-sequence kernel (indrnn_sequence.h; more in test_indrnn_cuda.py).
Every output and gradient against the oracle (fusedrnn.reference.rnn_layer) in float64 on the CPU, which shares no
code with the kernels; float32 is held to the float32 tolerance against that exact math, float16/bfloat16 to at most
ERROR_RATIO times the oracle's own error in that dtype (parity.assert_as_close_to_float64).

Not yet run on a GPU: everything here is `gpu` (selected by `pytest -m gpu`, skipped without CUDA). What the CPU
checks before that: the kernels compile for sm_80/sm_90 without spills (test_cuda_kernels_compile.py), the shared
row code runs on the CPU pass (test_variants_cpu.py), the scalar math on the host (test_cell_math_host.py)."""

from __future__ import annotations

import pytest
import torch
from devices import needs_cuda
from parity import TOLERANCES, assert_as_close_to_float64
from test_variants_cpu import CASES, LENGTHS, in_float64, make_layer, reference_layer, run

from fusedrnn import registry
from fusedrnn.reference import LayerNormWeights, ZoneoutMasks

LAYER_NORM_CASES = [case for case, (_, normed, _) in CASES.items() if normed]
#: Rows wider than one block's 256 threads (pointwise_cuda.cu: kRowThreads) take several strides per pass: the
#: issue's hidden sizes, at a small batch and sequence (the float64 oracle runs on the CPU).
WIDE_HIDDEN = [256, 1024]
WIDE_T, WIDE_N = 3, 3


def cuda_layer(mode, x, hx, cx, w, reverse, lengths, zoneout):
    backend = registry.get_backend("cuda")
    return backend.layer(mode, x, hx, cx, w, reverse, lengths, **({} if zoneout is None else {"zoneout": zoneout}))


def to_cuda(tensors: dict, norm, zoneout, dtype):
    """The layer's leaves, gains and masks as CUDA tensors of `dtype` (fresh leaves that record their gradients)."""

    def leaf(t):
        return None if t is None else t.detach().to("cuda", dtype).requires_grad_()

    moved = {k: leaf(v) for k, v in tensors.items()}
    gains = None if norm is None else LayerNormWeights(*(leaf(t) for t in norm))
    masks = None if zoneout is None else ZoneoutMasks(*(None if m is None else m.to("cuda", dtype) for m in zoneout))
    return moved, gains, masks


def on_cpu(result: dict) -> dict:
    return {key: None if value is None else value.detach().cpu() for key, value in result.items()}


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("bias, reverse", [(True, False), (False, True)], ids=["bias-fwd", "nobias-rev"])
@pytest.mark.parametrize("case", list(CASES))
def test_cuda_layer_matches_the_oracle(case, bias, reverse, lengths, dtype):
    mode, tensors, norm, zoneout = make_layer(case, torch.float64, bias, training=True)
    lengths = None if lengths is None else torch.tensor(lengths)
    expected = run(reference_layer, mode, tensors, norm, zoneout, reverse, lengths)
    actual = on_cpu(run(cuda_layer, mode, *to_cuda(tensors, norm, zoneout, dtype), reverse,
                        None if lengths is None else lengths.cuda()))  # fmt: skip
    assert actual.keys() == expected.keys()
    for key, e in expected.items():
        a = actual[key]
        assert (a is None) == (e is None), f"{key}: present in only one run"
        if e is not None:
            torch.testing.assert_close(a.double(), e, **TOLERANCES[dtype], msg=lambda m, key=key: f"{key}: {m}")


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("case", list(CASES))
def test_cuda_layer_low_precision_against_float64(case, dtype):
    """Every variant in float16/bfloat16 (storage in that dtype, math in float32), with lengths, in reverse: no
    further from the float64 oracle than the oracle run in that dtype on the GPU (as test_variants_cpu's for `cpu`)."""
    mode, tensors, norm, zoneout = make_layer(case, dtype, True, training=True)
    lengths = torch.tensor(LENGTHS)
    truth = run(reference_layer, mode, *in_float64(tensors, norm, zoneout), True, lengths)
    theirs = on_cpu(run(reference_layer, mode, *to_cuda(tensors, norm, zoneout, dtype), True, lengths.cuda()))
    ours = on_cpu(run(cuda_layer, mode, *to_cuda(tensors, norm, zoneout, dtype), True, lengths.cuda()))
    assert_as_close_to_float64(ours, theirs, truth, dtype, relative_floor=True)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("hidden", WIDE_HIDDEN)
@pytest.mark.parametrize("case", LAYER_NORM_CASES)
def test_cuda_layer_norm_at_wide_rows(case, hidden, dtype):
    """Layer norm at H = 256 / 1024 (a row of up to 4096 pre-activations over one block), with lengths, in reverse:
    fp32 within its tolerance of the float64 oracle, 16-bit no further from it than the oracle run in that dtype."""
    mode, tensors, norm, zoneout = make_layer(case, dtype, True, training=True, batch=WIDE_N, H=hidden, T=WIDE_T)
    lengths = torch.tensor(LENGTHS[:WIDE_N]).clamp(max=WIDE_T)
    truth = run(reference_layer, mode, *in_float64(tensors, norm, zoneout), True, lengths)
    ours = on_cpu(run(cuda_layer, mode, *to_cuda(tensors, norm, zoneout, dtype), True, lengths.cuda()))
    if dtype == torch.float32:
        for key, expected in truth.items():
            if expected is not None:
                torch.testing.assert_close(ours[key].double(), expected, **TOLERANCES[dtype],
                                           msg=lambda m, key=key: f"{key}: {m}")  # fmt: skip
        return
    theirs = on_cpu(run(reference_layer, mode, *to_cuda(tensors, norm, zoneout, dtype), True, lengths.cuda()))
    assert_as_close_to_float64(ours, theirs, truth, dtype, relative_floor=True)
