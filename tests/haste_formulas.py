"""haste's own math, in haste's own layout: the scripted reference functions of haste_pytorch (LSTMScript, GRUScript,
LayerNormLSTMScript, LayerNormGRUScript, IndRNNScript in lmnt-com/haste frameworks/pytorch/*.py) written out again
for the tests, an independent formulation to check fusedrnn's variants and its haste converter against.

haste's layout: kernel [I, G*H], recurrent_kernel [H, G*H], gates i,g,f,o (LSTM) and z,r,n (GRU), one bias (LSTM,
IndRNN) or bias + recurrent_bias (GRU), gamma [2, G*H], gamma_h / beta_h [H], IndRNN recurrent_scale [H]. haste's
zoneout mask has the opposite sense of fusedrnn's: 1 keeps the NEW state; eval uses p * h_prev + (1 - p) * h.
haste zones out h only, never the LSTM's c.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: haste kind -> gates per unit.
HASTE_GATES = {"LSTM": 4, "GRU": 3, "LayerNormLSTM": 4, "LayerNormGRU": 3, "IndRNN": 1}


def haste_forward(kind: str, x: Tensor, h0: Tensor, c0: Tensor | None, sd: dict, zoneout_prob: float = 0.0,
                  zoneout_mask: Tensor | None = None, training: bool = False):  # fmt: skip
    """x [T, N, I] -> (y [T, N, H], h_n [N, H], c_n [N, H] or None) of haste's `kind` layer with state_dict sd."""
    H = h0.shape[-1]
    G = HASTE_GATES[kind]
    normed = kind.startswith("LayerNorm")
    Wx = x @ sd["kernel"]
    if normed:
        Wx = F.layer_norm(Wx, (G * H,), weight=sd["gamma"][0])
    if kind != "LayerNormLSTM" and kind != "LSTM":
        Wx = Wx + sd["bias"]  # haste's GRUs and IndRNN add the input bias outside the loop, its LSTMs inside
    h, c = h0, c0
    ys = []
    for t in range(x.shape[0]):
        h_prev = h
        if kind == "IndRNN":
            h = torch.tanh(Wx[t] + h * sd["recurrent_scale"])
        elif kind in ("LSTM", "LayerNormLSTM"):
            Rh = h @ sd["recurrent_kernel"]
            if normed:
                Rh = F.layer_norm(Rh, (G * H,), weight=sd["gamma"][1])
            i, g, f, o = torch.chunk(Rh + Wx[t] + sd["bias"], 4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            c_out = F.layer_norm(c, (H,), weight=sd["gamma_h"], bias=sd["beta_h"]) if normed else c
            h = torch.sigmoid(o) * torch.tanh(c_out)
        else:
            Rh = h @ sd["recurrent_kernel"]
            if normed:
                Rh = F.layer_norm(Rh, (G * H,), weight=sd["gamma"][1])
            vx, vh = torch.chunk(Wx[t], 3, 1), torch.chunk(Rh + sd["recurrent_bias"], 3, 1)
            z = torch.sigmoid(vx[0] + vh[0])
            r = torch.sigmoid(vx[1] + vh[1])
            g = torch.tanh(vx[2] + r * vh[2])
            h = z * h + (1 - z) * g
        if zoneout_prob:
            if training:
                h = (h - h_prev) * zoneout_mask[t] + h_prev
            else:
                h = zoneout_prob * h_prev + (1 - zoneout_prob) * h
        ys.append(h)
    return torch.stack(ys), h, c


def random_haste_state_dict(kind: str, input_size: int, hidden_size: int, generator: torch.Generator) -> dict:
    """A haste `kind` state_dict with random entries (gains around 1), float64."""
    G, H = HASTE_GATES[kind], hidden_size

    def randn(*shape, scale=1.0, shift=0.0):
        return torch.randn(*shape, generator=generator, dtype=torch.float64) * scale + shift

    sd = {"kernel": randn(input_size, G * H, scale=0.5), "bias": randn(G * H, scale=0.5)}
    if kind == "IndRNN":
        sd["recurrent_scale"] = randn(H, scale=0.5)
        return sd
    sd["recurrent_kernel"] = randn(H, G * H, scale=0.5)
    if kind in ("GRU", "LayerNormGRU"):
        sd["recurrent_bias"] = randn(G * H, scale=0.5)
    if kind.startswith("LayerNorm"):
        sd["gamma"] = randn(2, G * H, scale=0.3, shift=1.0)
    if kind == "LayerNormLSTM":
        sd["gamma_h"] = randn(H, scale=0.3, shift=1.0)
        sd["beta_h"] = randn(H, scale=0.3)
    return sd
