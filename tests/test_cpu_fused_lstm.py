"""The `cpu` backend's fused LSTM forward and backward (csrc/lstm_cpu_fused*, issue 23): parity with torch.nn run in
float64 at the float32 tolerance, forward and gradients, and with the per-step loop op by op, with one and two threads;
its planner's decisions and refusals (op fusedrnn::cpu_fused_plan); `auto`'s preference.

FUSEDRNN_CPU_LSTM=fused forces the kernel (an LSTM it cannot run is then an error, so every parity case here is known
to have run it), FUSEDRNN_CPU_LSTM=loop the per-step loop; FUSEDRNN_CPU_LSTM_SPLIT=units|dynamic|rows how the
kernel's threads share a step (the `split` fixture runs the parity cases every way).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import fusedrnn
from fusedrnn import _build, _extension
from fusedrnn.backends import native
from fusedrnn.registry import RNNCall
from parity import TOLERANCES, assert_all_close, assert_as_close_to_float64, forward_backward, output_tensors
from test_modules import Case, input_maker

ops = torch.ops.fusedrnn
FORCE_ENV = "FUSEDRNN_CPU_LSTM"
SPLIT_ENV = "FUSEDRNN_CPU_LSTM_SPLIT"
INPUT_ENV = "FUSEDRNN_CPU_LSTM_INPUT"
#: Hidden units per panel of the variant the CPU runs (16 float32 lanes with AVX-512, 8 otherwise).
PANEL_UNITS = 16 if torch.backends.cpu.get_cpu_capability() == "AVX512" else 8


@pytest.fixture(scope="module", autouse=True)
def extension():
    return _extension.load()


@pytest.fixture
def force_fused(monkeypatch):
    monkeypatch.setenv(FORCE_ENV, "fused")


@pytest.fixture(params=["units", "dynamic", "rows"])
def split(request, monkeypatch):
    """How the fused kernels' threads share a step, forward and backward: by hidden units (a barrier after every
    step), by units claimed as the threads get to them (dynamic: the same barrier), or by batch rows (none)."""
    monkeypatch.setenv(SPLIT_ENV, request.param)
    return request.param


@pytest.fixture(params=["gemm", "step"])
def input_projection(request, monkeypatch):
    """Where the fused LSTM forward computes x_t W_ih^T: one GEMM per chunk of steps, or in each step's tiles."""
    monkeypatch.setenv(INPUT_ENV, request.param)
    return request.param


def skip_gru_input_in_step(cell: str, input_projection: str) -> None:
    """The `input_projection` fixture's "step" case repeats "gemm" for a GRU: its n gate needs x W_in^T and h W_hn^T
    apart, so its input projection is always a GEMM."""
    if cell == "GRU" and input_projection == "step":
        pytest.skip("the GRU's input projection is always a GEMM")


