"""Backends `cpu` and `cuda` (the compiled extension fusedrnn._C) against torch.nn and the reference.

Module-level parity reuses test_modules' grid (every cell, every option); the ops themselves get
torch.library.opcheck, gradcheck in float64, and bad-input checks. CUDA variants skip without a GPU.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import threading

import pytest
import torch

import fusedrnn
from fusedrnn import _build, _extension
from fusedrnn.backends import cpu_precision, native
from fusedrnn.registry import LayerWeights
from fusedrnn.reference import GATES
from devices import needs_cuda
from parity import (TOLERANCES, assert_all_close, assert_as_close_to_float64, assert_compiles_to_the_same,
                    forward_backward, leaf, twin)
from test_cells import CELLS as CELL_MODULES
from test_modules import CASES, CELLS, check_case, input_maker, make_pair

import zero_size_cases

ops = torch.ops.fusedrnn

#: Module cases: all of test_modules' grid (packed sequences included).
NATIVE_CASES = CASES
#: A short list for the slower low-precision and float32 runs.
FLOAT32_CASES = {name: CASES[name] for name in ("T7_N3", "no_bias", "3layers_bidir", "batch_first", "packed_bidir_states")}
#: Hidden size larger than the CPU vector width and not a multiple of it (covers partial lanes), odd batch.
WIDE_SEQ_LEN, WIDE_BATCH, WIDE_INPUT, WIDE_HIDDEN = 9, 5, 13, 37

GPU_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
LOW_PRECISION = [torch.float16, torch.bfloat16]
#: Low-precision CPU cases: every option once (lengths/packed, bidirectional, layers, states, no bias, batch_first).
LOW_PRECISION_CASES = {
    name: CASES[name] for name in ("T7_N3", "no_bias", "3layers_bidir", "batch_first", "packed_bidir_states", "unbatched")
}


@pytest.fixture(scope="module", autouse=True)
def extension():
    """The extension must load here (CI builds it); a missing build is a failure with its reason, not a skip."""
    return _extension.load()


def test_cpu_backend_available_and_cuda_reason_says_why():
    availability = fusedrnn.registry.availability()
    assert availability["cpu"] is None
    if not _extension.has_cuda_kernels():
        assert "built without CUDA" in availability["cuda"]
    elif not torch.cuda.is_available():
        assert availability["cuda"] == "no CUDA device"
    else:
        assert availability["cuda"] is None


@pytest.mark.skipif(_build.env_flag(_build.SKIP_CUDA_ENV), reason=f"{_build.SKIP_CUDA_ENV} is set")
def test_cuda_code_is_compiled_in_where_a_toolkit_exists():
    """CI has nvcc and a CUDA build of torch but no GPU: the CUDA sources must still have been compiled and linked."""
    if torch.version.cuda is None or _build.find_cuda_home() is None:
        pytest.skip("no CUDA toolkit or a CPU-only torch: the extension is built without CUDA here")
    assert _extension.has_cuda_kernels()


# ---------------------------------------------------------------------------------------------------------------
# Through the modules, against torch.nn


@pytest.mark.parametrize("case", NATIVE_CASES.values(), ids=NATIVE_CASES.keys())
@pytest.mark.parametrize("cell", CELLS, ids=[c[0] for c in CELLS])
def test_cpu_matches_torch_nn_float64(cell, case):
    check_case(cell, case, "cpu")


@pytest.mark.parametrize("case", FLOAT32_CASES.values(), ids=FLOAT32_CASES.keys())
@pytest.mark.parametrize("cell", CELLS, ids=[c[0] for c in CELLS])
def test_cpu_matches_torch_nn_float32(cell, case):
    check_case(cell, case, "cpu", dtype=torch.float32)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("cell", CELLS, ids=[c[0] for c in CELLS])
def test_cpu_wide_hidden_partial_vector_lanes(cell, dtype):
    """H = 37 is several CPU vectors plus a partial one (8 floats / 4 doubles per AVX2 vector, 16 / 8 per AVX-512 vector)."""
    _, fused_cls, torch_cls, extra = cell
    sizes = dict(input_size=WIDE_INPUT, hidden_size=WIDE_HIDDEN, num_layers=2, bidirectional=True, dtype=dtype)
    torch.manual_seed(0)
    expected = torch_cls(**sizes, **extra).eval()
    actual = twin(expected, fused_cls, "cpu", **sizes, **extra)
    x = torch.randn(WIDE_SEQ_LEN, WIDE_BATCH, WIDE_INPUT, dtype=dtype)

    def make_inputs():
        x_leaf = leaf(x)
        return (x_leaf,), {"input": x_leaf}

    assert_all_close(forward_backward(actual, make_inputs), forward_backward(expected, make_inputs), dtype)


def check_against_float64(cell, case, dtype, device):
    """float32: within the float32 tolerance of torch.nn run in float64 (cuDNN's float32 may use TF32, so it is no
    reference; TF32 is off in the CUDA test, which the `cuda` backend follows too). float16/bfloat16: see
    assert_as_close_to_float64."""
    actual, low = make_pair(cell, case, dtype, device, device)
    exact = copy.deepcopy(low).double()
    ours = forward_backward(actual, input_maker(low, case, dtype, device))
    truth = forward_backward(exact, input_maker(exact, case, torch.float64, device))
    if dtype == torch.float32:
        assert_all_close({k: v if v is None else v.double() for k, v in ours.items()}, truth, torch.float32)
        return
    theirs = forward_backward(low, input_maker(low, case, dtype, device))
    assert_as_close_to_float64(ours, theirs, truth, dtype, relative_floor=device == "cpu")


@needs_cuda
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("case", FLOAT32_CASES.values(), ids=FLOAT32_CASES.keys())
@pytest.mark.parametrize("cell", CELLS, ids=[c[0] for c in CELLS])
def test_cuda_against_float64(cell, case, dtype, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    check_against_float64(cell, case, dtype, "cuda")


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("case", LOW_PRECISION_CASES.values(), ids=LOW_PRECISION_CASES.keys())
@pytest.mark.parametrize("cell", CELLS, ids=[c[0] for c in CELLS])
def test_cpu_low_precision_against_float64(cell, case, dtype, cpu_half_compute):
    """bfloat16/float16 on the `cpu` backend (storage in that dtype, gate math in float32; GEMMs in float32 or in that
    dtype): every output and gradient against the float64 truth, no further from it than twice torch.nn's CPU result
    in that dtype."""
    check_against_float64(cell, case, dtype, "cpu")


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("cell", CELL_MODULES, ids=[c[0] for c in CELL_MODULES])
def test_cpu_low_precision_cells_against_float64(cell, dtype, cpu_half_compute):
    """LSTMCell, GRUCell, RNNCell in bfloat16/float16 on the `cpu` backend, as the layers above."""
    _, fused_cls, torch_cls, extra = cell
    torch.manual_seed(0)
    low = torch_cls(WIDE_INPUT, WIDE_HIDDEN, dtype=dtype, **extra)
    actual = fused_cls(WIDE_INPUT, WIDE_HIDDEN, dtype=dtype, backend="cpu", **extra)
    actual.load_state_dict(low.state_dict())
    exact = copy.deepcopy(low).double()
    x, h, c = (torch.randn(WIDE_BATCH, size, dtype=torch.float64) for size in (WIDE_INPUT, WIDE_HIDDEN, WIDE_HIDDEN))

    def inputs(dt):
        def make_inputs():
            leaves = {"input": leaf(x.to(dt)), "h": leaf(h.to(dt))}
            if fused_cls is fusedrnn.LSTMCell:
                leaves["c"] = leaf(c.to(dt))
                return (leaves["input"], (leaves["h"], leaves["c"])), leaves
            return (leaves["input"], leaves["h"]), leaves

        return make_inputs

    ours, theirs = forward_backward(actual, inputs(dtype)), forward_backward(low, inputs(dtype))
    truth = forward_backward(exact, inputs(torch.float64))
    assert_as_close_to_float64(ours, theirs, truth, dtype, relative_floor=True)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("case", list(zero_size_cases.CASES))
def test_cpu_low_precision_zero_sizes_match_torch_nn(case, dtype):
    """The zero-size cases (tests/zero_size_cases.py; float64 in test_dropin) in bfloat16/float16 on `cpu`."""
    assert zero_size_cases.run_case(case, "cpu", dtype) is None


@needs_cuda
@pytest.mark.parametrize("cell", CELLS, ids=[c[0] for c in CELLS])
def test_cuda_matches_torch_nn_float64(cell):
    check_case(cell, CASES["3layers_bidir"], "cuda", device="cuda")


def test_cpu_backend_refuses_other_dtypes_with_a_reason():
    call = fusedrnn.registry.RNNCall(mode="GRU", device_type="cpu", dtype=torch.int32, input_size=3, hidden_size=4)
    assert "not supported on cpu" in native.CPU_BACKEND.unsupported_reason(call)


# ---------------------------------------------------------------------------------------------------------------
# The CPU pointwise variants (csrc/pointwise_cpu_kernels.h), chosen at load time

#: ATEN_CPU_CAPABILITY value -> the variant it selects, in ATen's order (narrowest first).
CPU_VARIANTS = {"default": "DEFAULT", "avx2": "AVX2", "avx512": "AVX512"}
#: The tests each variant runs in its own process: float32/float64 partial lanes and low precision, every cell.
VARIANT_TESTS = "wide_hidden_partial_vector_lanes or (low_precision_against_float64 and 3layers_bidir)"
VARIANT_TIMEOUT_S = 900


def test_cpu_capability_is_atens():
    """The variant follows ATen's capability (ATEN_CPU_CAPABILITY included) where the x86 variants are built."""
    expected = torch.backends.cpu.get_cpu_capability() if _build.is_x86() else "DEFAULT"
    assert ops.cpu_capability() == expected


