"""The oracle of the issue-#15 variants (fusedrnn.reference): layer-norm LSTM/GRU, IndRNN and zoneout, gradchecked in
float64 and checked against independent formulations (haste's scripted math in haste's own layout, a plain loop)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fusedrnn.reference import (
    GATES,
    LAYER_INPUTS,
    LayerNormWeights,
    ZoneoutMasks,
    layer_inputs,
    layer_norm,
    layer_vjp,
    rnn_layer,
)
from fusedrnn import registry
from haste_formulas import haste_forward
from parity import TOLERANCES

T, N, I, H = 4, 3, 3, 4
LENGTHS = torch.tensor([4, 1, 3])
#: Per case: (mode, layer norm?, zoneout rates (p_h, p_c) or None).
CASES = {
    "ln_lstm": ("LSTM", True, None),
    "ln_gru": ("GRU", True, None),
    "indrnn_tanh": ("INDRNN_TANH", False, None),
    "indrnn_relu": ("INDRNN_RELU", False, None),
    "zoneout_lstm": ("LSTM", False, (0.3, 0.6)),
    "zoneout_lstm_h_only": ("LSTM", False, (0.3, 0.0)),
    "zoneout_gru": ("GRU", False, (0.4, 0.0)),
    "zoneout_ln_lstm": ("LSTM", True, (0.5, 0.5)),
    "zoneout_ln_lstm_h_only": ("LSTM", True, (0.4, 0.0)),
    "zoneout_ln_gru": ("GRU", True, (0.5, 0.0)),
    "zoneout_indrnn": ("INDRNN_TANH", False, (0.5, 0.0)),
}


def randn(*shape, generator):
    return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_()


def make_masks(rates, mode, training: bool, generator) -> ZoneoutMasks | None:
    """Training: 0/1 draws (1 keeps the previous state); eval: the rate everywhere (the expectation)."""
    if rates is None:
        return None

    def mask(p):
        if not training:
            return torch.full((T, N, H), p, dtype=torch.float64)
        return torch.bernoulli(torch.full((T, N, H), p, dtype=torch.float64), generator=generator)

    p_h, p_c = rates
    return ZoneoutMasks(mask(p_h), mask(p_c) if mode == "LSTM" and p_c > 0 else None)


def make_layer(case: str, training: bool = True, seed: int = 0):
    """(mode, tensors: rnn_layer's tensor arguments by name, norm, zoneout) with random, nontrivial gains."""
    mode, normed, rates = CASES[case]
    generator = torch.Generator().manual_seed(seed)
    G = GATES[mode]
    indrnn = mode.startswith("INDRNN")
    tensors = dict(
        x=randn(T, N, I, generator=generator),
        hx=randn(N, H, generator=generator),
        cx=randn(N, H, generator=generator) if mode == "LSTM" else None,
        w_ih=randn(G * H, I, generator=generator),
        w_hh=randn(H, generator=generator) if indrnn else randn(G * H, H, generator=generator),
        b_ih=randn(G * H, generator=generator),
        b_hh=randn(G * H, generator=generator),
    )
    norm = None
    if normed:
        def gain(size):  # around 1, so that a wrong gain index shows
            return (1 + 0.5 * torch.randn(size, generator=generator, dtype=torch.float64)).requires_grad_()

        lstm = mode == "LSTM"
        norm = LayerNormWeights(gain(G * H), gain(G * H), gain(H) if lstm else None,
                                randn(H, generator=generator) if lstm else None)  # fmt: skip
    return mode, tensors, norm, make_masks(rates, mode, training, generator)


def differentiable_inputs(tensors, norm):
    """Names and values of every tensor that takes a gradient (the masks are constants)."""
    named = dict(tensors)
    if norm is not None:
        named.update({f"ln_{k}": v for k, v in norm._asdict().items()})
    return {k: v for k, v in named.items() if v is not None}


def layer_function(mode, tensors, norm, zoneout, reverse, lengths):
    """rnn_layer as a function of the differentiable inputs, for gradcheck."""
    names = list(differentiable_inputs(tensors, norm))

    def run(*values):
        given = dict(zip(names, values))
        args = {k: given.get(k, v) for k, v in tensors.items()}
        ln = None if norm is None else LayerNormWeights(*(given.get(f"ln_{k}") for k in norm._fields))
        y, h, c = rnn_layer(mode, **args, reverse=reverse, lengths=lengths, norm=ln, zoneout=zoneout)
        return (y, h) if c is None else (y, h, c)

    return run, tuple(differentiable_inputs(tensors, norm).values())


#: (case, training): zoneout's 0/1 training masks and its eval rate; without zoneout, one computation.
TRAINING_CASES = [(case, training) for case, (_, _, rates) in CASES.items()
                  for training in ((True, False) if rates else (True,))]  # fmt: skip
TRAINING_IDS = [f"{case}-{'train' if training else 'eval'}" for case, training in TRAINING_CASES]


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["dense", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("case, training", TRAINING_CASES, ids=TRAINING_IDS)
def test_variant_gradcheck(case, training, reverse, lengths):
    mode, tensors, norm, zoneout = make_layer(case, training, seed=3)
    run, inputs = layer_function(mode, tensors, norm, zoneout, reverse, lengths)
    assert torch.autograd.gradcheck(run, inputs)


@pytest.mark.parametrize("case", CASES)
def test_variant_gradgradcheck(case):
    mode, tensors, norm, zoneout = make_layer(case, seed=3)
    run, inputs = layer_function(mode, tensors, norm, zoneout, True, LENGTHS)
    assert torch.autograd.gradgradcheck(run, inputs)


def wrong_mask(masks: ZoneoutMasks, field: str, change) -> ZoneoutMasks:
    return masks._replace(**{field: change(getattr(masks, field))})


#: id -> (case, what to break in (tensors, norm, zoneout), message). Kernels read masks and gains by pointer: a
#: wrong shape must be an error (RuntimeError, as torch.nn's shape checks), never a read past the end.
BAD_VARIANT_INPUTS = {
    "mask_h_length": ("zoneout_lstm", lambda t, n, z: (t, n, wrong_mask(z, "h", lambda m: m[:-1])), "zoneout mask h"),
    "mask_c_batch": ("zoneout_lstm", lambda t, n, z: (t, n, wrong_mask(z, "c", lambda m: m[:, :-1])), "zoneout mask c"),
    "mask_h_size": ("zoneout_gru", lambda t, n, z: (t, n, wrong_mask(z, "h", lambda m: m[..., :-1])), "zoneout mask h"),
    "mask_dtype": ("zoneout_indrnn", lambda t, n, z: (t, n, wrong_mask(z, "h", lambda m: m.float())), "dtype"),
    "indrnn_matrix": ("indrnn_tanh", lambda t, n, z: ({**t, "w_hh": t["w_hh"].detach().diag()}, n, z), "vector u"),
    "ln_ih_size": ("ln_gru", lambda t, n, z: (t, n._replace(ih=n.ih[:-1]), z), "layer norm ih"),
    "ln_c_bias_size": ("ln_lstm", lambda t, n, z: (t, n._replace(c_bias=n.c_bias[:-1]), z), "layer norm c_bias"),
}


@pytest.mark.parametrize("bad_id", BAD_VARIANT_INPUTS)
def test_bad_variant_inputs_are_refused_before_any_kernel(bad_id):
    """The oracle and every layer backend's `run` (where the registry checks once, before the kernels) refuse them;
    a backend that cannot run here still checks first."""
    case, breaks, message = BAD_VARIANT_INPUTS[bad_id]
    mode, tensors, norm, zoneout = make_layer(case)
    tensors, norm, zoneout = breaks(tensors, norm, zoneout)
    with pytest.raises(RuntimeError, match=message):
        rnn_layer(mode, **tensors, norm=norm, zoneout=zoneout)
    call = registry.RNNCall(mode, "cpu", torch.float64, I, H, layer_norm=norm is not None, zoneout=zoneout is not None,
                            batch_size=N, seq_len=T)  # fmt: skip
    weights = registry.LayerWeights(tensors["w_ih"], tensors["w_hh"], tensors["b_ih"], tensors["b_hh"], None, norm)
    cx = None if tensors["cx"] is None else tensors["cx"][None]
    layer_backends = [name for name in registry.backend_names()
                      if registry.availability()[name] is None
                      and isinstance(registry.get_backend(name), registry.LayerBackend)]  # fmt: skip
    assert "reference" in layer_backends
    for name in layer_backends:
        with pytest.raises(RuntimeError, match=message):
            registry.get_backend(name).run(call, tensors["x"], None, tensors["hx"][None], cx, [weights], 0.0,
                                           **({} if zoneout is None else {"zoneout": [zoneout]}))  # fmt: skip


def reorder(w, order, dim=0):
    """Permute gate chunks along `dim`: order lists, for each target slot, the source chunk."""
    chunks = w.chunk(len(order), dim)
    return torch.cat([chunks[i] for i in order], dim)


#: haste's gate order from torch.nn's: LSTM i,f,g,o -> i,g,f,o; GRU r,z,n -> z,r,n (both are their own inverse).
HASTE_ORDER = {"LSTM": (0, 2, 1, 3), "GRU": (1, 0, 2)}


#: (case, training): haste zones out h only, so the LSTMs' cases keep c (p_c = 0); without zoneout, one computation.
HASTE_CASES = [("ln_lstm", True), ("ln_gru", True), ("zoneout_lstm_h_only", True), ("zoneout_lstm_h_only", False),
               ("zoneout_ln_lstm_h_only", True), ("zoneout_ln_lstm_h_only", False), ("zoneout_ln_gru", True),
               ("zoneout_ln_gru", False)]  # fmt: skip


@pytest.mark.parametrize("case, training", HASTE_CASES, ids=[f"{c}-{'train' if t else 'eval'}" for c, t in HASTE_CASES])
def test_matches_haste_formula(case, training):
    """Our torch.nn-layout (LN-)LSTM/GRU equals haste's scripted math (tests/haste_formulas.py) on the same weights
    reordered by hand into haste's layout (zoneout: haste zones out h only, with a mask of the opposite sense)."""
    mode, tensors, norm, _ = make_layer(case)
    p = 0.0 if CASES[case][2] is None else CASES[case][2][0]
    generator = torch.Generator().manual_seed(1)
    keep_previous = torch.bernoulli(torch.full((T, N, H), p, dtype=torch.float64), generator=generator)
    zoneout = None if not p else ZoneoutMasks(keep_previous if training else torch.full_like(keep_previous, p))
    if mode == "LSTM":  # haste has one bias per gate; torch.nn's two add up
        tensors["b_hh"] = torch.zeros_like(tensors["b_hh"])
    y, h_n, c_n = rnn_layer(mode, **tensors, norm=norm, zoneout=zoneout)

    order = HASTE_ORDER[mode]
    haste_sd = {
        "kernel": reorder(tensors["w_ih"], order).T,
        "recurrent_kernel": reorder(tensors["w_hh"], order).T,
        "bias": reorder(tensors["b_ih"], order),
        "recurrent_bias": reorder(tensors["b_hh"], order),
    }
    if norm is not None:
        haste_sd.update(gamma=torch.stack([reorder(norm.ih, order), reorder(norm.hh, order)]), gamma_h=norm.c_weight,
                        beta_h=norm.c_bias)  # fmt: skip
    kind = ("LayerNorm" if norm is not None else "") + mode
    expected = haste_forward(kind, tensors["x"], tensors["hx"], tensors["cx"], haste_sd, p, 1 - keep_previous,
                             training)  # fmt: skip
    torch.testing.assert_close(y, expected[0], **TOLERANCES[torch.float64])
    torch.testing.assert_close(h_n, expected[1], **TOLERANCES[torch.float64])
    if mode == "LSTM":
        torch.testing.assert_close(c_n, expected[2], **TOLERANCES[torch.float64])


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("case", ["indrnn_tanh", "indrnn_relu"])
def test_indrnn_matches_plain_loop(case, reverse):
    mode, tensors, _, _ = make_layer(case)
    act = torch.tanh if mode == "INDRNN_TANH" else torch.relu
    x, h, w_ih, u, b_ih, b_hh = (tensors[k] for k in ("x", "hx", "w_ih", "w_hh", "b_ih", "b_hh"))
    ys = [None] * T
    for t in reversed(range(T)) if reverse else range(T):
        h = act(x[t] @ w_ih.T + b_ih + u * h + b_hh)
        ys[t] = h
    y, h_n, c_n = rnn_layer(mode, **tensors, reverse=reverse)
    torch.testing.assert_close(y, torch.stack(ys), **TOLERANCES[torch.float64])
    torch.testing.assert_close(h_n, h, **TOLERANCES[torch.float64])
    assert c_n is None


@pytest.mark.parametrize("case", ["zoneout_lstm", "zoneout_gru", "zoneout_ln_lstm", "zoneout_indrnn"])
def test_zoneout_zero_masks_equal_plain_layer(case):
    """Masks of zeros change nothing, bit for bit, in every output and gradient."""
    mode, tensors, norm, zoneout = make_layer(case)
    zeros = ZoneoutMasks(*(None if m is None else torch.zeros_like(m) for m in zoneout))
    run_plain, inputs = layer_function(mode, tensors, norm, None, False, LENGTHS)
    run_zero, _ = layer_function(mode, tensors, norm, zeros, False, LENGTHS)
    plain, zoned = run_plain(*inputs), run_zero(*inputs)
    upstream = [torch.randn_like(o) for o in plain]
    for a, b in zip(plain, zoned):
        assert torch.equal(a, b)
    for a, b in zip(torch.autograd.grad(plain, inputs, upstream), torch.autograd.grad(zoned, inputs, upstream)):
        assert torch.equal(a, b)


def test_zoneout_ones_keep_the_initial_state():
    """Masks of ones (p = 1) keep h0 and c0 forever; rows past their length output zeros."""
    mode, tensors, _, zoneout = make_layer("zoneout_lstm")
    ones = ZoneoutMasks(torch.ones_like(zoneout.h), torch.ones_like(zoneout.c))
    y, h_n, c_n = rnn_layer(mode, **tensors, lengths=LENGTHS, zoneout=ones)
    assert torch.equal(h_n, tensors["hx"]) and torch.equal(c_n, tensors["cx"])
    valid = torch.arange(T).unsqueeze(1) < LENGTHS
    assert torch.equal(y[valid], tensors["hx"].expand(T, N, H)[valid])
    assert torch.all(y[~valid] == 0)


def test_zoneout_lengths_match_truncated_sequences():
    """A row with lengths behaves as its truncated sequence with the same masks (masks past the end are ignored)."""
    mode, tensors, norm, zoneout = make_layer("zoneout_ln_lstm")
    y, h_n, c_n = rnn_layer(mode, **tensors, lengths=LENGTHS, norm=norm, zoneout=zoneout)
    for n, length in enumerate(LENGTHS.tolist()):
        row = {k: (v[:length, n : n + 1] if k == "x" else v[n : n + 1] if k in ("hx", "cx") else v)
               for k, v in tensors.items()}  # fmt: skip
        masks = ZoneoutMasks(*(m[:length, n : n + 1] for m in zoneout))
        y_n, h_row, c_row = rnn_layer(mode, **row, norm=norm, zoneout=masks)
        torch.testing.assert_close(y[:length, n], y_n[:, 0], **TOLERANCES[torch.float64])
        torch.testing.assert_close(h_n[n], h_row[0], **TOLERANCES[torch.float64])
        torch.testing.assert_close(c_n[n], c_row[0], **TOLERANCES[torch.float64])


def test_layer_norm_helper_matches_torch():
    v = torch.randn(5, 12, dtype=torch.float64) * 3 + 1
    weight, bias = torch.randn(12, dtype=torch.float64), torch.randn(12, dtype=torch.float64)
    expected = F.layer_norm(v, (12,), weight=weight, bias=bias)
    torch.testing.assert_close(layer_norm(v, weight, bias), expected, **TOLERANCES[torch.float64])


@pytest.mark.parametrize("case", ["zoneout_ln_lstm", "zoneout_ln_gru", "zoneout_indrnn"])
def test_layer_vjp_covers_the_variant_inputs(case):
    """layer_vjp (the differentiable backward of the fused ops) on the full LAYER_INPUTS tuple equals autograd of
    rnn_layer, and gives the masks no gradient."""
    mode, tensors, norm, zoneout = make_layer(case)
    inputs = layer_inputs(*(tensors.get(k) for k in LAYER_INPUTS[:8]), norm, zoneout)
    assert len(inputs) == len(LAYER_INPUTS)
    outputs = [o for o in rnn_layer(mode, **tensors, reverse=True, lengths=LENGTHS, norm=norm, zoneout=zoneout)
               if o is not None]  # fmt: skip
    grads = [torch.randn_like(o) for o in outputs]
    wanted = [i for i, t in enumerate(inputs) if t is not None and t.requires_grad]
    expected = torch.autograd.grad(outputs, [inputs[i] for i in wanted], grads)
    needs = tuple(t is not None for t in inputs)  # the masks too: layer_vjp must refuse them a gradient
    padded = (*grads, None) if len(grads) == 2 else tuple(grads)
    result = layer_vjp(mode, inputs, padded, True, LENGTHS, needs)
    for i, value in zip(wanted, expected):
        torch.testing.assert_close(result[i], value, **TOLERANCES[torch.float64])
    assert result[LAYER_INPUTS.index("zoneout_h")] is None and result[LAYER_INPUTS.index("zoneout_c")] is None


@pytest.mark.parametrize(
    "mode, norm, zoneout, message",
    [
        ("RNN_TANH", LayerNormWeights(torch.ones(4), torch.ones(4)), None, "layer norm is defined for LSTM and GRU"),
        ("LSTM", LayerNormWeights(torch.ones(16), torch.ones(16)), None, "cell-state gain"),
        ("GRU", None, ZoneoutMasks(torch.zeros(T, N, H), torch.zeros(T, N, H)), "cell-state zoneout mask"),
        ("LSTM_X", None, None, "unknown RNN mode"),
    ],
    ids=["ln_rnn", "ln_lstm_without_c", "gru_c_mask", "bad_mode"],
)
def test_undefined_variants_are_refused(mode, norm, zoneout, message):
    G = GATES.get(mode, 4)
    with pytest.raises(ValueError, match=message):
        rnn_layer(mode, torch.randn(T, N, I), None, None, torch.randn(G * H, I), torch.randn(G * H, H),
                  norm=norm, zoneout=zoneout)  # fmt: skip


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_lstm_cell_state_zoneout_matches_plain_loop(reverse, training):
    """The LSTM's zoneout of h and c written out step by step from Krueger et al.'s formulas, independently of
    rnn_layer: the c mask weighs c_{t-1}, the h mask h_{t-1}, and h~ is computed from the fresh c~ (not the zoned c).
    The two masks differ, so a c mask taken from h's (or the reverse) shows."""
    mode, tensors, _, zoneout = make_layer("zoneout_lstm", training)
    assert not torch.equal(zoneout.h, zoneout.c)
    x, h, c, w_ih, w_hh, b_ih, b_hh = (tensors[k] for k in ("x", "hx", "cx", "w_ih", "w_hh", "b_ih", "b_hh"))
    ys = [None] * T
    for t in reversed(range(T)) if reverse else range(T):
        i, f, g, o = (x[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=1)
        c_fresh = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_fresh = torch.sigmoid(o) * torch.tanh(c_fresh)
        m_h, m_c = zoneout.h[t], zoneout.c[t]
        h = m_h * h + (1 - m_h) * h_fresh
        c = m_c * c + (1 - m_c) * c_fresh
        ys[t] = h
    y, h_n, c_n = rnn_layer(mode, **tensors, reverse=reverse, zoneout=zoneout)
    torch.testing.assert_close(y, torch.stack(ys), **TOLERANCES[torch.float64])
    torch.testing.assert_close(h_n, h, **TOLERANCES[torch.float64])
    torch.testing.assert_close(c_n, c, **TOLERANCES[torch.float64])
