"""The `cpu` backend's fused kernels for the issue-#15 variants (layer-norm LSTM/GRU, IndRNN, zoneout) against the
oracle fusedrnn.reference.rnn_layer, one layer direction at a time: every output and every gradient (x, h0, c0, the
weights, the layer-norm gains, u), float64 at the parity tolerance and float32 at the table's, with lengths (a padded
packed batch), reverse, bias or none, zoneout masks drawn (training) or at the rate (eval); one-step cells; gradcheck
of the kernels' own backward; zero-size batches. The modules over this backend (stacks, bidirectional, packed input)
are tested in tests/test_variants_modules.py."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fusedrnn import registry
from fusedrnn.backends.native import NativeBackend
from fusedrnn.reference import GATES, LayerNormWeights, ZoneoutMasks, rnn_layer
from parity import TOLERANCES, assert_as_close_to_float64

pytestmark = pytest.mark.skipif(
    registry.get_backend("cpu").unavailable_reason() is not None, reason="the compiled extension is not available"
)
CPU = registry.get_backend("cpu")

#: H = 13 leaves a partial vector lane in every row (8 floats / 4 doubles per AVX2 lane), so the row sums of the
#: layer norms see the masked tail.
T, N, I, H = 6, 4, 5, 13
LENGTHS = [6, 2, 5, 1]  # unsorted, with a row that stops after one step
#: Per case: (mode, layer norm?, zoneout rates (p_h, p_c) or None).
CASES = {
    "ln_lstm": ("LSTM", True, None),
    "ln_gru": ("GRU", True, None),
    "indrnn_tanh": ("INDRNN_TANH", False, None),
    "indrnn_relu": ("INDRNN_RELU", False, None),
    "zoneout_lstm": ("LSTM", False, (0.3, 0.6)),
    "zoneout_lstm_h_only": ("LSTM", False, (0.4, 0.0)),
    "zoneout_gru": ("GRU", False, (0.4, 0.0)),
    "zoneout_rnn_tanh": ("RNN_TANH", False, (0.5, 0.0)),
    "zoneout_ln_lstm": ("LSTM", True, (0.5, 0.5)),
    "zoneout_ln_lstm_h_only": ("LSTM", True, (0.5, 0.0)),
    "zoneout_ln_gru": ("GRU", True, (0.5, 0.0)),
    "zoneout_indrnn_relu": ("INDRNN_RELU", False, (0.3, 0.0)),
}


def make_layer(case: str, dtype: torch.dtype, bias: bool, training: bool, batch: int = N, seed: int = 0,
               H: int = H, T: int = T):  # fmt: skip
    """(mode, tensors by name (leaves that record gradients), norm, zoneout) with random, nontrivial gains."""
    mode, normed, rates = CASES[case]
    g = torch.Generator().manual_seed(seed)
    G = GATES[mode]
    indrnn = mode.startswith("INDRNN")

    def param(*shape, scale=0.5, offset=0.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + offset).to(dtype).requires_grad_()

    tensors = {
        "x": param(T, batch, I, scale=1.0),
        "hx": param(batch, H),
        "cx": param(batch, H) if mode == "LSTM" else None,
        "w_ih": param(G * H, I),
        "w_hh": param(H, scale=0.6) if indrnn else param(G * H, H),
        "b_ih": param(G * H) if bias else None,
        "b_hh": param(G * H) if bias else None,
    }
    norm = None
    if normed:
        norm = LayerNormWeights(param(G * H, offset=1.0), param(G * H, offset=1.0),
                                param(H, offset=1.0) if mode == "LSTM" else None,
                                param(H) if mode == "LSTM" and bias else None)  # fmt: skip
    zoneout = None
    if rates is not None:

        def mask(p):
            full = torch.full((T, batch, H), p, dtype=torch.float64)
            return (torch.bernoulli(full, generator=g) if training else full).to(dtype)

        p_h, p_c = rates
        zoneout = ZoneoutMasks(mask(p_h), mask(p_c) if mode == "LSTM" and p_c > 0 else None)
    return mode, tensors, norm, zoneout


def leaves(tensors, norm):
    named = {name: t for name, t in tensors.items() if t is not None}
    if norm is not None:
        named.update({f"ln_{name}": t for name, t in norm._asdict().items() if t is not None})
    return named


def run(layer_fn, mode, tensors, norm, zoneout, reverse, lengths, seed=1):
    """Outputs and every gradient of one layer call, with random upstream gradients through y, h_n and c_n."""
    weights = registry.LayerWeights(tensors["w_ih"], tensors["w_hh"], tensors["b_ih"], tensors["b_hh"], None, norm)
    named = leaves(tensors, norm)
    for t in named.values():
        t.grad = None
    outputs = [o for o in layer_fn(mode, tensors["x"], tensors["hx"], tensors["cx"], weights, reverse, lengths,
                                   zoneout) if o is not None]  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    upstream = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o) for o in outputs]
    torch.autograd.backward(outputs, upstream)
    result = {f"output[{i}]": o.detach() for i, o in enumerate(outputs)}
    result.update({f"grad {name}": t.grad for name, t in named.items()})
    return result


def cpu_layer(mode, x, hx, cx, w, reverse, lengths, zoneout):
    return CPU.layer(mode, x, hx, cx, w, reverse, lengths, **({} if zoneout is None else {"zoneout": zoneout}))


def reference_layer(mode, x, hx, cx, w, reverse, lengths, zoneout):
    return rnn_layer(mode, x, hx, cx, w.w_ih, w.w_hh, w.b_ih, w.b_hh, None, reverse, lengths, norm=w.norm,
                     zoneout=zoneout)  # fmt: skip


def assert_same(actual, expected, dtype):
    assert actual.keys() == expected.keys()
    for key, e in expected.items():
        a = actual[key]
        assert (a is None) == (e is None), f"{key}: present in only one run"
        if e is not None:
            torch.testing.assert_close(a, e, **TOLERANCES[dtype], msg=lambda m, key=key: f"{key}: {m}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
#: (bias, reverse) pairs: each value of each flag once, at half the cost of their product (the kernels treat them
#: independently: the bias is folded before the loop, reverse only orders the steps).
@pytest.mark.parametrize("bias, reverse", [(True, False), (False, True)], ids=["bias-fwd", "nobias-rev"])
@pytest.mark.parametrize("case", list(CASES))
def test_layer_matches_reference(case, bias, reverse, lengths, training, dtype):
    if CASES[case][2] is None and not training:
        pytest.skip("no zoneout: training and eval are the same call")
    mode, tensors, norm, zoneout = make_layer(case, dtype, bias, training)
    lengths = None if lengths is None else torch.tensor(lengths)
    actual = run(cpu_layer, mode, tensors, norm, zoneout, reverse, lengths)
    # The oracle in float64 from the same values: the fp32 kernel is held to the fp32 table against exact math.
    mode, ref_tensors, ref_norm, ref_zoneout = make_layer(case, torch.float64, bias, training)
    expected = run(reference_layer, mode, ref_tensors, ref_norm, ref_zoneout, reverse, lengths)
    assert_same(actual, {k: None if v is None else v.to(dtype) for k, v in expected.items()}, dtype)


def in_float64(tensors, norm, zoneout):
    """The same values (already rounded to their dtype) as float64 leaves: the truth of a run in that dtype."""

    def copy(t, leaf=True):
        return None if t is None else t.detach().double().requires_grad_(leaf)

    norm = None if norm is None else LayerNormWeights(*(copy(t) for t in norm))
    zoneout = None if zoneout is None else ZoneoutMasks(*(copy(t, leaf=False) for t in zoneout))
    return {name: copy(t) for name, t in tensors.items()}, norm, zoneout


#: (case, training): zoneout's 0/1 training masks and its eval rate; without zoneout, one computation.
TRAINING_CASES = [pytest.param(case, training, id=f"{case}-{'train' if training else 'eval'}")
                  for case, (_, _, rates) in CASES.items()
                  for training in ((True, False) if rates else (True,))]  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("case, training", TRAINING_CASES)
def test_layer_low_precision_against_float64(case, training, dtype, cpu_half_compute):
    """float16/bfloat16 (storage in that dtype, math in float32), with lengths, in reverse: every output and gradient
    against the oracle in float64 on the same (rounded) values, no further from it than ERROR_RATIO times the oracle's
    own error in that dtype, or within the dtype's tolerance relative to the largest value (as the plain cells'
    test_cpu_low_precision_against_float64)."""
    mode, tensors, norm, zoneout = make_layer(case, dtype, True, training)
    lengths = torch.tensor(LENGTHS)
    truth = run(reference_layer, mode, *in_float64(tensors, norm, zoneout), True, lengths)
    theirs = run(reference_layer, mode, tensors, norm, zoneout, True, lengths)
    ours = run(cpu_layer, mode, tensors, norm, zoneout, True, lengths)
    assert_as_close_to_float64(ours, theirs, truth, dtype, relative_floor=True)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", ["ln_lstm", "ln_gru", "indrnn_tanh", "indrnn_relu"])
def test_cell_is_one_step_of_the_reference(case, bias):
    mode, tensors, norm, _ = make_layer(case, torch.float64, bias, training=False)
    call = registry.RNNCall(mode, "cpu", torch.float64, I, H, bias=bias, batch_size=N, needs_grad=True,
                            layer_norm=norm is not None)  # fmt: skip
    x = tensors["x"][0]
    weights = registry.LayerWeights(tensors["w_ih"], tensors["w_hh"], tensors["b_ih"], tensors["b_hh"], None, norm)
    named = leaves({**tensors, "x": x}, norm)
    h, c = CPU.cell(call, x, tensors["hx"], tensors["cx"], weights)
    outputs = [o for o in (h, c) if o is not None]
    upstream = [torch.randn_like(o) for o in outputs]
    actual = dict(zip(named, torch.autograd.grad(outputs, list(named.values()), upstream)))
    _, h_ref, c_ref = rnn_layer(mode, x.unsqueeze(0), tensors["hx"], tensors["cx"], tensors["w_ih"], tensors["w_hh"],
                                tensors["b_ih"], tensors["b_hh"], norm=norm)  # fmt: skip
    ref_outputs = [o for o in (h_ref, c_ref) if o is not None]
    expected = dict(zip(named, torch.autograd.grad(ref_outputs, list(named.values()), upstream)))
    for a, e in zip(outputs, ref_outputs):
        torch.testing.assert_close(a, e, **TOLERANCES[torch.float64])
    assert_same(actual, expected, torch.float64)


def kernel_function(mode, norm_fields, zoneout, reverse, lengths):
    """The cpu layer as a function of its differentiable tensors (for gradcheck)."""

    def layer(x, hx, cx, w_ih, w_hh, b_ih, b_hh, *norm):
        weights = registry.LayerWeights(w_ih, w_hh, b_ih, b_hh, None,
                                        LayerNormWeights(*norm, *[None] * (4 - len(norm))) if norm else None)  # fmt: skip
        outputs = cpu_layer(mode, x, hx, cx, weights, reverse, lengths, zoneout)
        return tuple(o for o in outputs if o is not None)

    return layer


@pytest.mark.parametrize("lengths", [None, [3, 1]], ids=["full", "lengths"])
@pytest.mark.parametrize("case", list(CASES))
def test_gradcheck_and_gradgradcheck(case, lengths):
    """The kernels' own backward against finite differences; the double backward (the reference's VJP) too."""
    mode, tensors, norm, zoneout = make_layer(case, torch.float64, True, True, batch=2, H=5, T=3)
    lengths = None if lengths is None else torch.tensor(lengths)
    norm_fields = [] if norm is None else [t for t in norm if t is not None]
    inputs = (tensors["x"], tensors["hx"], tensors["cx"], tensors["w_ih"], tensors["w_hh"], tensors["b_ih"],
              tensors["b_hh"], *norm_fields)  # fmt: skip
    fn = kernel_function(mode, norm_fields, zoneout, False, lengths)
    # The relu cells' kink: keep finite differences away from it by checking in a region without zeros (seeded).
    # fast_mode: finite differences along random directions (the full Jacobian costs minutes on 2 busy cores).
    assert torch.autograd.gradcheck(fn, inputs, atol=1e-6, fast_mode=True)
    if case in ("ln_lstm", "zoneout_ln_gru", "zoneout_indrnn_relu") and lengths is None:
        assert torch.autograd.gradgradcheck(fn, inputs, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("case", list(CASES))
def test_empty_batch(case):
    mode, tensors, norm, zoneout = make_layer(case, torch.float64, True, True, batch=0)
    result = run(cpu_layer, mode, tensors, norm, zoneout, False, None)
    assert result["output[0]"].shape == (T, 0, H)
    for key, grad in result.items():
        if key.startswith("grad ") and key not in ("grad x", "grad hx", "grad cx"):
            assert torch.count_nonzero(grad) == 0, key  # no rows: zero weight gradients, as torch.nn


@pytest.mark.parametrize("hidden", [H, 256, 1024])
def test_cpu_and_cuda_serve_every_variant(hidden):
    """Both claim every variant at any H: cuda runs them all on its per-step loop (layer norm: one block per batch
    row, pointwise_cuda.cu), so `auto` never falls to `reference` on CUDA for one of them."""
    cuda = NativeBackend("cuda")  # its reason for a variant does not depend on a GPU or a CUDA build being here
    reference = registry.get_backend("reference")
    for case, (mode, normed, rates) in CASES.items():
        call = registry.RNNCall(mode, "cpu", torch.float32, I, hidden, layer_norm=normed, zoneout=rates is not None)
        assert CPU.unsupported_reason(call) is None, case
        on_cuda = dataclasses.replace(call, device_type="cuda")
        assert cuda.unsupported_reason(on_cuda) is None, case
        assert cuda.preference(on_cuda) > reference.preference(on_cuda), case  # auto tries cuda first


def op_arguments(case: str, lengths):
    """layer_forward's arguments for a case (detached, contiguous), with the variant tensors by keyword."""
    mode, tensors, norm, zoneout = make_layer(case, torch.float64, True, True)
    t = {name: None if v is None else v.detach() for name, v in tensors.items()}
    norm = (None,) * 4 if norm is None else tuple(None if v is None else v.detach() for v in norm)
    masks = (None, None) if zoneout is None else tuple(zoneout)
    lengths = None if lengths is None else torch.tensor(lengths)
    args = (mode, t["x"], t["hx"], t["cx"], t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"], None, False, True, lengths)
    return args, dict(zip(("ln_ih", "ln_hh", "ln_c_weight", "ln_c_bias", "zoneout_h", "zoneout_c"), (*norm, *masks)))


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("case", list(CASES))
def test_opcheck_variant_ops(case, lengths):
    """Schema, Meta shapes (torch.compile's view of the op) and the registered autograd of both ops."""
    ops = torch.ops.fusedrnn
    args, variants = op_arguments(case, lengths)
    torch.library.opcheck(ops.layer_forward.default, args, variants)
    y, h_n, c_n, workspace = ops.layer_forward(*args, **variants)
    mode, x, h0, c0, w_ih, w_hh, _, _, w_hr, reverse, _, lengths = args
    grads = (torch.randn_like(y), torch.randn_like(h_n), torch.randn_like(c_n) if c0 is not None else None)
    backward_args = (mode, *grads, x, h0, c0, w_ih, w_hh, w_hr, y, workspace, reverse, True, lengths)
    torch.library.opcheck(ops.layer_backward.default, backward_args, variants)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a, v: v.update(ln_hh=None), "both ln_ih and ln_hh"),
        (lambda a, v: v.update(zoneout_h=v["zoneout_h"][:, :1]), "zoneout_h has shape"),
        (lambda a, v: v.update(ln_c_weight=None), "ln_c_weight must be given"),
    ],
    ids=["ln_half", "mask_shape", "ln_c_missing"],
)
def test_bad_variant_arguments_raise(change, message):
    args, variants = op_arguments("zoneout_ln_lstm", None)
    change(args, variants)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.fusedrnn.layer_forward(*args, **variants)


@pytest.mark.parametrize("case", list(CASES))
def test_long_sequence_matches_reference(case):
    """T >= 16: the host loop's prepared-weight GEMMs (loop_views.h: kMinStepsToTransposeWeights), with lengths."""
    long_t = 20
    mode, tensors, norm, zoneout = make_layer(case, torch.float64, True, True, T=long_t)
    lengths = torch.tensor([20, 7, 13, 1])
    actual = run(cpu_layer, mode, tensors, norm, zoneout, True, lengths)
    expected = run(reference_layer, mode, tensors, norm, zoneout, True, lengths)
    assert_same(actual, expected, torch.float64)