@pytest.mark.skipif(not _build.is_x86(), reason="the AVX2/AVX-512 variants exist on x86-64 only")
@pytest.mark.parametrize("env,variant", CPU_VARIANTS.items(), ids=CPU_VARIANTS.keys())
def test_each_cpu_variant_matches_in_its_own_process(env, variant):
    """ATEN_CPU_CAPABILITY=`env` selects `variant` (reported by cpu_capability) and that variant passes the parity
    tests. Variants wider than this CPU are skipped: ATen would pick them but the CPU cannot run them."""
    order = list(CPU_VARIANTS.values())
    if order.index(variant) > order.index(torch.backends.cpu.get_cpu_capability()):
        pytest.skip(f"this CPU runs up to {torch.backends.cpu.get_cpu_capability()}")
    child = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-k",
         f"cpu_capability_is_atens or {VARIANT_TESTS}"],
        capture_output=True, text=True, timeout=VARIANT_TIMEOUT_S, env={**os.environ, "ATEN_CPU_CAPABILITY": env},
    )  # fmt: skip
    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-2000:]
    probe = subprocess.run(
        [sys.executable, "-c", "import torch, fusedrnn._extension as e; e.load(); print(torch.ops.fusedrnn.cpu_capability())"],
        capture_output=True, text=True, timeout=VARIANT_TIMEOUT_S, env={**os.environ, "ATEN_CPU_CAPABILITY": env},
    )  # fmt: skip
    assert probe.stdout.strip().splitlines()[-1] == variant, probe.stderr[-2000:]


