"""Issue #15's variants on the `triton` backend (fusedrnn.triton_variant_ops, fusedrnn.kernels.variants): the layer
against fusedrnn.reference.rnn_layer, every output and every gradient (LN gains included); modules against the
reference backend (packed, bidirectional, seeded training zoneout); the planner's paths and refusals.

Without a GPU the kernels run under Triton's interpreter in float32 only: they keep their state and statistics in
fp32 whatever the input dtype, so float64 would be compared at fp32 accuracy (the backend serves fp32 there).
tests/test_variants_modules.py also runs the modules on this backend; test_triton_compile.py builds the kernels for
sm_90.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
from fusedrnn import reference, registry
from fusedrnn.kernels import plan
from fusedrnn.reference import LayerNormWeights, ZoneoutMasks
from devices import DEVICE, needs_cuda
from parity import TOLERANCES, assert_all_close, assert_as_close_to_float64, dropout_drawn_as_float32, forward_backward

TRITON_REASON = registry.availability()["triton"]
#: On a GPU the whole file runs there: `gpu` selects it for the GPU run.
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(TRITON_REASON is not None, reason=f"triton backend unavailable: {TRITON_REASON}")]
DTYPE = torch.float32


@dataclasses.dataclass(frozen=True)
class Variant:
    mode: str
    layer_norm: bool = False
    zoneout_h: bool = False
    zoneout_c: bool = False


VARIANTS = {
    "ln_lstm": Variant("LSTM", layer_norm=True),
    "ln_gru": Variant("GRU", layer_norm=True),
    "indrnn_tanh": Variant("INDRNN_TANH"),
    "indrnn_relu": Variant("INDRNN_RELU"),
    "lstm_zoneout_h_c": Variant("LSTM", zoneout_h=True, zoneout_c=True),
    "lstm_zoneout_h": Variant("LSTM", zoneout_h=True),
    "gru_zoneout": Variant("GRU", zoneout_h=True),
    "rnn_tanh_zoneout": Variant("RNN_TANH", zoneout_h=True),
    "ln_lstm_zoneout": Variant("LSTM", layer_norm=True, zoneout_h=True, zoneout_c=True),
    "ln_gru_zoneout": Variant("GRU", layer_norm=True, zoneout_h=True),
    "indrnn_relu_zoneout": Variant("INDRNN_RELU", zoneout_h=True),
}


@dataclasses.dataclass(frozen=True)
class Case:
    T: int
    N: int
    I: int
    H: int
    bias: bool = True
    states: bool = True
    lengths: tuple[int, ...] | None = None
    reverse: bool = False
    training: bool = True  # zoneout masks: 0/1 draws (training) or the rate everywhere (eval)


# 19 is no multiple of the 16-wide tiles; 70 needs two hidden tiles of the tiled / elementwise kernels (64 wide) and a
# padded 128-wide row in the rowwise one, batch 17 two batch tiles; T=1 N=1 the smallest launch.
CASES = {
    "T5_N3_H19": Case(5, 3, 4, 19),
    "lengths_reverse_eval": Case(5, 3, 4, 19, lengths=(5, 2, 4), reverse=True, training=False),
    "lengths_no_bias_no_states": Case(5, 3, 4, 19, bias=False, states=False, lengths=(3, 5, 1)),
    "T3_N17_H70_two_tiles": Case(3, 17, 6, 70, lengths=tuple(1 + n % 3 for n in range(17))),
    "T1_N1_H5": Case(1, 1, 3, 5),
}
ZONEOUT_RATE = 0.35


def layer_inputs(variant: Variant, case: Case, seed: int = 0):
    """(tensors, norm, zoneout, lengths): random leaves for one layer call, LN gains away from 1 and 0 so that a
    misplaced gain shows."""
    generator = torch.Generator().manual_seed(seed)
    G, H = reference.GATES[variant.mode], case.H

    def rand(*shape, scale=0.5, offset=0.0):
        return (offset + scale * torch.randn(*shape, generator=generator, dtype=DTYPE)).requires_grad_()

    elementwise = variant.mode in reference.ELEMENTWISE_RECURRENCE
    x = rand(case.T, case.N, case.I, scale=1.0)
    hx = rand(case.N, H) if case.states else None
    cx = rand(case.N, H) if case.states and variant.mode == "LSTM" else None
    w_ih = rand(G * H, case.I)
    w_hh = rand(H) if elementwise else rand(G * H, H, scale=0.3)
    b_ih = rand(G * H, scale=0.2) if case.bias else None
    b_hh = rand(G * H, scale=0.2) if case.bias else None
    norm = None
    if variant.layer_norm:
        lstm = variant.mode == "LSTM"
        norm = LayerNormWeights(rand(G * H, scale=0.3, offset=1.0), rand(G * H, scale=0.3, offset=1.0),
                                rand(H, scale=0.3, offset=1.0) if lstm else None,
                                rand(H, scale=0.3) if lstm and case.bias else None)  # fmt: skip
    zoneout = None
    if variant.zoneout_h:
        shape = (case.T, case.N, H)

        def mask():
            if case.training:
                return torch.bernoulli(torch.full(shape, ZONEOUT_RATE, dtype=DTYPE), generator=generator)
            return torch.full(shape, ZONEOUT_RATE, dtype=DTYPE)

        zoneout = ZoneoutMasks(mask(), mask() if variant.zoneout_c else None)
    lengths = None if case.lengths is None else torch.tensor(case.lengths)
    return (x, hx, cx, w_ih, w_hh, b_ih, b_hh), norm, zoneout, lengths


def run_layer(layer, variant, tensors, norm, zoneout, lengths, reverse, seed=1):
    """Outputs and the gradients of every leaf for random upstream gradients of every output."""
    x, hx, cx, w_ih, w_hh, b_ih, b_hh = tensors
    outputs = [o for o in layer(variant.mode, x, hx, cx, w_ih, w_hh, b_ih, b_hh, reverse=reverse, lengths=lengths,
                                norm=norm, zoneout=zoneout) if o is not None]  # fmt: skip
    leaves = [t for t in (*tensors, *(norm or ())) if t is not None]
    generator = torch.Generator().manual_seed(seed)
    # Drawn in float64 and rounded, so a float64 run of the same layer gets the same upstream gradients.
    upstream = [torch.randn(o.shape, generator=generator, dtype=torch.float64).to(o) for o in outputs]
    grads = torch.autograd.grad(outputs, leaves, upstream)
    return [o.detach() for o in outputs], list(grads)


def reference_layer(mode, x, hx, cx, w_ih, w_hh, b_ih, b_hh, **kwargs):
    return reference.rnn_layer(mode, x, hx, cx, w_ih, w_hh, b_ih, b_hh, None, **kwargs)


def triton_layer(*args, **kwargs):
    from fusedrnn import triton_variant_ops

    return triton_variant_ops.rnn_layer(*args, **kwargs)


def in_float64(tensors, norm, zoneout):
    """The same layer inputs in float64 (fresh leaves), for the float64 truth."""

    def copy(t, leaf=True):
        return None if t is None else t.detach().double().requires_grad_(leaf)

    norm = None if norm is None else LayerNormWeights(*(copy(t) for t in norm))
    zoneout = None if zoneout is None else ZoneoutMasks(*(copy(t, leaf=False) for t in zoneout))
    return tuple(copy(t) for t in tensors), norm, zoneout


@pytest.mark.parametrize("case_id", list(CASES))
@pytest.mark.parametrize("variant_id", list(VARIANTS))
def test_layer_matches_reference(variant_id, case_id):
    """The float32 kernels against the reference in float64 (the truth, not the reference's own float32 rounding),
    within the float32 tolerance: every output and every gradient."""
    assert_matches_float64_reference(VARIANTS[variant_id], CASES[case_id])


def assert_matches_float64_reference(variant: Variant, case: Case) -> None:
    tensors, norm, zoneout, lengths = layer_inputs(variant, case)
    expected = run_layer(reference_layer, variant, *in_float64(tensors, norm, zoneout), lengths, case.reverse)
    actual = run_layer(triton_layer, variant, tensors, norm, zoneout, lengths, case.reverse)
    for kind, got, want in zip(("output", "gradient"), actual, expected):
        assert len(got) == len(want)
        for index, (a, e) in enumerate(zip(got, want)):
            assert a.dtype == DTYPE, f"{kind} {index}: {a.dtype}"
            torch.testing.assert_close(a.double(), e, **TOLERANCES[DTYPE],
                                       msg=lambda m, k=kind, i=index: f"{k} {i}: {m}")  # fmt: skip


#: Layer norm above plan.MAX_NORM_HIDDEN: the chunked kernels (fusedrnn.kernels.variants_chunked). The interpreter
#: runs them slowly (H = 1024: ~20 s per direction and call on 2 cores), so the batches and sequences are tiny. 136 is
#: three hidden tiles of 64 (the last partial) over two batch tiles; 256 and 1024 the issue's sizes.
WIDE_CASES = {
    "T2_N17_H136_partial_tile": Case(2, 17, 3, 136, lengths=tuple(1 + n % 2 for n in range(17))),
    "T3_N2_H256_lengths_reverse": Case(3, 2, 3, 256, lengths=(3, 1), reverse=True),
    "T2_N2_H256_no_bias_no_states_eval": Case(2, 2, 3, 256, bias=False, states=False, training=False),
    "T2_N1_H1024": Case(2, 1, 3, 1024),
}
WIDE_VARIANTS = ["ln_lstm_zoneout", "ln_gru_zoneout", "ln_lstm", "ln_gru"]
#: H = 1024 is the slowest under the interpreter: one LSTM and one GRU there.
WIDE_PARAMS = [pytest.param(variant, case, id=f"{variant}-{case}") for case in WIDE_CASES for variant in WIDE_VARIANTS
               if WIDE_CASES[case].H < 1024 or variant in ("ln_lstm_zoneout", "ln_gru")]  # fmt: skip


@pytest.mark.parametrize("variant_id, case_id", WIDE_PARAMS)
def test_chunked_layer_norm_matches_reference(variant_id, case_id):
    """Wide rows: the plan is the chunked one, and the float32 kernels match the float64 reference in every output
    and gradient (LN gains included), as test_layer_matches_reference."""
    variant, case = VARIANTS[variant_id], WIDE_CASES[case_id]
    chosen = plan.plan_variant(_problem(N=case.N, H=case.H, G=reference.GATES[variant.mode], element_size=4), True,
                               elementwise=False)  # fmt: skip
    assert chosen.kernel == "chunked"
    assert_matches_float64_reference(variant, case)


def assert_every_element_written(variant: Variant, case: Case, monkeypatch) -> None:
    """Every buffer the ops allocate starts as NaN: an element the kernels forget to write (a padded column of the
    row, a finished row, a second tile, the workspace) would surface in some output or gradient."""
    new_empty = torch.Tensor.new_empty

    def poisoned(self, *args, **kwargs):
        out = new_empty(self, *args, **kwargs)
        return out.fill_(float("nan")) if out.is_floating_point() else out

    tensors, norm, zoneout, lengths = layer_inputs(variant, case)
    expected = run_layer(reference_layer, variant, tensors, norm, zoneout, lengths, case.reverse)
    monkeypatch.setattr(torch.Tensor, "new_empty", poisoned)
    actual = run_layer(triton_layer, variant, tensors, norm, zoneout, lengths, case.reverse)
    for got, want in zip(actual[0] + actual[1], expected[0] + expected[1]):
        torch.testing.assert_close(got, want, **TOLERANCES[DTYPE])


def test_chunked_layer_norm_writes_every_element(monkeypatch):
    """The partial third hidden tile, the second batch tile and the finished rows are all written, and nothing is
    read from the workspace before it is written."""
    assert_every_element_written(VARIANTS["ln_lstm_zoneout"], WIDE_CASES["T2_N17_H136_partial_tile"], monkeypatch)


def test_chunked_layer_norm_no_grad_forward_matches():
    """Inference (no SAVE): the chunked forward keeps c~ and o in its workspace only."""
    variant, case = VARIANTS["ln_lstm_zoneout"], WIDE_CASES["T3_N2_H256_lengths_reverse"]
    tensors, norm, zoneout, lengths = layer_inputs(variant, case)
    with torch.no_grad():
        actual = triton_layer(variant.mode, *tensors, norm=norm, zoneout=zoneout, lengths=lengths, reverse=True)
        expected = reference_layer(variant.mode, *tensors, norm=norm, zoneout=zoneout, lengths=lengths, reverse=True)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, **TOLERANCES[DTYPE])


def converted(tensors, norm, zoneout, dtype, device):
    """The layer inputs as fresh leaves in `dtype` on `device` (the masks as constants)."""

    def copy(t, leaf=True):
        return None if t is None else t.detach().to(device, dtype).requires_grad_(leaf)

    norm = None if norm is None else LayerNormWeights(*(copy(t) for t in norm))
    zoneout = None if zoneout is None else ZoneoutMasks(*(copy(t, leaf=False) for t in zoneout))
    return tuple(copy(t) for t in tensors), norm, zoneout


def as_result(run):
    """run_layer's (outputs, gradients) as a dict on the CPU, for parity.assert_as_close_to_float64."""
    outputs, grads = run
    result = {f"output[{i}]": o.cpu() for i, o in enumerate(outputs)}
    result.update({f"grad[{i}]": g.cpu() for i, g in enumerate(grads)})
    return result


#: The 16-bit case: two hidden tiles, two batch tiles, lengths, training masks (one compiled kernel set per variant
#: and dtype is most of its GPU cost).
LOW_PRECISION_CASE = "T3_N17_H70_two_tiles"


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("variant_id", list(VARIANTS))
def test_layer_low_precision_against_float64(variant_id, dtype):
    """float16/bfloat16 on the GPU: every output and gradient against the reference in float64 on the CPU (the same
    rounded values), no further from it than ERROR_RATIO times the reference's own error in that dtype (on the GPU), or
    within the dtype's tolerance relative to the largest value, as test_variants_cpu's 16-bit test for `cpu`."""
    assert_low_precision_close_to_float64(VARIANTS[variant_id], CASES[LOW_PRECISION_CASE], dtype)


def assert_low_precision_close_to_float64(variant: Variant, case: Case, dtype: torch.dtype) -> None:
    tensors, norm, zoneout, lengths = layer_inputs(variant, case)
    low = converted(tensors, norm, zoneout, dtype, DEVICE)
    exact = converted(*low, torch.float64, "cpu")
    device_lengths = None if lengths is None else lengths.to(DEVICE)
    truth = as_result(run_layer(reference_layer, variant, *exact, lengths, case.reverse))
    theirs = as_result(run_layer(reference_layer, variant, *converted(*low, dtype, DEVICE), device_lengths,
                                 case.reverse))  # fmt: skip
    ours = as_result(run_layer(triton_layer, variant, *low, device_lengths, case.reverse))
    assert_as_close_to_float64(ours, theirs, truth, dtype, relative_floor=True)


#: The chunked kernels at the issue's sizes on the GPU (a bigger batch than the interpreter affords).
WIDE_GPU_CASES = {"T5_N17_H256_lengths": Case(5, 17, 8, 256, lengths=tuple(1 + n % 5 for n in range(17))),
                  "T3_N3_H1024_reverse": Case(3, 3, 8, 1024, lengths=(3, 1, 2), reverse=True)}  # fmt: skip


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("case_id", list(WIDE_GPU_CASES))
@pytest.mark.parametrize("variant_id", ["ln_lstm_zoneout", "ln_gru_zoneout", "ln_lstm", "ln_gru"])
def test_chunked_layer_norm_low_precision_against_float64(variant_id, case_id, dtype):
    """float16/bfloat16 wide rows on the GPU, as test_layer_low_precision_against_float64."""
    assert_low_precision_close_to_float64(VARIANTS[variant_id], WIDE_GPU_CASES[case_id], dtype)


@pytest.mark.parametrize("variant_id", ["ln_lstm_zoneout", "ln_gru_zoneout", "lstm_zoneout_h_c", "indrnn_relu_zoneout"])
def test_no_unwritten_elements(variant_id, monkeypatch):
    assert_every_element_written(VARIANTS[variant_id], CASES["T3_N17_H70_two_tiles"], monkeypatch)


def test_no_grad_forward_saves_nothing_and_matches():
    variant, case = VARIANTS["ln_lstm_zoneout"], CASES["T5_N3_H19"]
    tensors, norm, zoneout, lengths = layer_inputs(variant, case)
    with torch.no_grad():
        actual = triton_layer(variant.mode, *tensors, norm=norm, zoneout=zoneout, lengths=lengths)
        expected = reference_layer(variant.mode, *tensors, norm=norm, zoneout=zoneout, lengths=lengths)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, **TOLERANCES[DTYPE])


