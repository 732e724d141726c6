"""The fused CUDA kernels (csrc/persistent_*), persistent and launched once per step: every cell, option and dtype,
every output and every gradient, against a truth that shares no code with them: fusedrnn.reference in float64 on the
CPU (tests/layer_truth.py). In float32/float16/bfloat16 the bound is relative to torch.nn's own error (cuDNN, TF32
off) in the same dtype against that truth (parity.assert_as_close_to_float64); float64 within the parity tolerance.
The GEMM + pointwise loop (path=loop) is no truth: it shares csrc/cell_math.h with the kernels (that header's math is
checked on the host in test_cell_math_host.py). Needs a GPU (skipped elsewhere; the CPU covers the planner in
test_cuda_plan.py, the kernels' resource use in test_cuda_kernels_compile.py and the truth helpers in
test_layer_truth.py).

FUSEDRNN_CUDA_TUNE (read by the extension on every call) forces the path: `path=persistent` and `path=step` make a
refusal an error, so a test cannot silently pass on another path."""

from __future__ import annotations

import pytest
import torch
from devices import CUDA, NEEDS_CUDA_REASON
from layer_truth import LayerValues, layer_result, leaves_in, make_values, reference_layer, split, torch_nn_layer
from parity import TOLERANCES, assert_all_close, assert_as_close_to_float64

import fusedrnn
from fusedrnn import _extension
from fusedrnn.backends import native
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


def run_layer(values: LayerValues, reverse: bool, dtype: torch.dtype, tune: str, monkeypatch) -> dict:
    """The outputs and gradients (x, h0, c0, every weight) of one layer through the `cuda` backend under `tune`."""
    leaves = leaves_in(values, dtype, "cuda")
    x, h0, c0, weights = split(values, leaves)
    lengths = None if values.lengths is None else values.lengths.cuda()
    monkeypatch.setenv(TUNE_ENV, tune)
    layer = native.CUDA_BACKEND.layer(values.mode, x, h0, c0, LayerWeights(*weights, None), reverse, lengths)
    return layer_result([o for o in layer if o is not None], leaves, values.upstream)