# ---------------------------------------------------------------------------------------------------------------
# The ops directly

#: (id, mode, projection, bias, reverse, per-row lengths)
OP_CONFIGS = [
    ("lstm", "LSTM", False, True, False, False),
    ("lstm_proj_reverse", "LSTM", True, True, True, False),
    ("lstm_no_bias", "LSTM", False, False, False, False),
    ("gru", "GRU", False, True, False, False),
    ("gru_no_bias_reverse", "GRU", False, False, True, False),
    ("rnn_tanh", "RNN_TANH", False, True, True, False),
    ("rnn_relu", "RNN_RELU", False, True, False, False),
    ("lstm_lengths", "LSTM", False, True, False, True),
    ("lstm_proj_lengths_reverse", "LSTM", True, True, True, True),
    ("gru_lengths_reverse", "GRU", False, True, True, True),
    ("rnn_tanh_lengths", "RNN_TANH", False, True, False, True),
]
OP_IDS = [c[0] for c in OP_CONFIGS]
OP_PARAMS = ("name", "mode", "projection", "bias", "reverse", "lengths")
T, N, I, H, P = 4, 3, 5, 6, 4
LENGTHS = [4, 1, 3]  # one full row, one of length 1, none sorted


def op_inputs(mode, projection, bias, dtype=torch.float64, device="cpu", requires_grad=False):
    """Arguments of layer_forward with random values (seeded)."""
    generator = torch.Generator().manual_seed(0)
    G, out = GATES[mode], P if projection else H

    def randn(*shape):
        t = torch.randn(*shape, generator=generator, dtype=torch.float64).to(device, dtype) * 0.5
        return t.requires_grad_(requires_grad)

    return [
        mode,
        randn(T, N, I),
        randn(N, out),
        randn(N, H) if mode == "LSTM" else None,
        randn(G * H, I),
        randn(G * H, out),
        randn(G * H) if bias else None,
        randn(G * H) if bias else None,
        randn(out, H) if projection else None,
    ]


def lengths_or_none(lengths: bool, device="cpu"):
    return torch.tensor(LENGTHS, device=device) if lengths else None


def backward_inputs(mode, projection, bias, reverse, lengths=False):
    args = op_inputs(mode, projection, bias)
    y, h_n, c_n, workspace = ops.layer_forward(*args, reverse, True, lengths_or_none(lengths))
    _, x, h0, c0, w_ih, w_hh, _, _, w_hr = args
    grad_c_n = torch.randn_like(c_n) if mode == "LSTM" else None
    return [mode, torch.randn_like(y), torch.randn_like(h_n), grad_c_n, x, h0, c0, w_ih, w_hh, w_hr, y, workspace,
            reverse, bias, lengths_or_none(lengths)]  # fmt: skip


def backend_layer(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, lengths):
    """One layer through the `cpu` backend (which also zeroes the outputs past each row's length)."""
    weights = LayerWeights(w_ih, w_hh, b_ih, b_hh, w_hr)
    return native.CPU_BACKEND.layer(mode, x, h0, c0, weights, reverse, lengths)


