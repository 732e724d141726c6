"""The plain-PyTorch oracle: one layer, one direction, autograd for gradients.

Every kernel in this project is tested against these few lines, and these lines are tested against torch.nn in
float64. Keep them short and obviously right; speed is the kernels' job.

Shapes (T = time steps, N = batch, I = input features, H = hidden size, P = projection size or H, G = gates):
    x        [T, N, I]
    hx       [N, P] or None (zeros)        cx  [N, H] or None (zeros; LSTM only)
    w_ih     [G*H, I]   w_hh [G*H, P]      b_ih, b_hh [G*H] or None      w_hr [P, H] or None (LSTM only)
             IndRNN: w_hh [H], the recurrent scale u (a vector: each unit sees only its own previous state)
             multi-head: w_hh [K, G*d, d], K heads of d = H / K units, block-diagonal (headwise_linear); no w_hr
    lengths  [N] integer or None: row n is valid for t < lengths[n] (a packed sequence, padded)
    norm     LayerNormWeights or None (LSTM and GRU only): the layer-normalised variants
    zoneout  ZoneoutMasks or None: h [T, N, H] (c [T, N, H] or None, LSTM only); 1 keeps the previous state
    returns  y [T, N, P], h_n [N, P], c_n [N, H] (None unless LSTM)

The variants (haste's formulation, torch.nn's gate order; LN(v; g, b) = (v - mean v) / sqrt(var v + EPS) * g + b over
the G*H pre-activations of one row, biased variance):
    LayerNorm-LSTM  a = LN(x W_ih^T; g_ih) + LN(h W_hh^T; g_hh) + b_ih + b_hh;  i, f, g, o = chunks of a
                    c~ = sigmoid(f) c + sigmoid(i) tanh(g);  h~ = sigmoid(o) tanh(LN(c~; g_c, b_c))
    LayerNorm-GRU   gi = LN(x W_ih^T; g_ih) + b_ih;  gh = LN(h W_hh^T; g_hh) + b_hh;  then torch.nn's GRU on gi, gh
    IndRNN          h~ = act(x W_ih^T + b_ih + u * h + b_hh)
    zoneout         h_t = m_h h_{t-1} + (1 - m_h) h~;  LSTM: c_t = m_c c_{t-1} + (1 - m_c) c~  (h~ is computed from c~)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

#: Gates per cell, in torch.nn's weight layout order: LSTM (i, f, g, o), GRU (r, z, n), Elman RNN and IndRNN (one).
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1, "INDRNN_TANH": 1, "INDRNN_RELU": 1}
#: The modes whose recurrent weight is a vector u [H] applied elementwise (IndRNN), not a matrix.
ELEMENTWISE_RECURRENCE = ("INDRNN_TANH", "INDRNN_RELU")
#: Layer norm's epsilon, added to the variance: F.layer_norm's default, and haste's.
EPS = 1e-5


class LayerNormWeights(NamedTuple):
    """The gains (and cell-state bias) of the layer-normalised LSTM and GRU, torch.nn's gate order.

    ih, hh [G*H]: gains of the input and recurrent pre-activations (no bias: b_ih and b_hh follow the norm);
    c_weight, c_bias [H]: the LSTM's cell-state norm before its output tanh (None for GRU; c_bias None without bias).
    """

    ih: Tensor
    hh: Tensor
    c_weight: Tensor | None = None
    c_bias: Tensor | None = None


class ZoneoutMasks(NamedTuple):
    """Zoneout of one layer direction: h [T, N, H] and, LSTM with a cell-state rate, c [T, N, H]; indexed by time
    step t whatever the direction. Entries are the weight of the previous state: 0/1 draws in training (1 keeps the
    previous value), the rate p everywhere in eval (the expectation)."""

    h: Tensor
    c: Tensor | None = None


def hidden_size(mode: str, w_hh: Tensor) -> int:
    """H from the recurrent weight: [G*H, P], IndRNN's [H], or multi-head [K, G*d, d]."""
    if w_hh.dim() == 3:
        return w_hh.shape[0] * w_hh.shape[2]
    return w_hh.shape[0] // GATES[mode]


