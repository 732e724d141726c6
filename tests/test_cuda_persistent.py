"""The fused CUDA kernels (csrc/persistent_*), persistent and launched once per step, against the GEMM + pointwise
loop (itself tested against torch.nn) and against each other: every cell, option and dtype, every output and every
gradient. Needs a GPU (skipped elsewhere; the CPU covers the planner in test_cuda_plan.py and the kernels' resource
use in test_cuda_kernels_compile.py).

FUSEDRNN_CUDA_TUNE (read by the extension on every call) forces the path: `path=persistent` and `path=step` make a
refusal an error, so a test cannot silently pass on another path; `path=loop` is the GEMM + pointwise loop."""

from __future__ import annotations

import pytest
import torch
from devices import CUDA, NEEDS_CUDA_REASON
from parity import TOLERANCES

import fusedrnn
from fusedrnn import _extension
from fusedrnn.backends import native
from fusedrnn.reference import GATES
from fusedrnn.registry import LayerWeights

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason=NEEDS_CUDA_REASON)]
TUNE_ENV = "FUSEDRNN_CUDA_TUNE"

#: (id, mode, bias, reverse, lengths); projections always take the per-step path.
CONFIGS = [
    ("lstm", "LSTM", True, False, False),
    ("lstm_no_bias_reverse", "LSTM", False, True, False),
    ("lstm_lengths_reverse", "LSTM", True, True, True),
    ("gru", "GRU", True, False, False),
    ("gru_no_bias_lengths", "GRU", False, False, True),
    ("rnn_tanh_reverse", "RNN_TANH", True, True, False),
    ("rnn_relu_lengths", "RNN_RELU", True, False, True),
]
#: (T, N, I, H): odd sizes (scalar staging, partial tiles) and 16-byte-aligned rows (vector staging).
SHAPES = {"odd": (7, 3, 13, 37), "aligned": (9, 16, 24, 64)}
#: Tunings that reach the kernels' branches: the planner's choice (on an H100 the forward takes the cluster path for
#: these sizes), the grid path with one CTA per unit (K split over warps), with several units and K chunks per CTA,
#: with one CTA, and a cluster of 4 CTAs. cluster= only steers forward passes.
TUNINGS = {
    "planned": "",
    "grid": "cluster=0",
    "grid_few_ctas_small_chunks": "cluster=0,ctas=3,chunk=16,threads=128",
    "grid_one_cta": "cluster=0,ctas=1,threads=256",
    "cluster_of_4": "cluster=4,threads=128",
}
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(scope="module", autouse=True)
def extension():
    return _extension.load()


def run_layer(mode, bias, reverse, lengths, shape, dtype, tune, monkeypatch):
    """(outputs, gradients of x, h0, c0 and every weight) of one layer through the `cuda` backend under `tune`."""
    T, N, I, H = shape
    G = GATES[mode]
    generator = torch.Generator().manual_seed(0)

    def randn(*size):
        return (torch.randn(*size, generator=generator, dtype=torch.float64) * 0.5).cuda().to(dtype).requires_grad_()

    x, h0 = randn(T, N, I), randn(N, H)
    c0 = randn(N, H) if mode == "LSTM" else None
    weights = LayerWeights(randn(G * H, I), randn(G * H, H), randn(G * H) if bias else None,
                           randn(G * H) if bias else None, None)  # fmt: skip
    row_lengths = torch.randint(1, T + 1, (N,), generator=generator).cuda() if lengths else None
    monkeypatch.setenv(TUNE_ENV, tune)
    outputs = [o for o in native.CUDA_BACKEND.layer(mode, x, h0, c0, weights, reverse, row_lengths) if o is not None]
    upstream = [torch.randn(o.shape, generator=generator, dtype=torch.float64).cuda().to(dtype) for o in outputs]
    leaves = [t for t in (x, h0, c0, *weights) if t is not None]
    grads = torch.autograd.grad(outputs, leaves, upstream)
    return [o.detach() for o in outputs] + list(grads)


def max_errors(actual, expected):
    return [(a.double() - e.double()).abs().max().item() for a, e in zip(actual, expected)]


@pytest.mark.parametrize("tuning", TUNINGS.values(), ids=TUNINGS.keys())
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("name", "mode", "bias", "reverse", "lengths"), CONFIGS, ids=[c[0] for c in CONFIGS])
def test_persistent_matches_reference(name, mode, bias, reverse, lengths, dtype, shape, tuning, monkeypatch):
    """float64/float32 (exact fp32: TF32 off): within the dtype's tolerance of the float64 loop (itself tested against
    torch.nn); float16/bfloat16: at most twice the loop's own error against float64, or within the dtype's atol."""
    check_against_loop(mode, bias, reverse, lengths, dtype, shape, ",".join(filter(None, ["path=persistent", tuning])),
                       monkeypatch)  # fmt: skip


