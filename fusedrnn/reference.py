"""The plain-PyTorch oracle: one layer, one direction, autograd for gradients.

Every kernel in this project is tested against these few lines, and these lines are tested against torch.nn in
float64. Keep them short and obviously right; speed is the kernels' job.

Shapes (T = time steps, N = batch, I = input features, H = hidden size, P = projection size or H, G = gates):
    x        [T, N, I]
    hx       [N, P] or None (zeros)        cx  [N, H] or None (zeros; LSTM only)
    w_ih     [G*H, I]   w_hh [G*H, P]      b_ih, b_hh [G*H] or None      w_hr [P, H] or None (LSTM only)
    lengths  [N] integer or None: row n is valid for t < lengths[n] (a packed sequence, padded)
    returns  y [T, N, P], h_n [N, P], c_n [N, H] (None unless LSTM)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: Gates per cell, in torch.nn's weight layout order: LSTM (i, f, g, o), GRU (r, z, n), Elman RNN (one).
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def cell_step(
    mode: str, gi: Tensor, h: Tensor, c: Tensor | None, w_hh: Tensor, b_hh: Tensor | None, w_hr: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """One time step given the input projection gi = x_t W_ih^T + b_ih [N, G*H]; returns (h', c')."""
    gh = F.linear(h, w_hh, b_hh)  # all gates of the step in one matmul against the concatenated W_hh
    if mode == "LSTM":
        i, f, g, o = (gi + gh).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return (h if w_hr is None else F.linear(h, w_hr)), c
    if mode == "GRU":
        i_r, i_z, i_n = gi.chunk(3, dim=1)
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)  # PyTorch's (and cuDNN's) GRU: the reset gate scales W_hn h + b_hn
        return (1 - z) * n + z * h, None
    if mode == "RNN_TANH":
        return torch.tanh(gi + gh), None
    if mode == "RNN_RELU":
        return torch.relu(gi + gh), None
    raise ValueError(f"unknown RNN mode {mode!r}; expected one of {sorted(GATES)}")


def rnn_layer(
    mode: str,
    x: Tensor,
    hx: Tensor | None,
    cx: Tensor | None,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    w_hr: Tensor | None = None,
    reverse: bool = False,
    lengths: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Run one layer in one direction over the whole sequence (shapes in the module docstring)."""
    T, N, _ = x.shape
    H = w_hh.shape[0] // GATES[mode]
    P = w_hh.shape[1]
    h = x.new_zeros(N, P) if hx is None else hx
    c = (x.new_zeros(N, H) if cx is None else cx) if mode == "LSTM" else None
    gi_all = F.linear(x, w_ih, b_ih)  # the input projection of all T steps: one matmul, outside the loop
    valid = None if lengths is None else torch.arange(T, device=x.device).unsqueeze(1) < lengths.to(x.device)
    ys: list[Tensor] = [x] * T  # placeholders, every slot is overwritten below
    for t in range(T - 1, -1, -1) if reverse else range(T):
        h_new, c_new = cell_step(mode, gi_all[t], h, c, w_hh, b_hh, w_hr)
        if valid is None:
            h, c = h_new, c_new
            ys[t] = h
        else:
            # Rows past their length keep their state (for the reverse direction: until their last valid step,
            # which is where each sequence's reverse pass starts) and output zeros, as pad_packed_sequence does.
            m = valid[t].unsqueeze(1)
            h = torch.where(m, h_new, h)
            c = torch.where(m, c_new, c) if c is not None else None
            ys[t] = torch.where(m, h_new, torch.zeros_like(h_new))
    return torch.stack(ys), h, c


def layer_vjp(
    mode: str,
    inputs: tuple[Tensor | None, ...],
    grads: tuple[Tensor | None, Tensor | None, Tensor | None],
    reverse: bool,
    lengths: Tensor | None,
    needs_grad: tuple[bool, ...],
) -> list[Tensor | None]:
    """The vector-Jacobian product of `rnn_layer`, itself differentiable: what a kernel's backward returns when
    autograd asks for a graph of the backward (`create_graph=True`: double backward; torch.func), by recomputing
    the layer here. inputs = (x, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr) as given to the kernel; grads = upstream
    gradients of (y, h_n, c_n), None for zero; needs_grad says which inputs want a gradient (None for the others).

    torch.func.vjp rather than torch.autograd.grad: inside a backward that torch.func runs, the transform's own
    autograd level is no longer active, so only a transform sees how the recomputed outputs depend on the inputs;
    it composes with plain autograd as well."""
    wanted = [i for i, (t, need) in enumerate(zip(inputs, needs_grad)) if need and t is not None]
    result: list[Tensor | None] = [None] * len(inputs)
    if not wanted:
        return result

    def layer(*values: Tensor) -> tuple[Tensor, ...]:
        full = list(inputs)
        for index, value in zip(wanted, values):
            full[index] = value
        return tuple(o for o in rnn_layer(mode, *full, reverse=reverse, lengths=lengths) if o is not None)

    outputs, pullback = torch.func.vjp(layer, *(inputs[i] for i in wanted))
    cotangents = tuple(torch.zeros_like(o) if g is None else g for o, g in zip(outputs, grads))
    for index, value in zip(wanted, pullback(cotangents)):
        result[index] = value
    return result