@pytest.fixture(params=[1, 2, 3], ids=["1thread", "2threads", "3threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


#: (Case, input size, hidden size): batches 1..17 (AVX-512 tiles of 6 rows plus every tail), hidden sizes below,
#: at and past a panel and not a multiple of one, and every module option the kernel meets.
CASES = {
    "N1_H37": (Case(seq_len=5, batch=1), 7, 37),
    "N2_H5": (Case(seq_len=4, batch=2), 3, 5),
    "N6_H16": (Case(seq_len=4, batch=6), 8, 16),
    "N7_H33_states": (Case(seq_len=6, batch=7, with_state=True), 9, 33),
    "N13_H20_no_bias": (Case(seq_len=3, batch=13, bias=False, with_state=True), 4, 20),
    "N17_H24": (Case(seq_len=3, batch=17), 5, 24),
    "N5_H19_bidir_2layers": (Case(seq_len=5, batch=5, num_layers=2, bidirectional=True, with_state=True), 6, 19),
    "N4_H21_packed_bidir": (Case(seq_len=5, batch=4, packed=True, bidirectional=True, with_state=True), 6, 21),
    "N4_H9_packed": (Case(seq_len=5, batch=4, packed=True), 3, 9),
    "unbatched_H40": (Case(unbatched=True, with_state=True), 5, 40),
    "batch_first_N3_H12": (Case(batch_first=True, batch=3), 4, 12),
}


def fused_pair(case: Case, input_size: int, hidden: int, cell: str = "LSTM"):
    """(fusedrnn's `cell` on `cpu` in float32, torch.nn's in float64) with the same weights."""
    kwargs = dict(input_size=input_size, hidden_size=hidden, num_layers=case.num_layers, bias=case.bias,
                  batch_first=case.batch_first, bidirectional=case.bidirectional)  # fmt: skip
    torch.manual_seed(0)
    exact = getattr(nn, cell)(**kwargs, dtype=torch.float64)
    ours = getattr(fusedrnn, cell)(**kwargs, dtype=torch.float32, backend="cpu")
    ours.load_state_dict({k: v.float() for k, v in exact.state_dict().items()})
    return ours, exact


def inference_outputs(module, case: Case, dtype) -> dict:
    """The outputs of a no-grad call (the op then saves nothing for a backward)."""
    args, _ = input_maker(module, case, dtype)()
    with torch.no_grad():
        return {f"output[{i}]": o for i, o in enumerate(output_tensors(module(*args)))}


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("case,input_size,hidden", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_fused_matches_float64_torch_nn(cell, case, input_size, hidden, training, threads, split, force_fused):
    """The LSTM's and the GRU's fused forward and backward."""
    assert_float32_matches_float64_torch_nn(cell, case, input_size, hidden, training)


def assert_float32_matches_float64_torch_nn(cell: str, case: Case, input_size: int, hidden: int, training: bool):
    """fusedrnn's `cell` in float32 on `cpu` against torch.nn's in float64: every output (and, training, gradient) at
    the float32 tolerance."""
    ours, exact = fused_pair(case, input_size, hidden, cell)
    if training:
        actual = forward_backward(ours, input_maker(ours, case, torch.float32))
        truth = forward_backward(exact, input_maker(exact, case, torch.float64))
    else:
        actual, truth = inference_outputs(ours, case, torch.float32), inference_outputs(exact, case, torch.float64)
    assert_all_close({k: v if v is None else v.double() for k, v in actual.items()}, truth, torch.float32)


#: A case whose steps are worth sharing (N x H = 8 x 256), run with 3 threads: on a 2-core machine (CI's) one is
#: descheduled now and then, so that the others find its panels unclaimed: (Case, input size, hidden size).
SHARED_CASE = (Case(seq_len=40, batch=8, with_state=True), 32, 256)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_dynamic_split_is_bitwise_the_static_one(cell, force_fused, monkeypatch):
    """Which thread computes a panel changes no bit of any output or gradient: the claims cover each panel exactly once
    a step, after every panel is packed."""
    case, input_size, hidden = SHARED_CASE
    ours, _ = fused_pair(case, input_size, hidden, cell)
    decoy = copy.deepcopy(ours)
    with torch.no_grad():
        for p in decoy.parameters():
            p.neg_()
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        results = {}
        for split in ("units", "dynamic", "dynamic"):
            monkeypatch.setenv(SPLIT_ENV, split)
            # The decoy's packed panels go back to the pool first, so that a claim before its panel's packing would
            # read the decoy's weights, not a stale copy of ours.
            forward_backward(decoy, input_maker(decoy, case, torch.float32))
            results.setdefault(split, []).append(forward_backward(ours, input_maker(ours, case, torch.float32)))
    finally:
        torch.set_num_threads(before)
    for result in results["dynamic"]:
        for key, expected in results["units"][0].items():
            assert torch.equal(result[key], expected), key


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("case,input_size,hidden", CASES.values(), ids=CASES.keys())
def test_fused_lstm_input_projection_either_way_matches_float64_torch_nn(case, input_size, hidden, training, threads,
                                                                         input_projection, force_fused):
    """The LSTM forward with x_t W_ih^T as a GEMM per chunk and in the step's tiles (odd input sizes included)."""
    assert_float32_matches_float64_torch_nn("LSTM", case, input_size, hidden, training)


#: Products large enough for oneDNN's cases that the small cases above never reach (csrc/gemm_cpu.cpp): the input
#: projection's W_ih reordered once for several chunks (kMinUsesToReorder: 16 steps a chunk at N=64), and the
#: backward's dx on a contiguous copy of W_ih^T (kMinMacsToTransposeForOneUse: 40 x 64 x 1024 x 1000 >= 2^31
#: multiply-adds); I = 1000 leaves partial tiles in that copy.
LARGE_CASE = (Case(seq_len=40, batch=64, with_state=True), 1000, 256)


def test_fused_large_products_as_close_to_float64_as_torch_nn(force_fused):
    """Every output and gradient at most ERROR_RATIO times as far from float64 as torch.nn's own float32 run (at this
    size rounding exceeds the short cases' fixed tolerance)."""
    case, input_size, hidden = LARGE_CASE
    ours, exact = fused_pair(case, input_size, hidden)
    theirs = copy.deepcopy(exact).float()
    assert_as_close_to_float64(forward_backward(ours, input_maker(ours, case, torch.float32)),
                               forward_backward(theirs, input_maker(theirs, case, torch.float32)),
                               forward_backward(exact, input_maker(exact, case, torch.float64)), torch.float32)


#: Op-level sizes: H spans two AVX-512 backward groups (64 units) plus a partial panel; an AVX-512 tile plus a tail.
OP_T, OP_N, OP_I, OP_H = 6, 7, 7, 69
OP_LENGTHS = [6, 1, 4, 6, 3, 2, 5]


#: Gates per cell of the fused kernels.
GATES = {"LSTM": 4, "GRU": 3}


def op_args(seed=3, cell="LSTM"):
    """layer_forward's x, h0, c0 (None for the GRU), w_ih, w_hh, b_ih, b_hh."""
    generator = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=generator) * 0.5  # noqa: E731
    T, N, I, H, G = OP_T, OP_N, OP_I, OP_H, GATES[cell]
    c0 = randn(N, H) if cell == "LSTM" else None
    return (randn(T, N, I), randn(N, H), c0, randn(G * H, I), randn(G * H, H), randn(G * H), randn(G * H))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [False, True], ids=["dense", "lengths"])
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_fused_op_saves_what_the_loop_saves(cell, reverse, lengths, threads, split, input_projection, monkeypatch):
    """Same op, both paths: y, h_n, c_n and the saved activations (LSTM i f g o c, GRU r z n hn: what layer_backward
    reads) agree."""
    skip_gru_input_in_step(cell, input_projection)
    args = op_args(cell=cell)
    length_arg = torch.tensor(OP_LENGTHS) if lengths else None
    results = {}
    for path in ("fused", "loop"):
        monkeypatch.setenv(FORCE_ENV, path)
        results[path] = ops.layer_forward(cell, *args, None, reverse, True, length_arg)
    for name, fused, loop in zip(("y", "h_n", "c_n", "saved"), results["fused"], results["loop"]):
        torch.testing.assert_close(fused, loop, **TOLERANCES[torch.float32], msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize(("cell", "grad_c_n"), [("LSTM", False), ("LSTM", True), ("GRU", False)],
                         ids=["LSTM_no_grad_c_n", "LSTM_grad_c_n", "GRU"])  # fmt: skip
@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [False, True], ids=["dense", "lengths"])
def test_fused_backward_matches_the_loop(cell, reverse, lengths, bias, grad_c_n, threads, split, monkeypatch):
    """Same op, both paths, on one forward's activations: every gradient agrees."""
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = op_args(cell=cell)
    length_arg = torch.tensor(OP_LENGTHS) if lengths else None
    monkeypatch.setenv(FORCE_ENV, "loop")
    y, _, _, saved = ops.layer_forward(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, None, reverse, True, length_arg)
    generator = torch.Generator().manual_seed(4)
    grad_y, grad_h_n, grad_c = (torch.randn(*t.shape, generator=generator) for t in (y, h0, h0))
    results = {}
    for path in ("fused", "loop"):
        monkeypatch.setenv(FORCE_ENV, path)
        results[path] = ops.layer_backward(cell, grad_y, grad_h_n, grad_c if grad_c_n else None, x, h0, c0, w_ih,
                                           w_hh, None, y, saved, reverse, bias, length_arg)  # fmt: skip
    names = ("dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh", "dw_hr", "dln_ih", "dln_hh", "dln_c_w", "dln_c_b")
    for name, fused, loop in zip(names, results["fused"], results["loop"]):
        torch.testing.assert_close(fused, loop, **TOLERANCES[torch.float32], msg=lambda m, name=name: f"{name}: {m}")


# ---------------------------------------------------------------------------------------------------------------
# The planner


def plan(batch=4, hidden=512, dtype=torch.float32, *, mode="LSTM", projection=False, variants=False, threads=2,
         force="", backward=False, split=""):  # fmt: skip
    """The planner's (path, reason, threads, split)."""
    return ops.cpu_fused_plan(mode, batch, hidden, dtype, projection, variants, threads, force, backward, split)[:4]


def input_plan(batch, hidden, dtype=torch.float32, *, input_size=-1, mode="LSTM", backward=False, force_input=""):
    """Where the planner puts the fused forward's input projection: "gemm" or "step"."""
    return ops.cpu_fused_plan(mode, batch, hidden, dtype, force="fused", backward=backward, input=force_input,
                              input_size=input_size)[4]  # fmt: skip


needs_vector_variant = pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
    reason="the planner sends the DEFAULT capability to the loop",
)