# ----------------------------------------------------------------------------------------------------------------
# Modules: triton against the reference backend, packed and bidirectional, training zoneout seeded alike

MODULES = {
    "ln_lstm_zoneout_pair": (fusedrnn.LayerNormLSTM, {"zoneout": (0.3, 0.2)}),
    "ln_gru_no_bias": (fusedrnn.LayerNormGRU, {"bias": False, "zoneout": 0.3}),
    "indrnn_relu": (fusedrnn.IndRNN, {"nonlinearity": "relu", "zoneout": 0.3}),
    "lstm_zoneout_weight_dropout": (fusedrnn.LSTM, {"zoneout": 0.3, "weight_dropout": 0.3}),
}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("module_id", list(MODULES))
def test_packed_bidirectional_module_matches_reference_backend(module_id, training):
    """Two layers, both directions, packed: the triton module against the reference backend's in float64 (the truth),
    at most ERROR_RATIO times the reference backend's own float32 error, or within the float32 tolerance relative to
    the largest value."""
    cls, kwargs = MODULES[module_id]
    I, H, T, N = 3, 6, 5, 4
    modules = []
    for backend in ("triton", "reference"):
        torch.manual_seed(0)
        module = cls(I, H, num_layers=2, bidirectional=True, backend=backend, **kwargs)
        with torch.no_grad():
            for name, p in module.named_parameters():
                if name.startswith("ln_"):
                    p.add_(0.3 * torch.randn_like(p))
        modules.append(module.train(training))
    modules[1].load_state_dict(modules[0].state_dict())
    x = torch.randn(T, N, I, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    lengths = torch.tensor([5, 3, 4, 1])

    def make_inputs(dtype):
        def inputs():
            leaf = x.to(dtype).requires_grad_()
            return (pack_padded_sequence(leaf, lengths, enforce_sorted=False),), {"x": leaf}

        return inputs

    results = []
    for module, dtype in zip((*modules, copy.deepcopy(modules[1]).double()), (DTYPE, DTYPE, torch.float64)):
        torch.manual_seed(7)  # the same zoneout / weight_dropout draws for every run
        with dropout_drawn_as_float32() if dtype == torch.float64 else contextlib.nullcontext():
            results.append(forward_backward(module, make_inputs(dtype)))
    assert_as_close_to_float64(*results, DTYPE, relative_floor=True)


CELLS = {
    "ln_lstm_cell": (fusedrnn.LayerNormLSTMCell, {}),
    "ln_gru_cell": (fusedrnn.LayerNormGRUCell, {}),
    "indrnn_tanh_cell": (fusedrnn.IndRNNCell, {}),
}


@pytest.mark.parametrize("cell_id", list(CELLS))
def test_cell_matches_reference_backend(cell_id):
    """One step (the layer kernels at T=1): output and every gradient."""
    cls, kwargs = CELLS[cell_id]
    cells = []
    for backend in ("triton", "reference"):
        torch.manual_seed(0)
        cells.append(cls(3, 5, backend=backend, **kwargs))
    generator = torch.Generator().manual_seed(3)
    x, h, c = (torch.randn(2, n, generator=generator) for n in (3, 5, 5))

    def make_inputs():
        leaves = {"x": x.clone().requires_grad_(), "h": h.clone().requires_grad_(), "c": c.clone().requires_grad_()}
        state = (leaves["h"], leaves["c"]) if cls is fusedrnn.LayerNormLSTMCell else leaves["h"]
        if cls is not fusedrnn.LayerNormLSTMCell:
            del leaves["c"]
        return (leaves["x"], state), leaves

    assert_all_close(*(forward_backward(cell, make_inputs) for cell in cells), DTYPE)


@pytest.mark.parametrize("module_id", ["ln_lstm_zoneout_pair", "indrnn_relu"])
def test_fullgraph_compile_equals_eager(module_id):
    """torch.compile traces the variant ops (and their registered autograd) without graph breaks."""
    cls, kwargs = MODULES[module_id]
    torch.manual_seed(0)
    module = cls(3, 5, backend="triton", **kwargs).eval()  # eval: zoneout's constant masks, no RNG in the graph
    x = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(1))

    def make_inputs():
        leaf = x.clone().requires_grad_()
        return (leaf,), {"x": leaf}

    # Static shapes, from a clean cache and leaving one: after another compile of the same code Dynamo would mark the
    # batch size dynamic, and the registry's selection (an assume_constant_result of the call's sizes) does not take
    # symbolic sizes.
    torch._dynamo.reset()
    try:
        compiled = torch.compile(module, fullgraph=True, backend="aot_eager", dynamic=False)
        result = forward_backward(compiled, make_inputs)
        traced = {key.replace("_orig_mod.", ""): value for key, value in result.items()}
    finally:
        torch._dynamo.reset()
    assert_all_close(traced, forward_backward(module, make_inputs), DTYPE)