@pytest.mark.parametrize(OP_PARAMS, OP_CONFIGS, ids=OP_IDS)
def test_opcheck_layer_forward(name, mode, projection, bias, reverse, lengths):
    args = op_inputs(mode, projection, bias, requires_grad=True)
    torch.library.opcheck(ops.layer_forward.default, (*args, reverse, True, lengths_or_none(lengths)))


@pytest.mark.parametrize(OP_PARAMS, OP_CONFIGS, ids=OP_IDS)
def test_opcheck_layer_backward(name, mode, projection, bias, reverse, lengths):
    inputs = backward_inputs(mode, projection, bias, reverse, lengths)
    torch.library.opcheck(ops.layer_backward.default, tuple(inputs))


@pytest.mark.parametrize(OP_PARAMS, OP_CONFIGS, ids=OP_IDS)
def test_gradcheck_float64(name, mode, projection, bias, reverse, lengths):
    mode_, *tensors = op_inputs(mode, projection, bias, requires_grad=True)

    def outputs(*tensors):
        y, h_n, c_n = backend_layer(mode_, *tensors, reverse, lengths_or_none(lengths))
        return (y, h_n, c_n) if mode == "LSTM" else (y, h_n)

    assert torch.autograd.gradcheck(outputs, tensors)


@pytest.mark.parametrize(OP_PARAMS, OP_CONFIGS, ids=OP_IDS)
def test_layer_matches_reference(name, mode, projection, bias, reverse, lengths):
    args = op_inputs(mode, projection, bias)
    actual = backend_layer(*args, reverse, lengths_or_none(lengths))
    expected = fusedrnn.reference.rnn_layer(*args, reverse=reverse, lengths=lengths_or_none(lengths))
    for a, e in zip(actual, expected):
        assert (a is None) == (e is None)
        if e is not None:
            torch.testing.assert_close(a, e, **TOLERANCES[torch.float64])


#: A batch so large that the CPU's input-projection and weight-gradient GEMMs split the sequence into chunks of
#: 1024 // 300 = 3 steps (csrc/pointwise_cpu.cpp: kGemmRows), the last one partial.
CHUNKED_SEQ_LEN, CHUNKED_BATCH = 7, 300


def check_layer_against_reference(cell, seq_len, batch, reverse, lengths, input_size=I, hidden_size=H,
                                  dtype=torch.float64):
    """One `cpu` layer call against fusedrnn.reference: every output and every gradient. float64: within the parity
    tolerance; float32 (these sizes run long GEMM sums, whose rounding a fixed tolerance would have to allow for):
    against the reference in float64, at most ERROR_RATIO times the reference's own float32 error or within the float32
    tolerance relative to the largest value (the GEMMs block their sums differently from torch's matmul)."""
    _, _, torch_cls, extra = cell
    torch.manual_seed(0)
    module = torch_cls(input_size, hidden_size, dtype=torch.float64, **extra)
    generator = torch.Generator().manual_seed(1)
    values = [torch.randn(seq_len, batch, input_size, generator=generator, dtype=torch.float64),
              *[p.detach() for p in module.parameters()]]  # fmt: skip
    w_hh = values[2]
    values.insert(1, torch.randn(batch, w_hh.shape[1], generator=generator, dtype=torch.float64))  # h0
    c0 = torch.randn(batch, hidden_size, generator=generator, dtype=torch.float64) if module.mode == "LSTM" else None
    row_lengths = torch.randint(1, seq_len + 1, (batch,), generator=generator) if lengths else None

    def run(layer, run_dtype):
        x, h0, *weights = [v.to(run_dtype).requires_grad_(i != 1) for i, v in enumerate(values)]
        w_ih, w_hh, b_ih, b_hh, *w_hr = weights
        args = (x, h0, None if c0 is None else c0.to(run_dtype), w_ih, w_hh, b_ih, b_hh, w_hr[0] if w_hr else None)
        outputs = [o for o in layer(module.mode, *args, reverse, row_lengths) if o is not None]
        upstream_generator = torch.Generator().manual_seed(2)
        upstream = [torch.randn(o.shape, generator=upstream_generator, dtype=torch.float64).to(o) for o in outputs]
        grads = torch.autograd.grad(outputs, [x, *weights], upstream)
        return {f"{kind}[{i}]": t.detach() for kind, ts in (("output", outputs), ("grad", grads))
                for i, t in enumerate(ts)}  # fmt: skip

    def reference_layer(mode, *args):
        return fusedrnn.reference.rnn_layer(mode, *args[:8], reverse=args[8], lengths=args[9])

    actual = run(backend_layer, dtype)
    if dtype == torch.float64:
        assert_all_close(actual, run(reference_layer, dtype), dtype)
    else:
        assert_as_close_to_float64(actual, run(reference_layer, dtype), run(reference_layer, torch.float64), dtype,
                                   relative_floor=True)  # fmt: skip


