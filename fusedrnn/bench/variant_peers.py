"""The recurrent variants as users write them today: a plain PyTorch loop, one cell call per time step.

These are the "before" of `fusedrnn-bench --preset variants`: a LayerNorm-LSTM / LayerNorm-GRU cell in the style of
PyTorch's own benchmarks/fastrnns/custom_lstms.py (input and recurrent matmul, `F.layer_norm`, gates, once per step),
an IndRNN cell, and an LSTM cell with zoneout (Krueger et al. 2016) or with DropConnect on W_hh (AWD-LSTM's weight
drop: one `F.dropout` of the recurrent weights per forward call). Each is one layer in one direction, written once,
with no fusedrnn code in it; the math is the design of issue 15 (VARIANTS.md), so a fusedrnn layer loaded with the
same `state_dict` computes the same function. Masks are drawn as the fusedrnn modules draw them (from torch's global
RNG, in the same order and with the same calls), so a seed gives both the same masks and the results can be compared.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: F.layer_norm's default epsilon, which haste's LayerNorm cells use as well.
LN_EPS = 1e-5

#: Gates per cell: LSTM i, f, g, o; GRU r, z, n; IndRNN one pre-activation.
GATES = {"lstm": 4, "gru": 3, "indrnn": 1}


def _uniform(shape: tuple[int, ...], bound: float, device, dtype) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape, device=device, dtype=dtype).uniform_(-bound, bound))


def _layer_norm(v: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Normalise each row of v [N, F] over its F features (biased variance), then scale (and shift)."""
    return F.layer_norm(v, (v.shape[-1],), weight, bias, LN_EPS)