# ----------------------------------------------------------------------------------------------------------------
# Planner (plain Python) and the backend's support decisions


def _problem(N=16, H=64, G=4, element_size=2):
    return plan.Problem(batch=N, hidden=H, gates=G, element_size=element_size)


@pytest.mark.parametrize("H, block_h", [(5, 16), (19, 32), (64, 64), (70, 128), (plan.MAX_NORM_HIDDEN, 128)])
def test_layer_norm_plans_one_tile_holding_the_whole_row(H, block_h):
    chosen = plan.plan_variant(_problem(N=17, H=H), layer_norm=True, elementwise=False)
    assert (chosen.kernel, chosen.block_h, chosen.grid) == ("rowwise", block_h, (2, 1))
    assert chosen.block_h >= H and (chosen.warps, chosen.block_k) == (plan.ROWWISE_WARPS, plan.ROWWISE_BLOCK_K)


@pytest.mark.parametrize("H", [plan.MAX_NORM_HIDDEN + 1, 256, 768, plan.MAX_CHUNKED_NORM_HIDDEN])
@pytest.mark.parametrize("G", [4, 3], ids=["lstm", "gru"])
def test_layer_norm_beyond_one_tile_plans_the_chunked_kernels(H, G):
    chosen = plan.plan_variant(_problem(N=40, H=H, G=G), layer_norm=True, elementwise=False)
    assert (chosen.kernel, chosen.grid, chosen.block_n) == ("chunked", (3, 1), plan.TILED_BLOCK_N)  # ceil(40 / 16)
    assert (chosen.block_h, chosen.block_k, chosen.warps) == (plan.CHUNKED_BLOCK_H, plan.CHUNKED_BLOCK_K,
                                                              plan.CHUNKED_WARPS)  # fmt: skip
    # The workspace holds the G*H raw row and the LSTM's c~ and o: (G + 2) * H columns at most.
    assert chosen.workspace_columns == plan.CHUNKED_WORKSPACE_GATES * H >= (G + 2) * H
    tuned = plan.plan_variant(_problem(H=H, G=G), True, False, tuning=plan.Tuning(block_h=32, block_k=16, warps=4))
    assert (tuned.kernel, tuned.block_h, tuned.block_k, tuned.warps) == ("chunked", 32, 16, 4)