@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell", CELLS, ids=[c[0] for c in CELLS])
def test_cpu_chunked_projection_matches_reference(cell, reverse, lengths):
    check_layer_against_reference(cell, CHUNKED_SEQ_LEN, CHUNKED_BATCH, reverse, lengths)


#: Sizes at which each step's recurrent GEMM (forward h W_hh^T, backward dg W_hh) is split into column blocks over
#: two threads, the last block partial (csrc/pointwise_cpu.cpp: step_gemm_cpu), for every cell (with a projection only
#: the gate GEMM: its [P, H] one is too small to split).
SPLIT_BATCH, SPLIT_INPUT, SPLIT_HIDDEN = 64, 24, 200
#: Below / above the length at which the loop copies W_hh^T contiguous (loop_views.h: kMinStepsToTransposeWeights),
#: so the GEMM sees both a transposed view and a row-major matrix.
SPLIT_SEQ_LENS = {"transposed_view": 5, "contiguous": 17}


@pytest.fixture
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("seq_len", SPLIT_SEQ_LENS.values(), ids=SPLIT_SEQ_LENS.keys())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("cell", CELLS, ids=[c[0] for c in CELLS])
def test_cpu_split_step_gemm_matches_reference(two_threads, cell, dtype, seq_len, lengths):
    check_layer_against_reference(cell, seq_len, SPLIT_BATCH, False, lengths, SPLIT_INPUT, SPLIT_HIDDEN, dtype)


#: Either side of the length from which float32 runs its GEMMs through oneDNN against weights reordered once per call
#: (csrc/gemm_cpu.cpp: cpu_prepared_gemm; loop_views.h: kMinStepsToTransposeWeights), in both directions and with
#: lengths (the backward's dh carried for finished rows); float64 always takes the BLAS path. The sizes make every
#: cell's step and input projection large enough for oneDNN (gemm_cpu.cpp: kMinPreparedMacs, 2^20 multiply-adds:
#: Elman's step 4 x 512 x 512 is exactly that, its projection 64 x 512 x 32 just above).
PREPARED_SEQ_LENS = {"blas": 15, "prepared": 16}
PREPARED_BATCH, PREPARED_INPUT, PREPARED_HIDDEN = 4, 32, 512
#: A layer whose products all stay below kMinPreparedMacs even at T=16 (step 4 x 256 x 64, projection 64 x 256 x 32).
SMALL_HIDDEN = 64


@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("seq_len", PREPARED_SEQ_LENS.values(), ids=PREPARED_SEQ_LENS.keys())
@pytest.mark.parametrize("cell", CELLS, ids=[c[0] for c in CELLS])
def test_cpu_prepared_weights_match_reference(cell, seq_len, reverse, lengths):
    check_layer_against_reference(cell, seq_len, PREPARED_BATCH, reverse, lengths, PREPARED_INPUT, PREPARED_HIDDEN,
                                  torch.float32)  # fmt: skip


HALF_COMPUTE_CASES = {
    # (storage dtype, steps, the CPU's native 16-bit dtypes, FUSEDRNN_CPU_HALF_COMPUTE) -> compute dtype
    "bf16_avx512_no_bf16": (torch.bfloat16, 100, frozenset(), "auto", torch.float32),
    "bf16_unknown_length": (torch.bfloat16, None, frozenset(), "auto", torch.float32),
    "bf16_short": (torch.bfloat16, cpu_precision.MIN_STEPS_TO_UPCAST[torch.bfloat16] - 1, frozenset(), "auto",
                   torch.bfloat16),  # fmt: skip
    "bf16_avx512_bf16": (torch.bfloat16, 100, frozenset({torch.bfloat16}), "auto", torch.bfloat16),
    "fp16_without_fp16": (torch.float16, cpu_precision.MIN_STEPS_TO_UPCAST[torch.float16], frozenset({torch.bfloat16}),
                          "auto", torch.float32),  # fmt: skip
    "fp16_cell": (torch.float16, 1, frozenset(), "auto", torch.float16),
    "fp16_amx_fp16": (torch.float16, 100, frozenset({torch.bfloat16, torch.float16}), "auto", torch.float16),
    "forced_float32": (torch.bfloat16, 1, frozenset({torch.bfloat16}), "float32", torch.float32),
    "forced_storage": (torch.float16, 100, frozenset(), "storage", torch.float16),
    "float32_untouched": (torch.float32, 100, frozenset(), "float32", torch.float32),
    "float64_untouched": (torch.float64, 100, frozenset(), "storage", torch.float64),
}


@pytest.mark.parametrize(("dtype", "steps", "native", "choice", "expected"), HALF_COMPUTE_CASES.values(),
                         ids=HALF_COMPUTE_CASES.keys())  # fmt: skip
def test_cpu_half_compute_dtype(dtype, steps, native, choice, expected, monkeypatch):
    monkeypatch.setenv(cpu_precision.ENV_VAR, choice)
    assert cpu_precision.compute_dtype(dtype, steps, native) == expected