class LoopRNN(nn.Module):
    """One recurrent layer run step by step: forward(x [T, N, I], hx) -> (y [T, N, H], h_n [1, N, H]), with
    hx = h0 [1, N, H] (LSTM: a tuple (h0, c0)) or None for zeros, as torch.nn's layers take and return it.

    cell: "lstm", "gru" or "indrnn" (tanh); layer_norm: the LayerNorm cells (LSTM, GRU); zoneout: probability of
    keeping each unit's previous h and c in training (the expectation in eval); weight_dropout: DropConnect
    probability on W_hh, once per call in training. Parameter names and shapes are fusedrnn's (torch.nn's plus
    ln_*_weight_l0 / ln_c_bias_l0 and IndRNN's vector weight_hh_l0 [H]), so state_dicts load both ways.
    """

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        *,
        layer_norm: bool = False,
        zoneout: float = 0.0,
        weight_dropout: float = 0.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if layer_norm and cell == "indrnn":
            raise ValueError("IndRNN has no LayerNorm variant")
        self.cell, self.layer_norm, self.zoneout, self.weight_dropout = cell, layer_norm, zoneout, weight_dropout
        self.hidden_size = hidden_size
        rows = GATES[cell] * hidden_size
        bound = 1 / math.sqrt(hidden_size)  # torch.nn's initialisation
        factory = {"device": device, "dtype": dtype}
        self.weight_ih_l0 = _uniform((rows, input_size), bound, **factory)
        self.weight_hh_l0 = _uniform((hidden_size,) if cell == "indrnn" else (rows, hidden_size), bound, **factory)
        self.bias_ih_l0 = _uniform((rows,), bound, **factory)
        self.bias_hh_l0 = _uniform((rows,), bound, **factory)
        if layer_norm:
            self.ln_ih_weight_l0 = nn.Parameter(torch.ones(rows, **factory))
            self.ln_hh_weight_l0 = nn.Parameter(torch.ones(rows, **factory))
            if cell == "lstm":
                self.ln_c_weight_l0 = nn.Parameter(torch.ones(hidden_size, **factory))
                self.ln_c_bias_l0 = nn.Parameter(torch.zeros(hidden_size, **factory))

    def _gate_inputs(self, x_t: Tensor, h: Tensor, w_hh: Tensor) -> tuple[Tensor, Tensor]:
        """(input, recurrent) pre-activations of one step [N, G*H], each with its bias (after its LayerNorm)."""
        gi, gh = F.linear(x_t, self.weight_ih_l0), F.linear(h, w_hh)
        if self.layer_norm:
            gi, gh = _layer_norm(gi, self.ln_ih_weight_l0), _layer_norm(gh, self.ln_hh_weight_l0)
        return gi + self.bias_ih_l0, gh + self.bias_hh_l0

    def step(
        self, x_t: Tensor, h: Tensor, c: Tensor | None, w_hh: Tensor, mask_h: Tensor | None, mask_c: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """One time step: x_t [N, I], h and c [N, H] (c None but for LSTM), masks [N, H] or None -> (h, c)."""
        if self.cell == "indrnn":
            h_new = torch.tanh(F.linear(x_t, self.weight_ih_l0, self.bias_ih_l0) + w_hh * h + self.bias_hh_l0)
            c_new = None
        elif self.cell == "gru":
            gi, gh = self._gate_inputs(x_t, h, w_hh)
            i_r, i_z, i_n = gi.chunk(3, 1)
            h_r, h_z, h_n = gh.chunk(3, 1)
            r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            h_new, c_new = (1 - z) * n + z * h, None
        else:
            gi, gh = self._gate_inputs(x_t, h, w_hh)
            i, f, g, o = (gi + gh).chunk(4, 1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            c_out = _layer_norm(c_new, self.ln_c_weight_l0, self.ln_c_bias_l0) if self.layer_norm else c_new
            h_new = torch.sigmoid(o) * torch.tanh(c_out)  # from the cell state before zoneout, as in the paper
        if mask_h is not None:  # zoneout: where the mask is 1 the unit keeps its previous value (eval: m = p)
            h_new = mask_h * h + (1 - mask_h) * h_new
        if mask_c is not None:
            c_new = mask_c * c + (1 - mask_c) * c_new
        return h_new, c_new

    def _zoneout_masks(self, x: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Masks [T, N, H] (1 keeps the previous value), h's then c's: Bernoulli(p) in training, p in eval."""
        if not self.zoneout:
            return None, None
        shape = (x.shape[0], x.shape[1], self.hidden_size)
        count = 2 if self.cell == "lstm" else 1
        if not self.training:
            return tuple(x.new_full(shape, self.zoneout) for _ in range(count)) + (None,) * (2 - count)
        return tuple(x.new_empty(shape).bernoulli_(self.zoneout) for _ in range(count)) + (None,) * (2 - count)

    def forward(self, x: Tensor, hx=None):
        T, N, _ = x.shape
        lstm = self.cell == "lstm"
        if hx is None:
            zeros = x.new_zeros(1, N, self.hidden_size)
            hx = (zeros, zeros) if lstm else zeros
        h, c = (hx[0][0], hx[1][0]) if lstm else (hx[0], None)
        w_hh = self.weight_hh_l0
        if self.weight_dropout:  # DropConnect: one dropped copy of W_hh for the whole call
            w_hh = F.dropout(w_hh, self.weight_dropout, self.training)
        mask_h, mask_c = self._zoneout_masks(x)
        outputs = []
        for t in range(T):
            m_h = None if mask_h is None else mask_h[t]
            m_c = None if mask_c is None else mask_c[t]
            h, c = self.step(x[t], h, c, w_hh, m_h, m_c)
            outputs.append(h)
        y = torch.stack(outputs)
        return (y, (h.unsqueeze(0), c.unsqueeze(0))) if lstm else (y, h.unsqueeze(0))


class WeightDropLSTM(nn.Module):
    """torch.nn.LSTM with DropConnect on W_hh, as AWD-LSTM's WeightDrop wrapper does it: each call runs torch's own
    fused LSTM (cuDNN, ATen) on a dropped copy of W_hh, through torch.func.functional_call instead of WeightDrop's
    attribute patching. The fastest thing users have for this variant today. forward like LoopRNN's; parameters are
    nn.LSTM's (weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0)."""

    def __init__(self, input_size: int, hidden_size: int, weight_dropout: float, *, device=None, dtype=None) -> None:
        super().__init__()
        self.weight_dropout = weight_dropout
        template = nn.LSTM(input_size, hidden_size, device="meta", dtype=dtype)  # shapes and forward only
        factory = {"device": device, "dtype": dtype}
        for name, meta in template.named_parameters():
            self.register_parameter(name, nn.Parameter(torch.empty(meta.shape, **factory)))
        self._template = (template,)  # in a tuple: not a submodule, so its meta parameters stay out of ours
        bound = 1 / math.sqrt(hidden_size)
        for param in self.parameters():
            nn.init.uniform_(param, -bound, bound)

    def forward(self, x: Tensor, hx=None):
        weights = dict(self.named_parameters())
        weights["weight_hh_l0"] = F.dropout(weights["weight_hh_l0"], self.weight_dropout, self.training)
        return torch.func.functional_call(self._template[0], weights, (x, hx))