def test_layer_norm_refuses_rows_too_wide_for_one_program():
    with pytest.raises(plan.Refused, match=r"hidden size 1025 > 1024.*grows as H\^2"):
        plan.plan_variant(_problem(H=plan.MAX_CHUNKED_NORM_HIDDEN + 1), layer_norm=True, elementwise=False)
    with pytest.raises(plan.Refused, match="block_h=32 < H=70"):
        plan.plan_variant(_problem(H=70), True, False, tuning=plan.Tuning(block_h=32))
    with pytest.raises(plan.Refused, match="chunked.*block_h=8"):
        plan.plan_variant(_problem(H=256), True, False, tuning=plan.Tuning(block_h=8))


@pytest.mark.parametrize("layer_norm, reason", [(True, "cross-program"), (False, "pre-zoneout states")],
                         ids=["layer_norm", "zoneout"])
def test_persistent_kernels_refuse_layer_norm_and_zoneout_with_the_reason(layer_norm, reason):
    with pytest.raises(plan.Refused, match=reason):
        plan.plan_variant(_problem(), layer_norm, elementwise=False, kernel="persistent")


def test_zoneout_runs_the_tiled_loop_for_any_hidden_size():
    chosen = plan.plan_variant(_problem(N=3, H=4096), layer_norm=False, elementwise=False)
    assert (chosen.kernel, chosen.block_h, chosen.grid, chosen.warps) == ("tiled", plan.TILED_BLOCK_H, (1, 1),
                                                                          plan.TILED_WARPS)  # fmt: skip