#: The largest batch the planner sends to the fused kernels per variant (csrc/lstm_cpu_fused_plan.h: kMaxBatch*).
MAX_BATCH = {"AVX512": 64, "AVX2": 16}.get(torch.backends.cpu.get_cpu_capability(), 0)


@needs_vector_variant
@pytest.mark.parametrize("batch,split", [("1", "units"), ("max", "dynamic")], ids=["1", "max"])
def test_plan_chooses_fused_at_small_batch(batch, split):
    assert plan(1 if batch == "1" else MAX_BATCH) == ("fused", "", 2, split)


@needs_vector_variant
@pytest.mark.parametrize("beyond", [1, 200], ids=lambda n: f"max_plus_{n}")
def test_plan_keeps_the_loop_at_larger_batch(beyond):
    batch = MAX_BATCH + beyond
    path, reason, _, _ = plan(batch)
    assert path == "loop" and f"batch {batch}" in reason
    assert plan(batch, force="fused")[0] == "fused"  # forcing overrides the speed rule, not the support rules


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        (dict(mode="RNN_TANH"), "LSTM and GRU only"),
        (dict(dtype=torch.float64), "float32 or bfloat16 only"),
        (dict(dtype=torch.float16), "float32 or bfloat16 only"),
        (dict(projection=True), "projection"),
        (dict(variants=True), "layer norm or zoneout"),
        (dict(batch=0), "empty batch"),
    ],
    ids=["elman", "float64", "float16", "projection", "variants", "empty_batch"],
)
def test_plan_refuses_what_the_kernel_cannot_run_even_forced(kwargs, expected):
    for force in ("", "fused"):
        path, reason, _, _ = plan(**kwargs, force=force)
        assert path == "loop" and expected in reason


