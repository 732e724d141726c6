"""The oracle itself: gradcheck of fusedrnn.reference.rnn_layer (the modules' parity with torch.nn is elsewhere)."""

from __future__ import annotations

import pytest
import torch

from fusedrnn.reference import GATES, rnn_layer

MODES = ["LSTM", "LSTM_PROJ", "GRU", "RNN_TANH", "RNN_RELU"]


def layer_arguments(mode: str, lengths: bool, T=4, N=3, I=3, H=4, P=2):
    projected = mode == "LSTM_PROJ"
    mode = "LSTM" if projected else mode
    out = P if projected else H
    G = GATES[mode]
    make = lambda *shape: torch.randn(*shape, dtype=torch.float64, requires_grad=True)  # noqa: E731
    tensors = dict(
        x=make(T, N, I),
        hx=make(N, out),
        cx=make(N, H) if mode == "LSTM" else None,
        w_ih=make(G * H, I),
        w_hh=make(G * H, out),
        b_ih=make(G * H),
        b_hh=make(G * H),
        w_hr=make(P, H) if projected else None,
    )
    return mode, tensors, (torch.tensor([4, 1, 3]) if lengths else None)


@pytest.mark.parametrize("lengths", [False, True], ids=["dense", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("mode", MODES)
def test_reference_gradcheck(mode, reverse, lengths):
    if mode == "RNN_RELU":
        torch.manual_seed(3)  # keep pre-activations away from relu's kink, where finite differences are undefined
    mode, tensors, lens = layer_arguments(mode, lengths)
    names = [k for k, v in tensors.items() if v is not None]

    def run(*values):
        kwargs = dict(tensors, **dict(zip(names, values)))
        y, h, c = rnn_layer(mode, **kwargs, reverse=reverse, lengths=lens)
        return (y, h) if c is None else (y, h, c)

    assert torch.autograd.gradcheck(run, tuple(tensors[k] for k in names))


def test_reference_lengths_match_truncated_sequences():
    """Row n of a padded batch with lengths behaves as if its sequence stopped (or, reversed, started) at length n."""
    mode, tensors, lengths = layer_arguments("LSTM", True)
    for reverse in (False, True):
        y, h, c = rnn_layer(mode, **tensors, reverse=reverse, lengths=lengths)
        for n, length in enumerate(lengths.tolist()):
            row = {k: (v[:length, n : n + 1] if k == "x" else v[n : n + 1] if k in ("hx", "cx") else v)
                   for k, v in tensors.items()}  # fmt: skip
            y_n, h_n, c_n = rnn_layer(mode, **row, reverse=reverse)
            torch.testing.assert_close(y[:length, n], y_n[:, 0])
            assert torch.all(y[length:, n] == 0)
            torch.testing.assert_close(h[n], h_n[0])
            torch.testing.assert_close(c[n], c_n[0])
