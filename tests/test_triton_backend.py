"""The `triton` backend against torch.nn and the reference: every output and every gradient.

Without a GPU the kernels run under Triton's interpreter (conftest.py sets TRITON_INTERPRET=1 before triton is
imported) on CPU tensors, in float32, at tiny sizes: the interpreter executes every block operation in numpy.
Tests marked `gpu_only` repeat the grid on CUDA in float32, float16 and bfloat16, plus long sequences and H=768;
there every output and gradient must stay within parity.ERROR_RATIO times torch.nn's (cuDNN's) error in the same
dtype, both measured against the float64 reference (plain PyTorch: no code shared with the kernels), since a fixed
atol would hide error growth over time.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import fusedrnn
from fusedrnn import registry
from devices import CUDA, DEVICE, needs_cuda
from parity import assert_all_close, assert_as_close_to_float64, forward_backward
from test_modules import CELLS, Case, input_maker

TRITON_REASON = registry.availability()["triton"]
#: On a GPU the whole file runs there (the grid on CUDA tensors): `gpu` selects it for the GPU run.
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(TRITON_REASON is not None, reason=f"triton backend unavailable: {TRITON_REASON}")]
gpu_only = needs_cuda  # the CPU runs only the interpreter grid

MODES = {"lstm": "LSTM", "lstm_proj": "LSTM", "gru": "GRU", "rnn_tanh": "RNN_TANH", "rnn_relu": "RNN_RELU"}
#: Cells the kernels implement: all of them (LSTM projection on the tiled kernels).
KERNEL_CELLS = CELLS
#: LSTM projection runs on the tiled kernels only (forcing the persistent ones refuses it: tested below).
PERSISTENT_CELLS = [cell for cell in CELLS if "proj_size" not in cell[3]]
#: The forced-kernel GPU runs (a child pytest each) get this much time: the persistent kernels' barrier gives up after
#: triton_ops.SPIN_LIMIT polls, but a bug must fail the test, never hang the suite.
PERSISTENT_TIMEOUT_S = 300


@dataclasses.dataclass(frozen=True)
class Sizes:
    input_size: int
    hidden_size: int


# Each case names what it covers. 19 and 5 are no multiple of the 16-wide tiles; 70 needs two hidden tiles (tiles
# are at most 64 wide) and batch 17 two batch tiles (16 rows each), so tile edges and several programs are covered.
GRID = {
    "T1_N1_H5_states": (Case(seq_len=1, batch=1, with_state=True), Sizes(3, 5)),
    "T7_N3_H19": (Case(seq_len=7, batch=3), Sizes(4, 19)),
    "T5_N3_H19_no_bias_states": (Case(seq_len=5, batch=3, bias=False, with_state=True), Sizes(4, 19)),
    "T3_N17_H70_two_tiles_states": (Case(seq_len=3, batch=17, with_state=True), Sizes(6, 70)),
    "2layers_bidir_batch_first_states": (
        Case(seq_len=5, batch=3, num_layers=2, bidirectional=True, batch_first=True, with_state=True),
        Sizes(4, 19),
    ),
    "packed_bidir_states": (Case(seq_len=5, batch=4, packed=True, bidirectional=True, with_state=True), Sizes(3, 5)),
    "packed_2layers": (Case(seq_len=5, batch=4, packed=True, num_layers=2), Sizes(3, 19)),
    "eval_2layers_dropout": (Case(seq_len=4, batch=3, num_layers=2, dropout=0.5, with_state=True), Sizes(4, 19)),
    "unbatched_states": (Case(seq_len=4, unbatched=True, with_state=True), Sizes(3, 5)),
}
# On the GPU, test_matches_torch_fp32 runs GRID in fp32, which compiles every specialisation (optional pieces) of
# every cell once; each dtype is one more set of compiled kernels (JIT time is most of a GPU run's cost), so the
# 16-bit dtypes run the cases below, which need one forward and one backward kernel per cell and dtype, plus the sizes
# the interpreter is too slow for. Long sequences for the gated cells only (the Elman kernels are the same code).
GPU_CASES = {
    "T7_N3_H19": GRID["T7_N3_H19"],
    "T64_N64_H512_bidir": (Case(seq_len=64, batch=64, bidirectional=True), Sizes(512, 512)),
    "long_T1000_N16_H768": (Case(seq_len=1000, batch=16, with_state=True), Sizes(768, 768)),
}
GPU_PARAMS = [
    pytest.param(cell, case_id, id=f"{cell[0]}-{case_id}")
    for cell in KERNEL_CELLS
    for case_id in GPU_CASES
    if not (case_id.startswith("long") and cell[0].startswith("rnn"))
]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def make_modules(cell, case: Case, sizes: Sizes, device: str):
    """(torch.nn module in float32, fusedrnn twin on `triton`), identical weights, both in eval mode (the modules'
    `train` flag only gates inter-layer dropout; gradients are taken either way, which is the eval-mode backward)."""
    _, fused_cls, torch_cls, extra = cell
    kwargs = dict(
        input_size=sizes.input_size,
        hidden_size=sizes.hidden_size,
        num_layers=case.num_layers,
        bias=case.bias,
        batch_first=case.batch_first,
        dropout=case.dropout,
        bidirectional=case.bidirectional,
        device=device,
        **extra,
    )
    torch.manual_seed(0)
    expected = torch_cls(**kwargs).eval()
    actual = fused_cls(**kwargs, backend="triton").eval()
    actual.load_state_dict(expected.state_dict())
    return actual, expected


def cell_ids(cells):
    return [cell[0] for cell in cells]


# ----------------------------------------------------------------------------------------------------------------
# CPU (interpreter) and GPU, float32: against torch.nn


@pytest.mark.parametrize("case_id", list(GRID))
@pytest.mark.parametrize("cell", KERNEL_CELLS, ids=cell_ids(KERNEL_CELLS))
def test_matches_torch_fp32(cell, case_id, monkeypatch):
    case, sizes = GRID[case_id]
    device = DEVICE
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # torch.nn on CUDA is cuDNN: keep it exact fp32
    actual, expected = make_modules(cell, case, sizes, device)
    make_inputs = input_maker(expected, case, torch.float32, device)
    assert_all_close(
        forward_backward(actual, make_inputs), forward_backward(expected, make_inputs), torch.float32
    )


@pytest.mark.parametrize("case_id", ["T3_N17_H70_two_tiles_states", "packed_bidir_states"])
@pytest.mark.parametrize("cell", KERNEL_CELLS, ids=cell_ids(KERNEL_CELLS))
def test_no_unwritten_elements(cell, case_id, monkeypatch):
    """Every buffer the ops allocate starts as NaN: an element a kernel forgets to write (a tile edge, a padded step,
    a second batch tile) would surface in some output or gradient."""
    new_empty = torch.Tensor.new_empty

    def poisoned(self, *args, **kwargs):
        out = new_empty(self, *args, **kwargs)
        return out.fill_(float("nan")) if out.is_floating_point() else out

    monkeypatch.setattr(torch.Tensor, "new_empty", poisoned)
    case, sizes = GRID[case_id]
    actual, expected = make_modules(cell, case, sizes, DEVICE)
    make_inputs = input_maker(expected, case, torch.float32, DEVICE)
    assert_all_close(
        forward_backward(actual, make_inputs), forward_backward(expected, make_inputs), torch.float32
    )


@pytest.mark.parametrize("cell", KERNEL_CELLS, ids=cell_ids(KERNEL_CELLS))
def test_inference_without_saving(cell):
    """Under no_grad the forward keeps only two state slots (ping-pong) and saves no activations."""
    case, sizes = Case(seq_len=5, batch=3, bidirectional=True, with_state=True), Sizes(4, 19)
    device = DEVICE
    actual, expected = make_modules(cell, case, sizes, device)
    args, _ = input_maker(expected, case, torch.float32, device)()
    with torch.no_grad():
        got, want = actual(*args), expected(*args)
    assert_all_close(
        {str(i): t for i, t in enumerate(torch.utils._pytree.tree_leaves(got))},
        {str(i): t for i, t in enumerate(torch.utils._pytree.tree_leaves(want))},
        torch.float32,
    )


@pytest.mark.parametrize("cell", KERNEL_CELLS, ids=cell_ids(KERNEL_CELLS))
def test_layer_matches_reference_with_lengths(cell):
    """The layer op directly, both directions, with per-row lengths that are not sorted (rows past their length keep
    their state and output zeros), against fusedrnn.reference.rnn_layer. The upstream gradients of the final states
    are distinct and dense but transposed in memory, as autograd hands them over after a transpose."""
    from fusedrnn import reference, triton_ops

    mode = MODES[cell[0]]
    device = DEVICE
    T, N, I, H, G = 6, 3, 4, 19, reference.GATES[mode]
    P = cell[3].get("proj_size", H)  # width of h
    shapes = [(T, N, I), (N, P), (N, H), (G * H, I), (G * H, P), (G * H,), (G * H,)] + ([(P, H)] if P != H else [])
    generator = torch.Generator().manual_seed(2)
    tensors = [torch.randn(shape, generator=generator).to(device) * 0.5 for shape in shapes]
    lengths = torch.tensor([4, 6, 1], device=device)
    for reverse in (False, True):
        results = []
        for layer in (triton_ops.rnn_layer, reference.rnn_layer):
            leaves = [t.clone().requires_grad_(True) for t in tensors]
            x, h0, c0, *weights = leaves
            kwargs = dict(reverse=reverse, lengths=lengths, w_hr=weights.pop() if P != H else None)
            y, h, c = layer(mode, x, h0, c0 if mode == "LSTM" else None, *weights, **kwargs)
            outputs = [y, h] + ([c] if c is not None else [])
            upstream_generator = torch.Generator().manual_seed(3)  # one stream: h_n and c_n get different gradients
            upstream = [torch.randn(o.shape[::-1], generator=upstream_generator).to(o).permute(*range(o.dim())[::-1])
                        for o in outputs]  # fmt: skip
            torch.autograd.backward(outputs, upstream)
            result = {f"output[{i}]": o.detach() for i, o in enumerate(outputs)}
            result.update({f"grad[{i}]": t.grad for i, t in enumerate(leaves)})
            results.append(result)
        assert_all_close(*results, torch.float32)


# Persistent kernels under the interpreter: forced, one launch per step, several programs exchanging h / dgates.
# The planner plans for a 4-SM device there (fusedrnn.kernels.plan.INTERPRETER_PROGRAMS): H=19 gives 3 forward programs
# (8 units each; 2 for the Elman RNN) and 2 backward ones; H=100 gives 4 and 4, with three reduction pieces
# (64 + 32 + 16, fusedrnn.kernels.plan.k_pieces).
PERSISTENT_GRID = {
    "packed_bidir_states": (Case(seq_len=5, batch=4, packed=True, bidirectional=True, with_state=True), Sizes(3, 19)),
    "T4_N1_H19_no_bias": (Case(seq_len=4, batch=1, bias=False), Sizes(3, 19)),
    "T3_N3_H100_2layers_batch_first_states": (
        Case(seq_len=3, batch=3, num_layers=2, batch_first=True, with_state=True), Sizes(5, 100),
    ),
}


def record_launches(monkeypatch):
    """[(kernel, grid)] of every launch through triton_ops from now on."""
    from fusedrnn import triton_ops

    launched = []

    class Recorder:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            launched.append((self.kernel, grid))
            return wrap(self.kernel)[grid]

    wrap = triton_ops.wrap_triton
    monkeypatch.setattr(triton_ops, "wrap_triton", Recorder)
    return launched


@pytest.mark.skipif(CUDA, reason="on a GPU the persistent kernels run in a child process with a timeout (a barrier "
                                    "bug would hang): test_gpu_persistent_kernels")
@pytest.mark.parametrize("case_id", list(PERSISTENT_GRID))
@pytest.mark.parametrize("cell", PERSISTENT_CELLS, ids=cell_ids(PERSISTENT_CELLS))
def test_persistent_kernels_several_programs(cell, case_id, monkeypatch):
    """The persistent kernels with several programs, one launch per step (the launch boundary is their barrier):
    the exchange of h (forward) and dgates (backward) between programs, the W_hh slice layout, the gate split,
    carried state across launches, reversed time, lengths, with and without bias / initial state, N=1; forward and
    backward against torch.nn, then inference (two-slot ping-pong states)."""
    from fusedrnn import triton_ops

    monkeypatch.setenv("FUSEDRNN_TRITON_KERNEL", "persistent")
    launched = record_launches(monkeypatch)
    case, sizes = PERSISTENT_GRID[case_id]
    actual, expected = make_modules(cell, case, sizes, DEVICE)
    make_inputs = input_maker(expected, case, torch.float32, DEVICE)
    assert_all_close(
        forward_backward(actual, make_inputs), forward_backward(expected, make_inputs), torch.float32
    )
    kernels = {kernel for kernel, _ in launched}
    assert kernels == {triton_ops.persistent_forward_kernel, triton_ops.persistent_backward_kernel}
    assert min(grid[0] for _, grid in launched) >= 2, launched  # several programs in every launch
    args, _ = make_inputs()
    with torch.no_grad():
        got, want = actual(*args), expected(*args)
    assert_all_close(
        {str(i): t for i, t in enumerate(torch.utils._pytree.tree_leaves(got))},
        {str(i): t for i, t in enumerate(torch.utils._pytree.tree_leaves(want))},
        torch.float32,
    )


@pytest.mark.skipif(CUDA, reason="the interpreter runs programs one after another; on a GPU they are co-resident")
def test_persistent_barrier_timeout_raises_instead_of_hanging(monkeypatch):
    """One launch over the whole sequence under the interpreter: program 0 waits at the first barrier for program 1,
    which runs only after it, i.e. programs that are not co-resident. The bounded spin gives up, flags the error,
    and the host raises; no hang."""
    from fusedrnn import triton_ops

    monkeypatch.setenv("FUSEDRNN_TRITON_KERNEL", "persistent")
    monkeypatch.setattr(triton_ops, "_spans", lambda plan, stages: [(0, stages)])
    monkeypatch.setattr(triton_ops, "SPIN_LIMIT", 3)
    module = fusedrnn.GRU(3, 19, backend="triton")
    with torch.no_grad(), pytest.raises(RuntimeError, match="grid barrier timed out"):
        module(torch.randn(3, 2, 3))


@pytest.mark.parametrize(("batch", "proj_size", "reason"), [(65, 0, "batch 65 > 64"), (2, 3, "projection")],
                         ids=["batch_65", "projection"])  # fmt: skip
def test_forced_persistent_refuses_with_the_reason(monkeypatch, batch, proj_size, reason):
    """A call the persistent kernels do not serve (every program covers all batch rows: N <= 64; LSTM projection is
    tiled only) is refused with the planner's reason, not silently run on the tiled kernels."""
    monkeypatch.setenv("FUSEDRNN_TRITON_KERNEL", "persistent")
    module = fusedrnn.LSTM(3, 5, proj_size=proj_size, backend="triton", device=DEVICE)
    with pytest.raises(registry.BackendError, match=reason):
        module(torch.randn(2, batch, 3, device=DEVICE))