def test_cpu_half_compute_rejects_an_unknown_choice(monkeypatch):
    monkeypatch.setenv(cpu_precision.ENV_VAR, "fp8")
    with pytest.raises(ValueError, match="FUSEDRNN_CPU_HALF_COMPUTE must be one of auto, float32, storage, got 'fp8'"):
        fusedrnn.GRU(4, 4, backend="cpu", dtype=torch.bfloat16)(torch.randn(2, 1, 4, dtype=torch.bfloat16))


def test_cpu_half_compute_keeps_the_callers_dtypes(cpu_half_compute):
    """Upcast or not, outputs, states and every gradient come back in the storage dtype."""
    layer = fusedrnn.LSTM(6, 5, num_layers=2, backend="cpu", dtype=torch.bfloat16)
    x = torch.randn(3, 2, 6, dtype=torch.bfloat16, requires_grad=True)
    y, (h, c) = layer(x)
    (y.float().sum() + h.float().sum() + c.float().sum()).backward()
    assert {t.dtype for t in (y, h, c, x.grad, *(p.grad for p in layer.parameters()))} == {torch.bfloat16}


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN: BLAS only")
@pytest.mark.parametrize(
    ("seq_len", "hidden", "dtype", "prepared"),
    [
        (16, PREPARED_HIDDEN, torch.float32, True),
        (15, PREPARED_HIDDEN, torch.float32, False),
        (16, SMALL_HIDDEN, torch.float32, False),
        (16, PREPARED_HIDDEN, torch.float64, False),
        # bfloat16: natively where the CPU has AVX512-BF16, else upcast to float32 (cpu_precision), prepared either way
        (16, PREPARED_HIDDEN, torch.bfloat16, True),
        (16, PREPARED_HIDDEN, torch.float16, cpu_precision.compute_dtype(torch.float16, 16) == torch.float32),
    ],
    ids=["float32_long", "float32_short", "float32_small", "float64", "bfloat16", "float16"],
)
def test_cpu_prepared_gemm_runs_where_it_should(seq_len, hidden, dtype, prepared, monkeypatch):
    """The dispatcher records the oneDNN operators the loop calls: present exactly where the path applies. The loop
    is forced: at this batch a float32 LSTM would otherwise run the fused kernels (tests/test_cpu_fused_lstm.py)."""
    monkeypatch.setenv("FUSEDRNN_CPU_LSTM", "loop")
    layer = fusedrnn.LSTM(PREPARED_INPUT, hidden, backend="cpu", dtype=dtype)
    x = torch.randn(seq_len, PREPARED_BATCH, PREPARED_INPUT, dtype=dtype, requires_grad=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        layer(x)[0].sum().backward()
    names = {event.name for event in profile.events()}
    assert ("mkldnn::_linear_pointwise" in names) == prepared
    assert ("mkldnn::_reorder_linear_weight" in names) == prepared


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN: BLAS only")
@pytest.mark.parametrize(("seq_len", "reordered"), [
    # one chunk of steps (csrc/loop_views.h: chunk_steps, 1024 rows): W_ih is multiplied plain; the backward's dx is
    # too small to pay for a copy of W_ih^T (gemm_cpu.cpp: kMinMacsToTransposeForOneUse) and stays with BLAS
    (16, {(4 * PREPARED_HIDDEN, PREPARED_HIDDEN), (PREPARED_HIDDEN, 4 * PREPARED_HIDDEN)}),
    # two chunks: W_ih and W_ih^T reordered too (kMinUsesToReorder)
    (300, {(4 * PREPARED_HIDDEN, PREPARED_HIDDEN), (PREPARED_HIDDEN, 4 * PREPARED_HIDDEN),
           (4 * PREPARED_HIDDEN, PREPARED_INPUT), (PREPARED_INPUT, 4 * PREPARED_HIDDEN)}),
], ids=["one_chunk", "two_chunks"])  # fmt: skip
def test_cpu_prepared_gemm_reorders_only_weights_used_more_than_once(seq_len, reordered, monkeypatch):
    """oneDNN's weight reorder pays for a weight that several products use (W_hh and W_hh^T: every step); a single
    product packs a plain weight itself. The dispatcher records the shapes of the weights the loop reorders."""
    monkeypatch.setenv("FUSEDRNN_CPU_LSTM", "loop")
    layer = fusedrnn.LSTM(PREPARED_INPUT, PREPARED_HIDDEN, backend="cpu")
    x = torch.randn(seq_len, PREPARED_BATCH, PREPARED_INPUT, requires_grad=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as profile:
        layer(x)[0].sum().backward()
    shapes = {tuple(e.input_shapes[0]) for e in profile.events() if e.name == "mkldnn::_reorder_linear_weight"}
    assert shapes == reordered


def thread_cpu_seconds() -> dict[int, float]:
    """CPU time (user + system, seconds) of every thread of this process, by thread id (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        seconds[int(task)] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (stat fields 14 and 15)
    return seconds


#: The loops whose threading differs: the dense one, and the multi-head ones (sLSTM's own loop, the dense loop's
#: headwise GEMMs), whose per-head GEMMs run in torch's parallel regions.
ONE_THREAD_LAYERS = {
    "lstm": lambda dtype: fusedrnn.LSTM(64, 128, backend="cpu", dtype=dtype),
    "gru_heads": lambda dtype: fusedrnn.GRU(64, 128, num_heads=4, backend="cpu", dtype=dtype),
    "slstm_heads": lambda dtype: fusedrnn.sLSTM(64, 128, num_heads=4, backend="cpu", dtype=dtype),
}


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads per-thread CPU time from Linux /proc")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("make_layer", ONE_THREAD_LAYERS.values(), ids=ONE_THREAD_LAYERS.keys())
def test_cpu_backend_honours_one_torch_thread(make_layer, dtype):
    """With torch.set_num_threads(1) all of the loop's work (GEMMs, pointwise pass) runs on the calling thread: no
    thread pool of ours, and torch's OpenMP workers (started by earlier multi-threaded calls) stay idle."""
    previous = torch.get_num_threads()
    layer = make_layer(dtype)
    x = torch.randn(40, 64, 64, dtype=dtype, requires_grad=True)
    try:
        torch.set_num_threads(2)
        layer(x)[0].sum().backward()  # let the OpenMP pool exist, as it does in a real process
        torch.set_num_threads(1)
        main = threading.get_native_id()
        before = thread_cpu_seconds()
        for _ in range(20):
            layer(x)[0].sum().backward()
        after = thread_cpu_seconds()
    finally:
        torch.set_num_threads(previous)
    others = sum(after[t] - before.get(t, 0.0) for t in after if t != main)
    ours = after[main] - before[main]
    assert ours > 0.05, "the workload is too small to tell"
    assert others < 0.1 * ours, f"other threads used {others:.2f} s of CPU next to the calling thread's {ours:.2f} s"


@pytest.mark.parametrize(OP_PARAMS, OP_CONFIGS, ids=OP_IDS)
def test_inference_without_workspace_gives_the_same_outputs(name, mode, projection, bias, reverse, lengths):
    args = op_inputs(mode, projection, bias)
    saved = ops.layer_forward(*args, reverse, True, lengths_or_none(lengths))
    unsaved = ops.layer_forward(*args, reverse, False, lengths_or_none(lengths))
    assert unsaved[3].numel() == 0
    for a, e in zip(unsaved[:3], saved[:3]):
        torch.testing.assert_close(a, e, rtol=0, atol=0)
    torch.library.opcheck(ops.layer_forward.default, (*args, reverse, False, lengths_or_none(lengths)))


def test_backward_without_workspace_is_a_clear_error():
    inputs = backward_inputs("GRU", False, True, False)
    inputs[11] = torch.empty(0, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="save_workspace=True"):
        ops.layer_backward(*inputs)


def test_torch_compile_fullgraph_forward_and_backward():
    mode, *tensors = op_inputs("LSTM", True, True, dtype=torch.float32, requires_grad=True)

    def loss(*tensors):
        y, h_n, c_n, _ = ops.layer_forward(mode, *tensors, False)
        return y.square().sum() + h_n.sum() + c_n.sum()

    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    expected = torch.autograd.grad(loss(*tensors), [t for t in tensors if t is not None])
    actual = torch.autograd.grad(compiled(*tensors), [t for t in tensors if t is not None])
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, **TOLERANCES[torch.float32])


def test_torch_compile_fullgraph_through_the_module():
    torch.manual_seed(0)
    module = fusedrnn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=P, backend="cpu")
    assert_compiles_to_the_same(module, torch.randn(T, N, I, requires_grad=True))


