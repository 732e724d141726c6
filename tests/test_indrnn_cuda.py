"""IndRNN on the `cuda` backend's whole-sequence kernel (csrc/indrnn_cuda.cu over csrc/indrnn_sequence.h; the planner
csrc/indrnn_plan.h): every output and gradient against the float64 oracle (fusedrnn.reference) for tanh / relu, with
zoneout, lengths (a padded packed batch), reverse, h0; fp32 within its tolerance, bf16/fp16 no further from the truth
than the oracle run in that dtype; the sequence kernel against the per-step loop (FUSEDRNN_CUDA_TUNE=path=loop), and
each direction of a call on a different path (the saved activations are the loop's); u's gradient bitwise equal run to
run under torch.use_deterministic_algorithms; stacked, bidirectional, packed modules against the oracle's.

Not yet run on a GPU: everything here needs one (`gpu` marker; skipped without CUDA). What the CPU checks before that:
the loops themselves on the host against float64 autograd (test_indrnn_sequence_host.py), the whole path but the CUDA
launch through the op (test_indrnn_sequence_cpu.py), the kernels compile for sm_80/sm_90 without spills
(test_cuda_kernels_compile.py), the planner's decisions (test_cuda_indrnn_plan.py)."""

from __future__ import annotations

import pytest
import torch
from devices import needs_cuda
from parity import TOLERANCES, assert_as_close_to_float64
from test_variants_cpu import LENGTHS, in_float64, make_layer, reference_layer, run
from test_variants_cuda import cuda_layer, on_cpu, to_cuda
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fusedrnn
from fusedrnn.backends.native import cuda_indrnn_plan

INDRNN_CASES = ["indrnn_tanh", "indrnn_relu", "zoneout_indrnn_relu"]
TUNE_ENV = "FUSEDRNN_CUDA_TUNE"


def assert_close_to(actual: dict, expected: dict, dtype: torch.dtype) -> None:
    assert actual.keys() == expected.keys()
    for key, e in expected.items():
        assert (actual[key] is None) == (e is None), f"{key}: present in only one run"
        if e is not None:
            torch.testing.assert_close(actual[key].double(), e.double(), **TOLERANCES[dtype],
                                       msg=lambda m, key=key: f"{key}: {m}")  # fmt: skip


@needs_cuda
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("case", INDRNN_CASES)
def test_sequence_kernel_fp32_matches_the_oracle(case, reverse, lengths, monkeypatch):
    monkeypatch.delenv(TUNE_ENV, raising=False)
    mode, tensors, norm, zoneout = make_layer(case, torch.float64, True, training=True)
    assert cuda_indrnn_plan(mode, tensors["x"].shape[1], tensors["hx"].shape[1]).sequence
    lengths = None if lengths is None else torch.tensor(LENGTHS)
    expected = run(reference_layer, mode, tensors, norm, zoneout, reverse, lengths)
    actual = on_cpu(run(cuda_layer, mode, *to_cuda(tensors, norm, zoneout, torch.float32), reverse,
                        None if lengths is None else lengths.cuda()))  # fmt: skip
    assert_close_to(actual, expected, torch.float32)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", INDRNN_CASES)
def test_sequence_kernel_low_precision_against_float64(case, dtype, monkeypatch):
    """16-bit storage, fp32 state and math, with lengths, in reverse: no further from the float64 oracle than the
    oracle run in that dtype on the GPU."""
    monkeypatch.delenv(TUNE_ENV, raising=False)
    mode, tensors, norm, zoneout = make_layer(case, dtype, True, training=True)
    lengths = torch.tensor(LENGTHS)
    truth = run(reference_layer, mode, *in_float64(tensors, norm, zoneout), True, lengths)
    theirs = on_cpu(run(reference_layer, mode, *to_cuda(tensors, norm, zoneout, dtype), True, lengths.cuda()))
    ours = on_cpu(run(cuda_layer, mode, *to_cuda(tensors, norm, zoneout, dtype), True, lengths.cuda()))
    assert_as_close_to_float64(ours, theirs, truth, dtype, relative_floor=True)