@pytest.mark.parametrize("kernel", plan.KERNELS)
def test_indrnn_is_elementwise_and_persistent_by_construction(kernel):
    chosen = plan.plan_variant(_problem(N=40, H=200, G=1), False, elementwise=True, kernel=kernel)
    assert (chosen.kernel, chosen.grid) == ("elementwise", (3, 4))  # (ceil(40 / 16), ceil(200 / 64)) programs


def test_variant_plan_refusals():
    with pytest.raises(plan.Refused, match="projection"):
        plan.plan_variant(dataclasses.replace(_problem(), projection=True), False, False)
    with pytest.raises(plan.Refused, match="32-bit offsets"):
        plan.plan_variant(_problem(N=2**20, H=1024), False, False)
    with pytest.raises(ValueError, match="expected one of"):
        plan.plan_variant(_problem(), False, False, kernel="fast")


@pytest.mark.parametrize("H", [plan.MAX_NORM_HIDDEN, 256, 512, plan.MAX_CHUNKED_NORM_HIDDEN])
def test_backend_serves_layer_norm_up_to_the_chunked_bound(H):
    backend = registry.get_backend("triton")
    for mode in ("LSTM", "GRU"):
        call = registry.RNNCall(mode, DEVICE, DTYPE, 4, H, layer_norm=True, zoneout=True)
        assert backend.unsupported_reason(call) is None, mode


def test_backend_serves_the_variants_and_says_why_not_above_the_layer_norm_bound():
    backend = registry.get_backend("triton")
    call = registry.RNNCall("LSTM", DEVICE, DTYPE, 4, plan.MAX_NORM_HIDDEN, layer_norm=True, zoneout=True)
    assert backend.unsupported_reason(call) is None
    for mode in reference.ELEMENTWISE_RECURRENCE:
        assert backend.unsupported_reason(dataclasses.replace(call, mode=mode, layer_norm=False)) is None
    wide = dataclasses.replace(call, hidden_size=plan.MAX_CHUNKED_NORM_HIDDEN + 1)
    assert "whole row" in backend.unsupported_reason(wide)
    assert backend.unsupported_reason(dataclasses.replace(wide, layer_norm=False)) is None  # zoneout: any H


def test_forced_persistent_kernels_refuse_layer_norm_with_a_backend_error(monkeypatch):
    monkeypatch.setenv(plan.KERNEL_ENV, "persistent")
    module = fusedrnn.LayerNormGRU(3, 5, backend="triton")
    with pytest.raises(registry.BackendError, match="cross-program"):
        module(torch.randn(2, 1, 3))
