"""fusedrnn.haste: a state_dict in haste_pytorch's layout, converted, gives the fusedrnn module that computes haste's
own formula (tests/haste_formulas.py, in haste's layout) on random inputs, float64."""

from __future__ import annotations

import pytest
import torch

import fusedrnn
from fusedrnn.haste import convert_haste_state_dict, from_haste, load_haste_state_dict
from haste_formulas import HASTE_GATES, haste_forward, random_haste_state_dict
from parity import TOLERANCES

T, N, I, H = 5, 3, 4, 6
KINDS = list(HASTE_GATES)
SEED = 11


def run_both(kind, module, sd, zoneout_prob, generator):
    """The module (eval: the expectation; training: the h mask it draws after torch.manual_seed(SEED), its only
    draw) against haste's formula given that mask in haste's sense (1 = take the new value)."""
    x = torch.randn(T, N, I, generator=generator, dtype=torch.float64)
    h0 = torch.randn(N, H, generator=generator, dtype=torch.float64)
    lstm = "LSTM" in kind
    c0 = torch.randn(N, H, generator=generator, dtype=torch.float64) if lstm else None
    state = (h0[None], c0[None]) if lstm else h0[None]
    torch.manual_seed(SEED)
    y, hidden = module(x, state)
    haste_mask = None
    if module.training and zoneout_prob:
        torch.manual_seed(SEED)
        haste_mask = 1 - torch.empty(T, N, H, dtype=torch.float64).bernoulli_(zoneout_prob)
    expected = haste_forward(kind, x, h0, c0, sd, zoneout_prob, haste_mask, module.training)
    tolerance = TOLERANCES[torch.float64]
    torch.testing.assert_close(y, expected[0], **tolerance)
    torch.testing.assert_close(hidden[0][0] if lstm else hidden[0], expected[1], **tolerance)
    if lstm:
        torch.testing.assert_close(hidden[1][0], expected[2], **tolerance)


@pytest.mark.parametrize("zoneout, training", [(0.0, False), (0.3, False), (0.3, True)],
                         ids=["plain", "zoneout_eval", "zoneout_train"])  # fmt: skip
@pytest.mark.parametrize("kind", KINDS)
def test_converted_module_computes_haste_formula(kind, zoneout, training):
    """from_haste's module equals haste's math; haste's zoneout=p maps to (p, 0.0) on the LSTMs (h only), to p on
    the others: in eval the expectation, in training the module's own mask handed to haste's formula."""
    generator = torch.Generator().manual_seed(HASTE_GATES[kind] + len(kind))
    sd = random_haste_state_dict(kind, I, H, generator)
    rate = (zoneout, 0.0) if "LSTM" in kind and zoneout else zoneout
    module = from_haste(sd, kind, zoneout=rate).train(training)
    assert module.weight_ih_l0.dtype == torch.float64
    run_both(kind, module, sd, zoneout, generator)


@pytest.mark.parametrize("kind", KINDS)
def test_load_into_existing_module(kind):
    generator = torch.Generator().manual_seed(7)
    sd = random_haste_state_dict(kind, I, H, generator)
    module = load_haste_state_dict(fusedrnn.haste.CLASSES[kind](I, H, dtype=torch.float64), sd)
    run_both(kind, module, sd, 0.0, generator)


def test_gate_blocks_are_reordered_not_only_transposed():
    """The LSTM's forget-gate block of haste's kernel (third, i,g,f,o) lands in torch.nn's second block (i,f,g,o)."""
    sd = random_haste_state_dict("LSTM", I, H, torch.Generator().manual_seed(0))
    converted = convert_haste_state_dict(sd, "LSTM")
    torch.testing.assert_close(converted["weight_ih_l0"][H : 2 * H], sd["kernel"][:, 2 * H : 3 * H].T)
    torch.testing.assert_close(converted["bias_hh_l0"], torch.zeros(4 * H, dtype=torch.float64))


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda sd: convert_haste_state_dict(sd, "Transformer"), ValueError),
        (lambda sd: convert_haste_state_dict({**sd, "extra": sd["bias"]}, "LSTM"), KeyError),
        (lambda sd: convert_haste_state_dict({"kernel": sd["kernel"]}, "LSTM"), KeyError),
        (lambda sd: load_haste_state_dict(fusedrnn.LSTM(I, H, num_layers=2), sd), ValueError),
        (lambda sd: load_haste_state_dict(fusedrnn.LSTM(I, H, bidirectional=True), sd), ValueError),
        (lambda sd: load_haste_state_dict(torch.nn.LSTM(I, H), sd), TypeError),
        (lambda sd: load_haste_state_dict(fusedrnn.GRU(I, H), sd), KeyError),
        (lambda sd: load_haste_state_dict(fusedrnn.LSTM(I, H + 1), sd), RuntimeError),  # load_state_dict's sizes
    ],
    ids=["unknown_kind", "unexpected_key", "missing_key", "two_layers", "bidirectional", "torch_class", "wrong_kind",
         "wrong_size"],  # fmt: skip
)
def test_bad_conversions_are_refused(call, error):
    sd = random_haste_state_dict("LSTM", I, H, torch.Generator().manual_seed(0))
    with pytest.raises(error):
        call(sd)