def test_plan_forced_loop_and_bad_force_value():
    assert plan(force="loop")[:2] == ("loop", "forced (FUSEDRNN_CPU_LSTM=loop)")
    with pytest.raises(ValueError, match="auto, fused or loop"):
        plan(force="sometimes")


@pytest.mark.parametrize(
    "threads_asked,hidden,expected",
    [(1, 512, 1), (2, 512, 2), (2, PANEL_UNITS, 1), (3, PANEL_UNITS + 1, 2)],
    ids=["1_of_1", "2_of_2", "one_panel", "3_asked_2_panels"],
)
def test_plan_threads_are_torchs_at_most_one_per_panel(threads_asked, hidden, expected):
    assert plan(hidden=hidden, threads=threads_asked, force="fused")[2] == expected


@needs_vector_variant
def test_plan_follows_torch_set_num_threads(threads):
    assert plan(threads=-1) == ("fused", "", threads, "units" if threads == 1 else "dynamic")


@needs_vector_variant
@pytest.mark.parametrize("batch,hidden", [(1, 32), (4, 128), (1, 256), (16, 512)], ids=lambda v: str(v))
def test_plan_uses_every_thread_at_every_size(batch, hidden):
    """A second thread paid at every size measured on a quiet machine (csrc/lstm_cpu_fused_plan.h)."""
    assert plan(batch, hidden, threads=2)[:3] == ("fused", "", 2)