def test_forced_tiled_and_tuning_reach_the_launch(monkeypatch):
    """FUSEDRNN_TRITON_KERNEL=tiled and FUSEDRNN_TRITON_TUNE's block_h reach the tiled launch (grid and tiles)."""
    from fusedrnn import triton_ops

    monkeypatch.setenv("FUSEDRNN_TRITON_KERNEL", "tiled")
    monkeypatch.setenv("FUSEDRNN_TRITON_TUNE", "block_h=16,warps=4")
    plans = []
    plan_for = triton_ops.plan_for
    monkeypatch.setattr(triton_ops, "plan_for", lambda *args, **kwargs: plans.append(plan_for(*args, **kwargs))
                        or plans[-1])  # fmt: skip
    case, sizes = Case(seq_len=3, batch=3), Sizes(4, 19)
    actual, expected = make_modules(CELLS[0], case, sizes, DEVICE)
    make_inputs = input_maker(expected, case, torch.float32, DEVICE)
    assert_all_close(forward_backward(actual, make_inputs), forward_backward(expected, make_inputs), torch.float32)
    assert plans and all(plan.kernel == "tiled" and plan.block_h == 16 and plan.warps == 4 for plan in plans)


def test_torch_compile_fullgraph():
    """torch.compile(fullgraph=True) traces forward and backward of a 2-layer bidirectional LSTM without a graph
    break. On CPU (interpreter) with the aot_eager backend: the ops are opaque there; on CUDA with Inductor, which
    sees the Triton kernels through triton_op."""
    case, sizes = Case(seq_len=5, batch=3, num_layers=2, bidirectional=True, with_state=True), Sizes(4, 19)
    device = DEVICE
    actual, expected = make_modules(CELLS[0], case, sizes, device)
    torch._dynamo.reset()
    compiled = torch.compile(actual, fullgraph=True, backend="inductor" if CUDA else "aot_eager")
    make_inputs = input_maker(expected, case, torch.float32, device)
    result = forward_backward(compiled, make_inputs)
    result = {key.replace("_orig_mod.", ""): value for key, value in result.items()}
    assert_all_close(result, forward_backward(expected, make_inputs), torch.float32)