def layer_norm(v: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """LN over the last dimension with biased variance, written out (the tests check it against F.layer_norm)."""
    centred = v - v.mean(-1, keepdim=True)
    normalised = centred * torch.rsqrt(centred.square().mean(-1, keepdim=True) + EPS) * weight
    return normalised if bias is None else normalised + bias


def headwise_linear(h: Tensor, w_hh: Tensor) -> Tensor:
    """The block-diagonal recurrent projection of multi-head cells: h [N, K*d] (K heads of d units, head-major) and
    w_hh [K, G*d, d] (one torch.nn-style recurrent matrix per head, its rows gate-major) -> [N, G*K*d] in torch.nn's
    gate-major order (gate g, head k, unit j at g*K*d + k*d + j), the order the input projection has. Heads never see
    each other's units. K = 1 is the same as F.linear(h, w_hh[0]) (up to summation order)."""
    K, Gd, d = w_hh.shape
    G = Gd // d
    N = h.shape[0]
    per_head = torch.matmul(h.view(N, K, d).transpose(0, 1), w_hh.transpose(1, 2))  # [K, N, G*d]
    return per_head.view(K, N, G, d).permute(1, 2, 0, 3).reshape(N, G * K * d)


def cell_step(
    mode: str,
    gi: Tensor,
    h: Tensor,
    c: Tensor | None,
    w_hh: Tensor,
    b_hh: Tensor | None,
    w_hr: Tensor | None,
    norm: LayerNormWeights | None = None,
) -> tuple[Tensor, Tensor | None]:
    """One time step given the input projection gi = x_t W_ih^T + b_ih [N, G*H] (with `norm`: LN(x_t W_ih^T) + b_ih);
    returns (h', c') before zoneout."""
    if mode in ELEMENTWISE_RECURRENCE:
        gh = h * w_hh if b_hh is None else h * w_hh + b_hh
    elif w_hh.dim() == 3:  # multi-head
        gh = headwise_linear(h, w_hh) if b_hh is None else headwise_linear(h, w_hh) + b_hh
    elif norm is not None:
        gh = layer_norm(F.linear(h, w_hh), norm.hh)
        gh = gh if b_hh is None else gh + b_hh
    else:
        gh = F.linear(h, w_hh, b_hh)  # all gates of the step in one matmul against the concatenated W_hh
    if mode == "LSTM":
        i, f, g, o = (gi + gh).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        c_out = c if norm is None else layer_norm(c, norm.c_weight, norm.c_bias)
        h = torch.sigmoid(o) * torch.tanh(c_out)
        return (h if w_hr is None else F.linear(h, w_hr)), c
    if mode == "GRU":
        i_r, i_z, i_n = gi.chunk(3, dim=1)
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)  # PyTorch's (and cuDNN's) GRU: the reset gate scales W_hn h + b_hn
        return (1 - z) * n + z * h, None
    if mode in ("RNN_TANH", "INDRNN_TANH"):
        return torch.tanh(gi + gh), None
    if mode in ("RNN_RELU", "INDRNN_RELU"):
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
    *,
    norm: LayerNormWeights | None = None,
    zoneout: ZoneoutMasks | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Run one layer in one direction over the whole sequence (shapes and variants in the module docstring)."""
    check_variant(mode, x, w_hh, norm, zoneout, w_hr)
    T, N, _ = x.shape
    H = hidden_size(mode, w_hh)
    P = H if mode in ELEMENTWISE_RECURRENCE or w_hh.dim() == 3 else w_hh.shape[1]
    h = x.new_zeros(N, P) if hx is None else hx
    c = (x.new_zeros(N, H) if cx is None else cx) if mode == "LSTM" else None
    # The input projection of all T steps: one matmul, outside the loop (normalised before its bias is added).
    if norm is None:
        gi_all = F.linear(x, w_ih, b_ih)
    else:
        gi_all = layer_norm(F.linear(x, w_ih), norm.ih)
        gi_all = gi_all if b_ih is None else gi_all + b_ih
    valid = None if lengths is None else torch.arange(T, device=x.device).unsqueeze(1) < lengths.to(x.device)
    ys: list[Tensor] = [x] * T  # placeholders, every slot is overwritten below
    for t in range(T - 1, -1, -1) if reverse else range(T):
        h_new, c_new = cell_step(mode, gi_all[t], h, c, w_hh, b_hh, w_hr, norm)
        if zoneout is not None:  # m h_prev + (1 - m) h~: exactly h_prev or h~ for a 0/1 mask, haste's eval formula
            h_new = zoneout.h[t] * h + (1 - zoneout.h[t]) * h_new
            if zoneout.c is not None:
                c_new = zoneout.c[t] * c + (1 - zoneout.c[t]) * c_new
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


def check_variant(
    mode: str,
    x: Tensor,
    w_hh: Tensor,
    norm: LayerNormWeights | None,
    zoneout: ZoneoutMasks | None,
    w_hr: Tensor | None,
) -> None:
    """The one check of a layer call's variant inputs (shapes in the module docstring), made before any kernel reads
    them by pointer: ValueError for a combination the variants do not define, RuntimeError (as torch.nn's shape
    checks) for a tensor of the wrong shape, dtype or device."""
    if mode not in GATES:
        raise ValueError(f"unknown RNN mode {mode!r}; expected one of {sorted(GATES)}")
    if mode in ELEMENTWISE_RECURRENCE and w_hh.dim() != 1:
        raise RuntimeError(f"{mode}: the recurrent weight is the vector u [H], got shape {list(w_hh.shape)}")
    if w_hh.dim() == 3:
        if w_hh.shape[1] != GATES[mode] * w_hh.shape[2]:
            raise RuntimeError(f"{mode}: a multi-head recurrent weight should have shape [heads, {GATES[mode]} * "
                               f"head_dim, head_dim], got {list(w_hh.shape)}")  # fmt: skip
        if norm is not None or w_hr is not None:
            raise ValueError("multi-head recurrences with layer norm or a projection are not defined")
    H = hidden_size(mode, w_hh)
    if norm is not None:
        if mode not in ("LSTM", "GRU"):
            raise ValueError(f"layer norm is defined for LSTM and GRU, not {mode}")
        if (mode == "LSTM") != (norm.c_weight is not None):
            raise ValueError("the LSTM's layer norm needs the cell-state gain c_weight, the GRU's has none")
        if norm.c_bias is not None and norm.c_weight is None:
            raise ValueError("a cell-state layer-norm bias c_bias needs its gain c_weight")
        if w_hr is not None:
            raise ValueError("layer norm with a projection (proj_size) is not defined")
        sizes = {"ih": GATES[mode] * H, "hh": GATES[mode] * H, "c_weight": H, "c_bias": H}
        for name, size in sizes.items():
            gain = getattr(norm, name)
            if gain is not None and gain.shape != (size,):
                raise RuntimeError(f"layer norm {name} should have shape [{size}], got {list(gain.shape)}")
    if zoneout is not None:
        if w_hr is not None:
            raise ValueError("zoneout with a projection (proj_size) is not defined")
        if zoneout.c is not None and mode != "LSTM":
            raise ValueError(f"a cell-state zoneout mask needs an LSTM, not {mode}")
        shape = (x.shape[0], x.shape[1], H)
        for name, mask in zip(ZoneoutMasks._fields, zoneout):
            if mask is None:
                continue
            if mask.shape != shape:
                raise RuntimeError(f"zoneout mask {name} should have shape [T, N, H] = {list(shape)}, got "
                                   f"{list(mask.shape)}")  # fmt: skip
            if mask.dtype != x.dtype or mask.device != x.device:
                raise RuntimeError(f"zoneout mask {name} has dtype {mask.dtype} on {mask.device}, but the input has "
                                   f"dtype {x.dtype} on {x.device}; they must match")  # fmt: skip


#: The tensors of one layer call, in the order `layer_vjp` takes them (`layer_inputs` builds the tuple).
LAYER_INPUTS = ("x", "hx", "cx", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr",
                "ln_ih", "ln_hh", "ln_c_weight", "ln_c_bias", "zoneout_h", "zoneout_c")  # fmt: skip


def layer_inputs(
    x: Tensor,
    hx: Tensor | None,
    cx: Tensor | None,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    w_hr: Tensor | None,
    norm: LayerNormWeights | None = None,
    zoneout: ZoneoutMasks | None = None,
) -> tuple[Tensor | None, ...]:
    """The LAYER_INPUTS tuple of one layer call (None for what it lacks)."""
    norm = norm or LayerNormWeights(None, None)
    zoneout = zoneout or ZoneoutMasks(None)
    return (x, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, *norm, *zoneout)


def _unflatten(inputs: tuple[Tensor | None, ...]) -> tuple[tuple, LayerNormWeights | None, ZoneoutMasks | None]:
    """LAYER_INPUTS (or its first eight, the plain layer's) back to rnn_layer's arguments."""
    full = (*inputs, *[None] * (len(LAYER_INPUTS) - len(inputs)))
    norm = None if full[8] is None else LayerNormWeights(*full[8:12])
    zoneout = None if full[12] is None else ZoneoutMasks(*full[12:14])
    return full[:8], norm, zoneout


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
    the layer here. inputs = LAYER_INPUTS as given to the kernel (`layer_inputs`; a plain layer may pass only the
    first eight, x .. w_hr); grads = upstream gradients of (y, h_n, c_n), None for zero; needs_grad says which inputs
    want a gradient (None for the others; the zoneout masks are constants and get none).

    torch.func.vjp rather than torch.autograd.grad: inside a backward that torch.func runs, the transform's own
    autograd level is no longer active, so only a transform sees how the recomputed outputs depend on the inputs;
    it composes with plain autograd as well."""
    masks = range(LAYER_INPUTS.index("zoneout_h"), len(LAYER_INPUTS))

    def layer(full: tuple[Tensor | None, ...]) -> tuple[Tensor, ...]:
        tensors, norm, zoneout = _unflatten(full)
        outputs = rnn_layer(mode, *tensors, reverse=reverse, lengths=lengths, norm=norm, zoneout=zoneout)
        return tuple(o for o in outputs if o is not None)

    return recomputed_vjp(layer, inputs, grads, [need and i not in masks for i, need in enumerate(needs_grad)])


def recomputed_vjp(
    layer,
    inputs: tuple[Tensor | None, ...],
    grads: tuple[Tensor | None, ...],
    needs_grad: list[bool] | tuple[bool, ...],
) -> list[Tensor | None]:
    """The differentiable vector-Jacobian product of layer(inputs) -> outputs (layer takes the whole tuple) with
    respect to the inputs that need a gradient and are not None (None for the others); grads: one per output, None
    for zero. See layer_vjp for why torch.func.vjp."""
    wanted = [i for i, (t, need) in enumerate(zip(inputs, needs_grad)) if need and t is not None]
    result: list[Tensor | None] = [None] * len(inputs)
    if not wanted:
        return result

    def partial(*values: Tensor) -> tuple[Tensor, ...]:
        full = list(inputs)
        for index, value in zip(wanted, values):
            full[index] = value
        return layer(tuple(full))

    outputs, pullback = torch.func.vjp(partial, *(inputs[i] for i in wanted))
    cotangents = tuple(torch.zeros_like(o) if g is None else g for o, g in zip(outputs, grads))
    for index, value in zip(wanted, pullback(cotangents)):
        result[index] = value
    return result