# ---------------------------------------------------------------------------------------------------------------
# Bad input: a clear error, never a crash


def replaced(args, index, value):
    args = list(args)
    args[index] = value
    return args


BAD_INPUTS = {
    # id: (argument index in op_inputs, how to break it, exception type, message)
    "device_mix": (2, lambda t: t.to("meta"), RuntimeError, "same device"),
    "non_contiguous_weight": (4, lambda t: t.t().contiguous().t(), RuntimeError, "contiguous"),
    "non_contiguous_input": (1, lambda t: t.transpose(0, 1).contiguous().transpose(0, 1), RuntimeError, "contiguous"),
    "wrong_h0_shape": (2, lambda t: t[:, :-1].contiguous(), RuntimeError, "h0 has shape"),
    "wrong_w_ih_shape": (4, lambda t: t[:-1].contiguous(), RuntimeError, "w_ih has shape"),
    "wrong_bias_shape": (6, lambda t: t[:-1].contiguous(), RuntimeError, "b_ih has shape"),
    "mixed_dtype": (3, lambda t: t.float(), RuntimeError, "same dtype"),
    "x_2d": (1, lambda t: t[0], RuntimeError, "3-D"),
    "empty_sequence": (1, lambda t: t[:0], RuntimeError, "empty sequence"),
}