# ----------------------------------------------------------------------------------------------------------------
# What the backend declines, and when `auto` picks it


def test_unsupported_calls_name_the_reason():
    backend = registry.get_backend("triton")
    base = registry.RNNCall(mode="LSTM", device_type="cuda", dtype=torch.float32, input_size=4, hidden_size=8)
    assert backend.unsupported_reason(base) is None
    assert backend.unsupported_reason(dataclasses.replace(base, proj_size=3)) is None  # on the tiled kernels
    assert "float64" in backend.unsupported_reason(dataclasses.replace(base, dtype=torch.float64))
    assert "mps" in backend.unsupported_reason(dataclasses.replace(base, device_type="mps"))
    assert "32-bit" in backend.unsupported_reason(dataclasses.replace(base, hidden_size=30000))


def test_auto_ranks_triton_below_cudnn_until_timed_on_a_gpu():
    backend = registry.get_backend("triton")
    on_cuda = registry.RNNCall(mode="LSTM", device_type="cuda", dtype=torch.float32, input_size=4, hidden_size=8)
    on_cpu = dataclasses.replace(on_cuda, device_type="cpu")
    assert 0 < backend.preference(on_cuda) < registry.get_backend("torch").preference(on_cuda)
    assert backend.preference(on_cpu) == 0  # the interpreter must never be picked automatically