@pytest.mark.parametrize(
    "batch,hidden,threads_asked,backward,expected",
    [
        (4, 512, 2, False, "dynamic"),
        (4, 511, 2, False, "units"),  # 2044 row-units: below the threshold
        (1, 2048, 2, False, "dynamic"),
        (64, 32, 2, False, "dynamic"),
        (2, 512, 2, False, "units"),
        (4, 512, 1, False, "units"),  # one thread has nobody to share with
        (4, 512, 2, True, "dynamic"),
        (32, 512, 2, True, "rows"),  # the backward's rows split first
    ],
    ids=["N4_H512", "N4_H511", "N1_H2048", "N64_H32", "N2_H512", "1thread", "backward_N4", "backward_N32"],
)
def test_plan_shares_a_step_dynamically_from_2048_row_units(batch, hidden, threads_asked, backward, expected):
    """Split by units, the threads share a step dynamically from batch x hidden = 2048 (csrc/lstm_cpu_fused_plan.h:
    kMinRowUnitsToShare)."""
    assert plan(batch, hidden, threads=threads_asked, backward=backward, force="fused")[3] == expected


@pytest.mark.parametrize(
    "batch,threads_asked,expected",
    [(31, 2, "dynamic"), (32, 2, "rows"), (64, 2, "rows"), (47, 3, "dynamic"), (48, 3, "rows"), (16, 1, "rows")],
    ids=["N31_2threads", "N32_2threads", "N64_2threads", "N47_3threads", "N48_3threads", "N16_1thread"],
)
def test_plan_splits_the_backward_by_rows_from_16_rows_a_thread(batch, threads_asked, expected):
    # Forced fused: the rule for the split, apart from the one for the path (the batch limit is per variant).
    assert plan(batch, threads=threads_asked, backward=True, force="fused") == ("fused", "", threads_asked, expected)
    forward = plan(batch, threads=threads_asked, force="fused")[3]  # the forward: by units at every batch
    assert forward == ("units" if threads_asked == 1 else "dynamic")


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() != "AVX512", reason="the AVX-512 variant's rule")
@pytest.mark.parametrize(
    "batch,hidden,input_size,dtype,expected",
    [
        (3, 256, -1, torch.float32, "gemm"),  # below 4 rows
        (4, 256, -1, torch.float32, "step"),  # W_ih 1 MB: 256 KB a row
        (4, 512, -1, torch.float32, "gemm"),  # W_ih 4 MB: 1 MB a row
        (8, 512, -1, torch.float32, "step"),
        (4, 512, -1, torch.bfloat16, "step"),  # W_ih 2 MB
        (4, 512, 128, torch.float32, "step"),  # W_ih 1 MB
        (64, 768, -1, torch.float32, "step"),  # both weights 18 MB
        (64, 1024, -1, torch.float32, "gemm"),  # 32 MB: past 24
        (16, 1024, -1, torch.bfloat16, "step"),  # 16 MB
        (8, 1024, -1, torch.bfloat16, "gemm"),  # W_ih 8 MB: 1 MB a row
    ],
    ids=["N3_H256", "N4_H256", "N4_H512", "N8_H512", "N4_H512_bf16", "N4_I128_H512", "N64_H768", "N64_H1024",
         "N16_H1024_bf16", "N8_H1024_bf16"],
)
def test_plan_puts_the_input_projection_in_the_step_where_it_measured_faster(batch, hidden, input_size, dtype,
                                                                             expected):
    """csrc/lstm_cpu_fused_plan.h: from 4 rows, at most 512 KB of W_ih a row, both weights within 24 MB."""
    if dtype == torch.bfloat16 and not bf16_kernel_runs():
        pytest.skip("this CPU has no AVX512-BF16 (the bfloat16 kernel's vdpbf16ps)")
    assert input_plan(batch, hidden, dtype, input_size=input_size) == expected


def test_plan_input_projection_by_variant():
    """AVX2's 3-row tiles need 8 rows; the baseline variant keeps the GEMM (csrc/lstm_cpu_fused_plan.h)."""
    capability = torch.backends.cpu.get_cpu_capability()
    expected = {"AVX512": ("step", "step"), "AVX2": ("gemm", "step")}.get(capability, ("gemm", "gemm"))
    assert (input_plan(4, 256), input_plan(8, 256)) == expected