@pytest.mark.parametrize(("index", "breaker", "error", "match"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_a_clear_error(index, breaker, error, match):
    args = op_inputs("LSTM", False, True)
    with pytest.raises(error, match=match):
        ops.layer_forward(*replaced(args, index, breaker(args[index])), False)


@pytest.mark.parametrize("dtype", [torch.int32, torch.complex64], ids=str)
def test_unsupported_dtype_on_cpu_is_not_implemented(dtype):
    args = [a.to(dtype) if isinstance(a, torch.Tensor) else a for a in op_inputs("GRU", False, True)]
    with pytest.raises(NotImplementedError, match="not supported on cpu"):
        ops.layer_forward(*args, False)


@pytest.mark.parametrize(
    ("lengths", "match"),
    [(torch.tensor(LENGTHS, dtype=torch.int32), "int64"), (torch.tensor(LENGTHS[:2]), "lengths must have shape"),
     (torch.tensor(LENGTHS, device="meta"), "same device")],
    ids=["int32", "wrong_size", "device_mix"],
)  # fmt: skip
def test_bad_lengths_are_a_clear_error(lengths, match):
    with pytest.raises(RuntimeError, match=match):
        ops.layer_forward(*op_inputs("GRU", False, True), False, True, lengths)


def test_unknown_mode_and_misplaced_arguments():
    args = op_inputs("GRU", False, True)
    with pytest.raises(ValueError, match="unknown mode"):
        ops.layer_forward(*replaced(args, 0, "LSTMX"), False)
    with pytest.raises(RuntimeError, match="c0 must be given for LSTM and only"):
        ops.layer_forward(*replaced(args, 3, torch.zeros(N, H, dtype=torch.float64)), False)
    lstm = op_inputs("LSTM", False, True)
    with pytest.raises(RuntimeError, match="b_ih and b_hh"):
        ops.layer_forward(*replaced(lstm, 7, None), False)
    with pytest.raises(RuntimeError, match="only supported for LSTM"):
        ops.layer_forward(*replaced(args, 8, torch.zeros(H, H, dtype=torch.float64)), False)


@needs_cuda
def test_cuda_device_mix_is_a_clear_error():
    args = op_inputs("GRU", False, True, device="cuda")
    with pytest.raises(RuntimeError, match="same device"):
        ops.layer_forward(*replaced(args, 2, args[2].cpu()), False)


@pytest.mark.skipif(not _build.is_x86(), reason="oneDNN's ISA cap is an x86 setting")
def test_bfloat16_under_a_onednn_capped_at_avx2_runs(tmp_path):
    """ONEDNN_MAX_CPU_ISA=AVX2 leaves oneDNN without a bfloat16 path (its weight reorder raises) even on a CPU with
    AVX512-BF16: the `cpu` backend's bfloat16 GEMMs then take ATen's path (gemm_cpu.cpp: cpu_has_native_bf16), and
    the sequences are upcast (cpu_precision). Both compute modes, each cell, in a process of its own (oneDNN reads the
    cap once)."""
    script = tmp_path / "capped.py"
    # I=H=256, N=8: large enough for the prepared (oneDNN) GEMMs (gemm_cpu.cpp: kMinPreparedMacs).
    script.write_text(
        "import os, torch, fusedrnn\n"
        "from fusedrnn.backends import cpu_precision\n"
        "assert cpu_precision.native_half_dtypes() == frozenset()\n"
        "for mode in ('storage', 'float32'):\n"
        "    os.environ['FUSEDRNN_CPU_HALF_COMPUTE'] = mode\n"
        "    for name in ('LSTM', 'GRU', 'RNN'):\n"
        "        torch.manual_seed(0)\n"
        "        layer = getattr(fusedrnn, name)(256, 256, backend='cpu', dtype=torch.bfloat16)\n"
        "        theirs = getattr(torch.nn, name)(256, 256, dtype=torch.bfloat16)\n"
        "        theirs.load_state_dict(layer.state_dict())\n"
        "        exact = getattr(torch.nn, name)(256, 256, dtype=torch.float64)\n"
        "        exact.load_state_dict({k: v.double() for k, v in layer.state_dict().items()})\n"
        "        x = torch.randn(40, 8, 256, dtype=torch.bfloat16)\n"
        "        truth = exact(x.double())[0]\n"
        "        error = (layer(x)[0].double() - truth).abs().max().item()\n"
        "        baseline = (theirs(x)[0].double() - truth).abs().max().item()\n"
        "        assert error <= max(2 * baseline, 0.05), (mode, name, error, baseline)\n"
        "print('ok')\n"
    )
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    child = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert child.returncode == 0 and "ok" in child.stdout, child.stdout[-2000:] + child.stderr[-3000:]