@needs_cuda
@pytest.mark.parametrize("paths", ["sequence", "loop", "sequence-then-loop", "loop-then-sequence"])
@pytest.mark.parametrize("case", INDRNN_CASES)
def test_paths_agree_and_share_the_saved_activations(case, paths, monkeypatch):
    """The forward on one path and the backward on either (the tune is read per call): the same results as the
    sequence kernel throughout, to fp32 rounding (the loop keeps h in storage, the kernel in registers)."""
    mode, tensors, norm, zoneout = make_layer(case, torch.float64, True, training=True)
    lengths = torch.tensor(LENGTHS).cuda()
    monkeypatch.delenv(TUNE_ENV, raising=False)
    baseline = on_cpu(run(cuda_layer, mode, *to_cuda(tensors, norm, zoneout, torch.float32), False, lengths))
    forward_path, _, backward_path = paths.partition("-then-")
    backward_path = backward_path or forward_path

    def use(path):
        if path == "loop":
            monkeypatch.setenv(TUNE_ENV, "path=loop")
        else:
            monkeypatch.delenv(TUNE_ENV, raising=False)

    def layer(*args):
        use(forward_path)
        outputs = cuda_layer(*args)
        use(backward_path)
        return outputs  # run() calls backward next

    actual = on_cpu(run(layer, mode, *to_cuda(tensors, norm, zoneout, torch.float32), False, lengths))
    assert_close_to(actual, baseline, torch.float32)


@needs_cuda
def test_u_gradient_is_deterministic(monkeypatch):
    """du is summed per row in a fixed order (no atomics): bitwise equal run to run, deterministic mode on
    (warn_only: torch would refuse cuBLAS without CUBLAS_WORKSPACE_CONFIG, which must be set before the process's
    first cuBLAS call; cuBLAS itself gives the same bits run to run on one stream and GPU)."""
    monkeypatch.delenv(TUNE_ENV, raising=False)
    mode, tensors, norm, zoneout = make_layer("indrnn_relu", torch.float64, True, training=True, batch=64, H=256,
                                              T=32)  # fmt: skip
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        first, second = (on_cpu(run(cuda_layer, mode, *to_cuda(tensors, norm, zoneout, torch.float32), False, None))
                         for _ in range(2))  # fmt: skip
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
    for key, value in first.items():
        assert torch.equal(value, second[key]), key


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_bidirectional_packed_module_matches_the_oracle(nonlinearity, dtype, monkeypatch):
    """fusedrnn.IndRNN, two layers, bidirectional, packed input (unsorted lengths) with h0, eval-mode zoneout (its
    rate): output, h_n and every gradient (x, h0, each layer's W_ih, biases, u) against the same module on the
    `reference` backend in float64 (fp32: its tolerance; bf16: no further than `reference` in bf16 on the GPU)."""
    monkeypatch.delenv(TUNE_ENV, raising=False)
    I, H, T, lengths = 5, 33, 7, torch.tensor([7, 3, 6, 1])
    N = len(lengths)
    kwargs = dict(num_layers=2, bidirectional=True, nonlinearity=nonlinearity, zoneout=0.3)
    torch.manual_seed(0)
    oracle = fusedrnn.IndRNN(I, H, **kwargs, backend="reference", dtype=torch.float64).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, N, I, generator=g, dtype=torch.float64)
    h0 = torch.randn(4, N, H, generator=g, dtype=torch.float64)
    upstream = (torch.randn(T, N, 2 * H, generator=g, dtype=torch.float64),
                torch.randn(4, N, H, generator=g, dtype=torch.float64))  # fmt: skip

    def result(backend, run_dtype, device):
        module = fusedrnn.IndRNN(I, H, **kwargs, backend=backend, dtype=run_dtype, device=device).eval()
        module.load_state_dict(oracle.state_dict())
        xs, h0s = (t.to(device, run_dtype).requires_grad_() for t in (x, h0))
        packed, h_n = module(pack_padded_sequence(xs, lengths, enforce_sorted=False), h0s)
        y = pad_packed_sequence(packed, total_length=T)[0]
        leaves = [xs, h0s, *module.parameters()]
        grads = torch.autograd.grad([y, h_n], leaves, [u.to(y) for u in upstream])
        names = ["x", "h0", *(name for name, _ in module.named_parameters())]
        out = {"y": y.detach(), "h_n": h_n.detach(), **{f"grad {n}": gr for n, gr in zip(names, grads)}}
        return on_cpu(out)

    truth = result("reference", torch.float64, "cpu")
    ours = result("cuda", dtype, "cuda")
    if dtype == torch.float32:
        assert_close_to(ours, truth, dtype)
    else:
        assert_as_close_to_float64(ours, result("reference", dtype, "cuda"), truth, dtype, relative_floor=True)