def test_plan_input_projection_forced_lstm_forward_only():
    assert input_plan(1, 32, force_input="step") == "step"
    assert input_plan(64, 256, force_input="gemm") == "gemm"
    # The backward reads the saved gates; the GRU's n gate needs x W_in^T and h W_hn^T apart.
    assert input_plan(64, 256, backward=True, force_input="step") == "gemm"
    assert input_plan(64, 256, mode="GRU", force_input="step") == "gemm"
    with pytest.raises(ValueError, match="auto, gemm or step"):
        input_plan(4, 32, force_input="x")


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
def test_plan_forced_split(backward):
    assert plan(64, backward=backward, split="units", force="fused")[3] == "units"
    assert plan(1, backward=backward, split="dynamic", force="fused")[2:] == (2, "dynamic")
    assert plan(4, backward=backward, split="rows", force="fused")[2:] == (2, "rows")
    wide = 16 * PANEL_UNITS  # panels enough for 5 threads: the batch limits them
    assert plan(3, threads=5, hidden=wide, backward=backward, split="rows", force="fused")[2:] == (3, "rows")
    with pytest.raises(ValueError, match="auto, units, dynamic or rows"):
        plan(backward=backward, split="columns")


@needs_vector_variant
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
def test_plan_gru_as_the_lstm(backward):
    assert plan(1, mode="GRU", backward=backward) == ("fused", "", 2, "units")
    split = plan(64, mode="GRU", backward=backward, force="fused")[3]  # forced: the batch limit is per variant
    assert split == ("rows" if backward else "dynamic")


def test_forced_fused_is_an_error_for_an_lstm_or_gru_it_cannot_run(force_fused):
    lstm = fusedrnn.LSTM(4, 6, dtype=torch.float64, backend="cpu")
    with pytest.raises(RuntimeError, match="float32 or bfloat16 only"):
        lstm(torch.randn(3, 2, 4, dtype=torch.float64))
    gru = fusedrnn.GRU(4, 6, dtype=torch.float64, backend="cpu")
    with pytest.raises(RuntimeError, match="float32 or bfloat16 only"):
        gru(torch.randn(3, 2, 4, dtype=torch.float64))
    elman = fusedrnn.RNN(4, 6, backend="cpu")  # not a cell of the fused kernels: the loop, no error
    elman(torch.randn(3, 2, 4))


# ---------------------------------------------------------------------------------------------------------------
# bfloat16 (inference): AVX512-BF16's vdpbf16ps, float32 sums and cell state


def bf16_kernel_runs() -> bool:
    return plan(1, 16, torch.bfloat16, force="fused")[0] == "fused"


@pytest.fixture
def bf16_kernel():
    if not bf16_kernel_runs():
        pytest.skip("this CPU has no AVX512-BF16 (the bfloat16 kernel's vdpbf16ps)")


#: bfloat16 training cases: a tile and a tail, an odd hidden size, states given, packed and bidirectional.
TRAINING_BF16_CASES = {name: CASES[name] for name in ("N7_H33_states", "N17_H24", "N4_H21_packed_bidir")}


