"""The `cuda` backend's variants on a GPU: IndRNN and zoneout run on the C++ loop with the per-step CUDA kernel
(step.h's element math, as the CPU's); layer norm is refused with a reason (it needs row sums, which only the CPU pass
computes). Every output and gradient against the oracle (fusedrnn.reference.rnn_layer) in float64 on the CPU, which
shares no code with the kernels; the float32 run is held to the float32 tolerance against that exact math."""

from __future__ import annotations

import pytest
import torch
from devices import needs_cuda
from parity import TOLERANCES
from test_variants_cpu import CASES, LENGTHS, make_layer, reference_layer, run

from fusedrnn import registry
from fusedrnn.reference import ZoneoutMasks

CUDA_CASES = [case for case, (_, normed, _) in CASES.items() if not normed]
LAYER_NORM_CASES = [case for case, (_, normed, _) in CASES.items() if normed]


def cuda_layer(mode, x, hx, cx, w, reverse, lengths, zoneout):
    backend = registry.get_backend("cuda")
    return backend.layer(mode, x, hx, cx, w, reverse, lengths, **({} if zoneout is None else {"zoneout": zoneout}))


def to_cuda(tensors: dict, zoneout, dtype):
    """The layer's leaves and masks as CUDA tensors of `dtype` (fresh leaves that record their gradients)."""
    moved = {k: None if v is None else v.detach().to("cuda", dtype).requires_grad_() for k, v in tensors.items()}
    masks = None if zoneout is None else ZoneoutMasks(*(None if m is None else m.to("cuda", dtype) for m in zoneout))
    return moved, masks


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("bias, reverse", [(True, False), (False, True)], ids=["bias-fwd", "nobias-rev"])
@pytest.mark.parametrize("case", CUDA_CASES)
def test_cuda_layer_matches_the_oracle(case, bias, reverse, lengths, dtype):
    mode, tensors, norm, zoneout = make_layer(case, torch.float64, bias, training=True)
    lengths = None if lengths is None else torch.tensor(lengths)
    expected = run(reference_layer, mode, tensors, norm, zoneout, reverse, lengths)
    gpu_tensors, gpu_zoneout = to_cuda(tensors, zoneout, dtype)
    actual = run(cuda_layer, mode, gpu_tensors, norm, gpu_zoneout, reverse,
                 None if lengths is None else lengths.cuda())  # fmt: skip
    assert actual.keys() == expected.keys()
    for key, e in expected.items():
        a = actual[key]
        assert (a is None) == (e is None), f"{key}: present in only one run"
        if e is not None:
            torch.testing.assert_close(a.double().cpu(), e, **TOLERANCES[dtype], msg=lambda m, key=key: f"{key}: {m}")


@needs_cuda
@pytest.mark.parametrize("case", LAYER_NORM_CASES)
def test_cuda_op_refuses_layer_norm_instead_of_skipping_it(case):
    """Called directly (past the backend's refusal), the op raises: the per-step CUDA kernel has no row sums."""
    mode, tensors, norm, zoneout = make_layer(case, torch.float64, True, training=True)
    gpu_tensors, gpu_zoneout = to_cuda(tensors, zoneout, torch.float64)
    gpu_norm = type(norm)(*(None if t is None else t.detach().cuda() for t in norm))
    with pytest.raises(RuntimeError, match="layer norm has no CUDA kernel"):
        run(cuda_layer, mode, gpu_tensors, gpu_norm, gpu_zoneout, False, None)