@pytest.mark.skipif(CUDA, reason="the interpreter's dtype limit applies to CPU tensors")
def test_interpreter_rejects_other_dtypes():
    with pytest.raises(registry.BackendError, match="float64"):
        fusedrnn.GRU(3, 5, backend="triton", dtype=torch.float64)(torch.randn(2, 1, 3, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------------------------
# GPU only: every dtype, long sequences, error bounded by the reference's own error in that dtype


@gpu_only
@pytest.mark.parametrize("dtype_id", list(DTYPES))
@pytest.mark.parametrize(("cell", "case_id"), GPU_PARAMS)
def test_gpu_error_bounded_by_reference(cell, case_id, dtype_id, monkeypatch):
    """The kernels in `dtype` against the float64 reference backend (the truth), at most ERROR_RATIO times torch.nn's
    own error in that dtype (cuDNN; TF32 off, as the kernels' float32 dots are exact), or within the dtype's floor
    (float32: atol + rtol * max|truth|; float16/bfloat16: atol). The reference in the 16-bit dtype is no baseline: it
    rounds the state to 16 bits every step, so twice its error let moderate kernel bugs pass."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    case, sizes = GPU_CASES[case_id]
    dtype = DTYPES[dtype_id]
    _, template = make_modules(cell, case, sizes, DEVICE)
    _, fused_cls, _, extra = cell
    kwargs = dict(input_size=sizes.input_size, hidden_size=sizes.hidden_size, num_layers=case.num_layers,
                  bias=case.bias, batch_first=case.batch_first, dropout=case.dropout,
                  bidirectional=case.bidirectional, device=DEVICE, **extra)  # fmt: skip
    runs = {}
    for name, run_dtype, backend in (("kernel", dtype, "triton"), ("exact", torch.float64, "reference")):
        module = fused_cls(**kwargs, backend=backend).eval()
        module.load_state_dict(template.state_dict())
        module.to(run_dtype)
        runs[name] = forward_backward(module, input_maker(module, case, run_dtype, DEVICE))
    cudnn = template.to(dtype)
    runs["cudnn"] = forward_backward(cudnn, input_maker(cudnn, case, dtype, DEVICE))
    assert_as_close_to_float64(runs["kernel"], runs["cudnn"], runs["exact"], dtype,
                               relative_floor=dtype == torch.float32)  # fmt: skip


@gpu_only
@pytest.mark.parametrize("dtype_id", ["bf16"])
def test_gpu_compile_low_precision(dtype_id):
    """Inductor with the Triton kernels in 16-bit: compiled equals eager on the same backend."""
    dtype = DTYPES[dtype_id]
    case, sizes = Case(seq_len=33, batch=5, num_layers=2, bidirectional=True, with_state=True), Sizes(40, 48)
    actual, _ = make_modules(CELLS[0], case, sizes, DEVICE)
    actual.to(dtype)
    make_inputs = input_maker(actual, case, dtype, DEVICE)
    eager = forward_backward(actual, make_inputs)
    torch._dynamo.reset()
    compiled = forward_backward(torch.compile(actual, fullgraph=True), make_inputs)
    compiled = {key.replace("_orig_mod.", ""): value for key, value in compiled.items()}
    assert_all_close(compiled, eager, dtype)


@gpu_only
@pytest.mark.parametrize("kernel", ["persistent", "tiled"])
def test_gpu_forced_kernels(kernel, child_timeout):
    """Each kernel family forced over the GPU grid's dtype-bounded checks (under `auto` the small-batch cases run the
    persistent kernels, the large-batch ones the tiled). Run in a child pytest with a timeout: a barrier bug in the
    persistent kernels should end in their timeout error, but must never hang the suite."""
    env = dict(os.environ, FUSEDRNN_TRITON_KERNEL=kernel)
    # One dtype and the gated cells without projection: each is a new set of compiled kernels (the Elman ones share
    # all their code paths), and forcing the persistent kernels refuses an LSTM projection (tested on its own above).
    # Every other GPU case (N <= 64, H <= 768, bf16) fits the persistent kernels on an H100 or H200.
    selection = "test_gpu_error_bounded_by_reference and bf16 and (lstm or gru) and not lstm_proj"
    expected = [p.id for p in GPU_PARAMS if p.values[0][0] in ("lstm", "gru")]
    result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-rA", __file__, "-k", selection], env=env,
                            capture_output=True, text=True, timeout=child_timeout(PERSISTENT_TIMEOUT_S))  # fmt: skip
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    # Exactly the intended tests ran and passed: a selection that matches nothing, or skips, must not pass.
    passed = sorted(line.split("[", 1)[1].rstrip("]") for line in result.stdout.splitlines()
                    if line.startswith("PASSED ") and "test_gpu_error_bounded_by_reference[" in line)  # fmt: skip
    assert passed == sorted(f"{p}-bf16" for p in expected), result.stdout[-3000:]