@pytest.mark.parametrize("case,input_size,hidden", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_bf16_fused_inference_as_close_to_float64_as_torch_nn(cell, case, input_size, hidden, threads, split,
                                                              input_projection, bf16_kernel, force_fused):  # fmt: skip
    """Every output of the bfloat16 kernels at most ERROR_RATIO times as far from torch.nn's float64 result as
    torch.nn's own bfloat16 result (odd hidden sizes: the last column pair is half zero)."""
    skip_gru_input_in_step(cell, input_projection)
    ours, exact = fused_pair(case, input_size, hidden, cell)
    ours, theirs = ours.to(torch.bfloat16), copy.deepcopy(exact).to(torch.bfloat16)
    actual = inference_outputs(ours, case, torch.bfloat16)
    assert_as_close_to_float64(actual, inference_outputs(theirs, case, torch.bfloat16),
                               inference_outputs(exact, case, torch.float64), torch.bfloat16, relative_floor=True)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_bf16_plan_has_a_forward_and_no_backward(mode):
    runs = bf16_kernel_runs()
    assert plan(dtype=torch.bfloat16, mode=mode, force="fused")[0] == ("fused" if runs else "loop")
    path, reason, _, _ = plan(dtype=torch.bfloat16, mode=mode, force="fused", backward=True)
    assert path == "loop" and ("no bfloat16 backward" if runs else "AVX512-BF16") in reason


@pytest.mark.parametrize("case,input_size,hidden", TRAINING_BF16_CASES.values(), ids=TRAINING_BF16_CASES.keys())
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_bf16_training_as_close_to_float64_as_torch_nn(cell, case, input_size, hidden, threads, input_projection,
                                                      bf16_kernel, force_fused):  # fmt: skip
    """bfloat16 training: the fused forward saves the loop's activations and the loop's backward runs on them (forced
    fused, the backward is not an error); every output and gradient at most ERROR_RATIO times as far from float64 as
    torch.nn's bfloat16 run."""
    skip_gru_input_in_step(cell, input_projection)
    ours, exact = fused_pair(case, input_size, hidden, cell)
    ours, theirs = ours.to(torch.bfloat16), copy.deepcopy(exact).to(torch.bfloat16)
    actual = forward_backward(ours, input_maker(ours, case, torch.bfloat16))
    assert_as_close_to_float64(actual, forward_backward(theirs, input_maker(theirs, case, torch.bfloat16)),
                               forward_backward(exact, input_maker(exact, case, torch.float64)), torch.bfloat16,
                               relative_floor=True)  # fmt: skip


@pytest.mark.skipif(not _build.is_x86(), reason="the AVX2/AVX-512 variants exist on x86-64 only")
@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_narrower_variants_in_their_own_process(capability):
    """The AVX2 (8-unit panels, 3-row tiles) and baseline variants, selected by ATEN_CPU_CAPABILITY, pass the
    parity cases, forward and backward, and get their own planner thresholds and `auto` rule."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
    child = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-k",
         "fused_matches_float64 and training and (N7 or packed_bidir) or saves_what or matches_the_loop or plan_ "
         "or auto_sends_float32 or input_projection_either_way and (N7 or N17)"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-2000:]


# ---------------------------------------------------------------------------------------------------------------
# `auto`: the C++ backend for the float32 LSTM calls where the fused kernels measured faster than torch.nn


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() != "AVX512", reason="measured on the AVX-512 variant only")
@pytest.mark.parametrize(
    "batch,dtype,needs_grad,proj_size,expected",
    [
        (1, torch.float32, False, 0, native.PREFERENCE["cpu"]),
        (native.CPU_FUSED_LSTM_AUTO_MAX_BATCH, torch.float32, False, 0, native.PREFERENCE["cpu"]),
        (native.CPU_FUSED_LSTM_AUTO_MAX_BATCH + 1, torch.float32, False, 0, native.PREFERENCE["cpu"]),
        (64, torch.float32, False, 0, native.PREFERENCE["cpu"]),
        (65, torch.float32, False, 0, native.CPU_LSTM_PREFERENCE),  # past the planner's AVX-512 limit
        (4, torch.float32, True, 0, native.PREFERENCE["cpu"]),
        (16, torch.float32, True, 0, native.CPU_LSTM_PREFERENCE),  # training at mid batch: small layers lost
        (32, torch.float32, True, 0, native.PREFERENCE["cpu"]),
        (4, torch.float64, False, 0, native.CPU_LSTM_PREFERENCE),
        (4, torch.float32, False, 3, native.CPU_LSTM_PREFERENCE),
        (None, torch.float32, False, 0, native.CPU_LSTM_PREFERENCE),
    ],
    ids=["N1", "N4", "N5", "N64", "N65", "training_N4", "training_N16", "training_N32", "float64", "projection",
         "unknown_batch"],
)
def test_auto_prefers_cpu_where_the_fused_forward_beat_torch(batch, dtype, needs_grad, proj_size, expected):
    call = RNNCall(mode="LSTM", device_type="cpu", dtype=dtype, input_size=16, hidden_size=16, proj_size=proj_size,
                   batch_size=batch, seq_len=100, needs_grad=needs_grad)  # fmt: skip
    assert native.CPU_BACKEND.preference(call) == expected


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() != "AVX512", reason="measured on the AVX-512 variant only")
@pytest.mark.parametrize(
    "batch,needs_grad,native_bf16",
    [(1, False, True), (native.CPU_FUSED_LSTM_AUTO_MAX_BATCH, False, True), (64, False, True), (65, False, False),
     (4, False, False)],
    ids=["N1", "N4", "N64", "N65", "no_bf16_kernel"],
)
def test_auto_prefers_cpu_for_bf16_inference_where_the_bf16_kernel_runs(batch, needs_grad, native_bf16, monkeypatch):
    """bfloat16 inference up to 64 rows comes to `cpu` where the CPU has the bfloat16 kernel; elsewhere (and past
    the batch limit) it stays with torch, unless the call is upcast to float32 (cpu_precision), which comes anyway."""
    monkeypatch.setenv("FUSEDRNN_CPU_HALF_COMPUTE", "storage")  # the bfloat16 path itself, on any CPU
    call = RNNCall(mode="LSTM", device_type="cpu", dtype=torch.bfloat16, input_size=16, hidden_size=16,
                   batch_size=batch, seq_len=100, needs_grad=needs_grad)  # fmt: skip
    runs = native_bf16 and bf16_kernel_runs()
    if native_bf16 and not runs:
        pytest.skip("this CPU has no AVX512-BF16")
    expected = native.PREFERENCE["cpu"] if runs else native.CPU_LSTM_PREFERENCE
    if not native_bf16 and batch <= native.CPU_FUSED_LSTM_AUTO_MAX_BATCH:  # the case of a CPU without the kernel
        monkeypatch.setattr(native, "_fused_lstm_planned", lambda *args: False)
    assert native.CPU_BACKEND.preference(call) == expected


@pytest.mark.parametrize(
    "batch,hidden,comes",
    [(64, 512, True), (64, 1024, True), (None, 512, True), (4, 128, True), (32, 128, False), (16, 256, False),
     (None, 256, False)],
    ids=["N64_H512", "N64_H1024", "unknown_batch_H512", "N4_H128", "N32_H128", "N16_H256", "unknown_batch_H256"],
)  # fmt: skip
def test_auto_sends_bf16_lstm_training_to_cpu_but_small_layers_at_mid_batch(batch, hidden, comes, monkeypatch):
    """bfloat16 training: from H=512, or at most 4 rows (native.CPU_BF16_TRAINING_MIN_HIDDEN), whether or not the
    bfloat16 kernel runs (the loop's backward is what wins)."""
    monkeypatch.setenv("FUSEDRNN_CPU_HALF_COMPUTE", "storage")  # the bfloat16 path itself, not the upcast
    monkeypatch.setattr(native, "_fused_lstm_planned", lambda *args: False)
    call = RNNCall(mode="LSTM", device_type="cpu", dtype=torch.bfloat16, input_size=hidden, hidden_size=hidden,
                   batch_size=batch, seq_len=100, needs_grad=True)  # fmt: skip
    expected = native.PREFERENCE["cpu"] if comes else native.CPU_LSTM_PREFERENCE
    assert native.CPU_BACKEND.preference(call) == expected


@pytest.mark.parametrize(
    "batch,hidden,comes",
    [(1, 512, True), (4, 512, True), (4, 256, True), (4, 1024, True), (1, 1025, False), (5, 256, "AVX512"),
     (64, 1024, "AVX512")],
    ids=["N1_H512", "N4_H512", "N4_H256", "N4_H1024_W_hh_16MB", "N1_H1025_past_16MB", "N5", "N64_H1024"],
)  # fmt: skip
def test_auto_sends_float32_lstm_to_cpu_at_small_batch_up_to_a_16mb_w_hh(batch, hidden, comes):
    """Up to 4 rows, float32 W_hh of at most 16 MB: the cells the fused kernels won (native.py), on the AVX-512 and
    AVX2 variants (comes: True), and past 4 rows on the AVX-512 variant alone ("AVX512"); the baseline one is
    unmeasured and keeps torch (test_narrower_variants_in_their_own_process runs this test under each)."""
    call = RNNCall(mode="LSTM", device_type="cpu", dtype=torch.float32, input_size=hidden, hidden_size=hidden,
                   batch_size=batch, seq_len=100, needs_grad=False)  # fmt: skip
    capability = ops.cpu_capability()
    measured = capability in native.CPU_FUSED_LSTM_AUTO_CAPABILITIES and comes in (True, capability)
    expected = native.PREFERENCE["cpu"] if measured else native.CPU_LSTM_PREFERENCE
    assert native.CPU_BACKEND.preference(call) == expected