def check_against_truth(mode, bias, reverse, lengths, dtype, shape, tune, monkeypatch):
    """The kernels under `tune` against the float64 CPU reference: float64 within the parity tolerance; other dtypes
    at most ERROR_RATIO times torch.nn's (cuDNN's) error in the same dtype, or within the dtype's floor (float32: atol +
    rtol * max|truth|; float16/bfloat16: atol, as test_native_backend's CUDA checks)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    values = make_values(mode, shape, bias, lengths)
    ours = run_layer(values, reverse, dtype, tune, monkeypatch)
    truth = reference_layer(values, reverse)
    ours_cpu = {key: value.cpu() for key, value in ours.items()}
    if dtype == torch.float64:
        assert_all_close(ours_cpu, truth, dtype)
        return
    theirs = {key: value.cpu() for key, value in torch_nn_layer(values, reverse, dtype, "cuda").items()}
    assert_as_close_to_float64(ours_cpu, theirs, truth, dtype, relative_floor=dtype == torch.float32)


@pytest.mark.parametrize("tuning", TUNINGS.values(), ids=TUNINGS.keys())
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("name", "mode", "bias", "reverse", "lengths"), CONFIGS, ids=[c[0] for c in CONFIGS])
def test_persistent_matches_reference(name, mode, bias, reverse, lengths, dtype, shape, tuning, monkeypatch):
    """See check_against_truth (exact fp32: TF32 off)."""
    check_against_truth(mode, bias, reverse, lengths, dtype, shape,
                        ",".join(filter(None, ["path=persistent", tuning])), monkeypatch)  # fmt: skip


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
    check_against_truth(mode, bias, reverse, lengths, dtype, shape, tuning, monkeypatch)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(("name", "mode", "bias", "reverse", "lengths"), CONFIGS, ids=[c[0] for c in CONFIGS])
def test_per_step_equals_persistent_bitwise(name, mode, bias, reverse, lengths, dtype, monkeypatch):
    """Same tiling, same kernel, same arithmetic order: one launch per step or one for the sequence gives the same
    bits (the state carried between launches in fp32 is the registers' value)."""
    tiling = "cluster=0,ctas=3,threads=128"
    values = make_values(mode, SHAPES["odd"], bias, lengths)
    persistent = run_layer(values, reverse, dtype, f"path=persistent,{tiling}", monkeypatch)
    per_step = run_layer(values, reverse, dtype, f"path=step,{tiling}", monkeypatch)
    for key in persistent:
        assert torch.equal(per_step[key], persistent[key]), key


def test_a_batch_beyond_the_persistent_grid_runs_per_step(monkeypatch):
    """LSTM bf16 N=256 H=1024: too many states for one CTA per SM, so the planner picks the per-step path (256 CTAs
    of 4 units), forward and backward."""
    sm_count = torch.cuda.get_device_properties(0).multi_processor_count
    for backward in (False, True):
        plan = native.cuda_plan("LSTM", 256, 1024, torch.bfloat16, backward=backward, sm_count=sm_count)
        assert plan.path == "step", plan.reason
    check_against_truth("LSTM", True, False, True, torch.bfloat16, (3, 256, 8, 1024), "path=step", monkeypatch)


@pytest.mark.parametrize("tuning", TUNINGS.values(), ids=TUNINGS.keys())
@pytest.mark.parametrize(("name", "mode", "bias", "reverse", "lengths"), CONFIGS, ids=[c[0] for c in CONFIGS])
def test_float32_on_tf32_tensor_cores(name, mode, bias, reverse, lengths, tuning, monkeypatch):
    """With torch.backends.cudnn.allow_tf32 (torch's default, as cuDNN's RNNs) float32 runs on TF32 tensor cores:
    10 mantissa bits like float16, so within float16's tolerance of float64."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    tune = ",".join(filter(None, ["path=persistent", tuning]))
    values = make_values(mode, SHAPES["aligned"], bias, lengths)
    ours = run_layer(values, reverse, torch.float32, tune, monkeypatch)
    truth = reference_layer(values, reverse)
    for key, expected in truth.items():
        torch.testing.assert_close(ours[key].cpu().double(), expected, **TOLERANCES[torch.float16],
                                   msg=lambda m, key=key: f"{key}: {m}")  # fmt: skip


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


#: The README's benchmark shape (LSTM bf16 N=16 H=768, REFERENCE.md §3: the grid path with W_hh resident on chip,
#: forward and backward) and the largest forward that the planner sends through a thread-block cluster (LSTM bf16
#: N=16 H=512, test_cuda_plan.py: CLUSTER_FITTING), each value-checked once against the float64 CPU truth; T=32 steps
#: let the error grow past the first few.
BENCHMARK_SHAPES = {
    "lstm_bf16_N16_H768_grid": ((32, 16, 768, 768), ""),
    "lstm_bf16_N16_H512_cluster": ((32, 16, 512, 512), "cluster=16"),
}


@pytest.mark.parametrize(("shape", "tuning"), BENCHMARK_SHAPES.values(), ids=BENCHMARK_SHAPES.keys())
def test_the_benchmark_shapes_match_the_reference(shape, tuning, monkeypatch):
    """Forced persistent (a refusal is an error): every output and gradient against the float64 CPU truth, bounded by
    cuDNN's bf16 error; the planner's choice of path for this GPU asserted first, so the test checks what it names."""
    N, H = shape[1], shape[3]
    properties = torch.cuda.get_device_properties(0)
    plan = native.cuda_plan("LSTM", N, H, torch.bfloat16, sm_count=properties.multi_processor_count,
                            max_cluster=16 if properties.major >= 9 else 0, tune=tuning)  # fmt: skip
    assert plan.path == "persistent", plan.reason
    assert (plan.tiling["cluster"] > 0) == ("cluster" in tuning), plan.tiling
    check_against_truth("LSTM", True, False, False, torch.bfloat16, shape,
                        ",".join(filter(None, ["path=persistent", tuning])), monkeypatch)  # fmt: skip


def test_forcing_a_path_that_does_not_fit_is_an_error(monkeypatch):
    with pytest.raises(RuntimeError, match="does not fit"):
        run_layer(make_values("GRU", SHAPES["odd"], True, False), False, torch.float32, "path=persistent,ctas=100000",
                  monkeypatch)  # fmt: skip
    with pytest.raises(RuntimeError, match="does not fit"):
        run_layer(make_values("GRU", SHAPES["odd"], True, False), False, torch.float32, "path=step,threads=100",
                  monkeypatch)  # fmt: skip


def test_bad_tuning_is_a_value_error(monkeypatch):
    with pytest.raises(ValueError, match="unknown key"):
        run_layer(make_values("GRU", SHAPES["odd"], True, False), False, torch.float32, "warps=4", monkeypatch)