def check_against_loop(mode, bias, reverse, lengths, dtype, shape, tune, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    ours = run_layer(mode, bias, reverse, lengths, shape, dtype, tune, monkeypatch)
    truth = run_layer(mode, bias, reverse, lengths, shape, torch.float64, "path=loop", monkeypatch)
    if dtype in (torch.float64, torch.float32):
        for a, e in zip(ours, truth):
            torch.testing.assert_close(a.double(), e, **TOLERANCES[dtype])
        return
    loop = run_layer(mode, bias, reverse, lengths, shape, dtype, "path=loop", monkeypatch)
    for index, (error, baseline) in enumerate(zip(max_errors(ours, truth), max_errors(loop, truth))):
        assert error <= max(2 * baseline, TOLERANCES[dtype]["atol"]), (index, error, baseline)


#: Tunings of the per-step path: the planner's tiling, several units and K chunks per CTA, one unit per CTA (the
#: grid as wide as H, K split over warps).
STEP_TUNINGS = {
    "planned": "path=step",
    "few_ctas_small_chunks": "path=step,ctas=3,chunk=16,threads=128",
    "one_unit_per_cta": "path=step,ctas=100000",
}


@pytest.mark.parametrize("tuning", STEP_TUNINGS.values(), ids=STEP_TUNINGS.keys())
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("name", "mode", "bias", "reverse", "lengths"), CONFIGS, ids=[c[0] for c in CONFIGS])
def test_per_step_matches_reference(name, mode, bias, reverse, lengths, dtype, shape, tuning, monkeypatch):
    """The fused kernels launched once per step: as test_persistent_matches_reference."""
    check_against_loop(mode, bias, reverse, lengths, dtype, shape, tuning, monkeypatch)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(("name", "mode", "bias", "reverse", "lengths"), CONFIGS, ids=[c[0] for c in CONFIGS])
def test_per_step_equals_persistent_bitwise(name, mode, bias, reverse, lengths, dtype, monkeypatch):
    """Same tiling, same kernel, same arithmetic order: one launch per step or one for the sequence gives the same
    bits (the state carried between launches in fp32 is the registers' value)."""
    tiling = "cluster=0,ctas=3,threads=128"
    shape = SHAPES["odd"]
    persistent = run_layer(mode, bias, reverse, lengths, shape, dtype, f"path=persistent,{tiling}", monkeypatch)
    per_step = run_layer(mode, bias, reverse, lengths, shape, dtype, f"path=step,{tiling}", monkeypatch)
    for index, (a, b) in enumerate(zip(per_step, persistent)):
        assert torch.equal(a, b), index


def test_a_batch_beyond_the_persistent_grid_runs_per_step(monkeypatch):
    """LSTM bf16 N=256 H=1024: too many states for one CTA per SM, so the planner picks the per-step path (256 CTAs
    of 4 units), forward and backward."""
    sm_count = torch.cuda.get_device_properties(0).multi_processor_count
    for backward in (False, True):
        plan = native.cuda_plan("LSTM", 256, 1024, torch.bfloat16, backward=backward, sm_count=sm_count)
        assert plan.path == "step", plan.reason
    check_against_loop("LSTM", True, False, True, torch.bfloat16, (3, 256, 8, 1024), "path=step", monkeypatch)


@pytest.mark.parametrize("tuning", TUNINGS.values(), ids=TUNINGS.keys())
@pytest.mark.parametrize(("name", "mode", "bias", "reverse", "lengths"), CONFIGS, ids=[c[0] for c in CONFIGS])
def test_float32_on_tf32_tensor_cores(name, mode, bias, reverse, lengths, tuning, monkeypatch):
    """With torch.backends.cudnn.allow_tf32 (torch's default, as cuDNN's RNNs) float32 runs on TF32 tensor cores:
    10 mantissa bits like float16, so within float16's tolerance of float64."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    tune = ",".join(filter(None, ["path=persistent", tuning]))
    ours = run_layer(mode, bias, reverse, lengths, SHAPES["aligned"], torch.float32, tune, monkeypatch)
    truth = run_layer(mode, bias, reverse, lengths, SHAPES["aligned"], torch.float64, "path=loop", monkeypatch)
    for a, e in zip(ours, truth):
        torch.testing.assert_close(a.double(), e, **TOLERANCES[torch.float16])


@pytest.mark.parametrize("path", ["persistent", "step"])
def test_module_through_the_fused_paths(path, monkeypatch):
    """A stacked bidirectional GRU module (the layer loop around the kernels) against torch.nn in float64."""
    monkeypatch.setenv(TUNE_ENV, f"path={path}")
    torch.manual_seed(0)
    expected = torch.nn.GRU(5, 24, num_layers=2, bidirectional=True, dtype=torch.float64).cuda()
    actual = fusedrnn.GRU(5, 24, num_layers=2, bidirectional=True, dtype=torch.float64, backend="cuda").cuda()
    actual.load_state_dict(expected.state_dict())
    x = torch.randn(6, 4, 5, dtype=torch.float64, device="cuda", requires_grad=True)
    (y_e, h_e), (y_a, h_a) = expected(x), actual(x)
    torch.testing.assert_close(y_a, y_e, **TOLERANCES[torch.float64])
    torch.testing.assert_close(h_a, h_e, **TOLERANCES[torch.float64])
    grad = torch.randn_like(y_e)
    torch.testing.assert_close(torch.autograd.grad(y_a, x, grad)[0], torch.autograd.grad(y_e, x, grad)[0],
                               **TOLERANCES[torch.float64])  # fmt: skip


def test_the_benchmark_shape_runs_persistent(monkeypatch):
    """LSTM bf16 N=16 H=768 (REFERENCE.md §3) fits this GPU's shared memory forward and backward."""
    outputs = run_layer("LSTM", True, False, False, (4, 16, 32, 768), torch.bfloat16, "path=persistent", monkeypatch)
    assert all(torch.isfinite(o.float()).all() for o in outputs)


def test_forcing_a_path_that_does_not_fit_is_an_error(monkeypatch):
    with pytest.raises(RuntimeError, match="does not fit"):
        run_layer("GRU", True, False, False, SHAPES["odd"], torch.float32, "path=persistent,ctas=100000", monkeypatch)
    with pytest.raises(RuntimeError, match="does not fit"):
        run_layer("GRU", True, False, False, SHAPES["odd"], torch.float32, "path=step,threads=100", monkeypatch)


def test_bad_tuning_is_a_value_error(monkeypatch):
    with pytest.raises(ValueError, match="unknown key"):
        run_layer("GRU", True, False, False, SHAPES["odd"], torch.float32, "warps=4", monkeypatch)
