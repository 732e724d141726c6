"""The plain-PyTorch oracle of xLSTM's sLSTM (Beck et al. 2024, arXiv 2405.04517, eqs. 8-17): one layer, one
direction, autograd for gradients. Like fusedrnn.reference: short and obviously right; speed is the kernels' job.

Shapes (T = time steps, N = batch, I = input features, H = hidden size, K = heads, d = H / K, gates i, f, z, o):
    x        [T, N, I], or [T, N, 4*H] already projected when w_ih is None (what xlstm's sLSTMCell takes)
    state    SLSTMState(h, c, n, m), each [N, H], or None (all zeros)
    w_ih     [4*H, I] or None     w_hh [K, 4*d, d]     b_ih, b_hh [4*H] or None
    lengths  [N] integer or None: row n is valid for t < lengths[n] (a packed sequence, padded)
    returns  y [T, N, H], SLSTMState of [N, H]

Pre-activations are gate-major, as torch.nn's: a = x W_ih^T + b_ih + R(h_{t-1}) + b_hh = (i~, f~, z~, o~), each
[N, H] with unit j of head k at k*d + j; R is block-diagonal over heads (fusedrnn.reference.headwise_linear), so a
head's recurrent input is only its own d units. The stabilised step, in the formulation of xlstm's vanilla backend
(xlstm/blocks/slstm/src/vanilla/slstm.py):
    log f = logsigmoid(f~)                         ("tirex": logsigmoid(min(f~, TIREX_FORGET_CLAMP)))
    m_t   = i~                                     while the whole n state (every row and unit) is zero,
          = max(log f + m_{t-1}, i~)               otherwise
    i'    = min(exp(i~ - m_t), 1)                  f' = min(exp(log f + m_{t-1} - m_t), 1)
    c_t   = f' c_{t-1} + i' tanh(z~)               n_t = f' n_{t-1} + i'
    h_t   = sigmoid(o~) c_t / n_t
m only keeps exp() in range: without the caps, c / n does not depend on it. The caps bind only on the first-step
rule's branch (m_t = i~ may be below log f + m_{t-1}), where they change the result only if c_{t-1} is non-zero.

Precision: float16 / bfloat16 inputs are computed in float32 (states, pre-activations, the recurrent matmul); y and
the final state are returned in the input's dtype, as torch.nn returns its states.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .reference import headwise_linear, recomputed_vjp

#: sLSTM's gates, in its pre-activation order (i, f, z, o).
SLSTM_GATES = 4
#: The formulations, named after the code each reproduces: "xlstm" (xlstm's vanilla sLSTM), "tirex" (TiRex's, which
#: clamps f~ before logsigmoid).
SLSTM_FORMULATIONS = ("xlstm", "tirex")
#: TiRex clamps the forget pre-activation at this value ("to avoid subnormals" of exp(logsigmoid(f~)) gradients).
TIREX_FORGET_CLAMP = 15.0


class SLSTMState(NamedTuple):
    """sLSTM's state, each [N, H] (per layer direction; stacked [L*D, N, H] in the modules): the output h, the cell
    c, the normaliser n and the stabiliser m (xlstm stacks the same four, in this order, as [4, N, H])."""

    h: Tensor
    c: Tensor
    n: Tensor
    m: Tensor


def check_formulation(formulation: object) -> str:
    if formulation not in SLSTM_FORMULATIONS:
        raise ValueError(f"formulation should be one of {', '.join(map(repr, SLSTM_FORMULATIONS))}, "
                         f"got {formulation!r}")  # fmt: skip
    return formulation


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the step is computed in: float32 for half-precision storage, else the storage dtype."""
    return torch.promote_types(dtype, torch.float32)


def slstm_step(a: Tensor, state: SLSTMState, formulation: str = "xlstm") -> SLSTMState:
    """One stabilised step given all pre-activations a = W x_t + b + R h_{t-1} [N, 4*H]; returns the next state."""
    _, c, n, m = state
    i_raw, f_raw, z_raw, o_raw = a.chunk(SLSTM_GATES, dim=1)
    if formulation == "tirex":
        f_raw = torch.clamp(f_raw, max=TIREX_FORGET_CLAMP)
    log_f_plus_m = m + F.logsigmoid(f_raw)
    # xlstm's first-step rule, on the whole state (one flag for the batch, as xlstm computes it); torch.where rather
    # than a Python branch, so that no device sync and no graph break is needed to read the flag.
    m_new = torch.where(torch.all(n == 0.0), i_raw, torch.maximum(i_raw, log_f_plus_m))
    one = torch.ones_like(i_raw)
    # torch.minimum as xlstm writes it (not clamp), so that even the gradient at the cap (where exp(...) is exactly 1
    # and minimum splits its gradient) is xlstm's.
    i_gate = torch.minimum(torch.exp(i_raw - m_new), one)
    f_gate = torch.minimum(torch.exp(log_f_plus_m - m_new), one)
    c_new = f_gate * c + i_gate * torch.tanh(z_raw)
    n_new = f_gate * n + i_gate
    h_new = torch.sigmoid(o_raw) * c_new / n_new
    return SLSTMState(h_new, c_new, n_new, m_new)


def slstm_layer(
    x: Tensor,
    state: SLSTMState | None,
    w_ih: Tensor | None,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    reverse: bool = False,
    lengths: Tensor | None = None,
    *,
    formulation: str = "xlstm",
) -> tuple[Tensor, SLSTMState]:
    """Run one sLSTM layer in one direction over the whole sequence (shapes and math in the module docstring)."""
    check_formulation(formulation)
    check_slstm_weights(x, w_ih, w_hh, b_ih, b_hh)
    T, N, _ = x.shape
    K, Gd, d = w_hh.shape
    H = K * d
    dtype = compute_dtype(x.dtype)
    if state is None:
        zeros = x.new_zeros(N, H, dtype=dtype)
        state = SLSTMState(zeros, zeros, zeros, zeros)
    else:
        state = SLSTMState(*(s.to(dtype) for s in state))
    # The input projection of all T steps: one matmul, outside the loop (identity when x is already projected).
    a_all = x if w_ih is None else F.linear(x, w_ih, b_ih)
    a_all = a_all.to(dtype)
    if w_ih is None and b_ih is not None:
        a_all = a_all + b_ih.to(dtype)
    w_hh = w_hh.to(dtype)
    b_hh = None if b_hh is None else b_hh.to(dtype)
    valid = None if lengths is None else torch.arange(T, device=x.device).unsqueeze(1) < lengths.to(x.device)
    ys: list[Tensor] = [x] * T  # placeholders, every slot is overwritten below
    for t in range(T - 1, -1, -1) if reverse else range(T):
        a = a_all[t] + headwise_linear(state.h, w_hh)
        if b_hh is not None:
            a = a + b_hh
        new = slstm_step(a, state, formulation)
        if valid is None:
            state = new
            ys[t] = new.h
        else:
            # As fusedrnn.reference.rnn_layer: rows past their length keep their state and output zeros.
            keep = valid[t].unsqueeze(1)
            state = SLSTMState(*(torch.where(keep, s_new, s) for s_new, s in zip(new, state)))
            ys[t] = torch.where(keep, new.h, torch.zeros_like(new.h))
    y = torch.stack(ys).to(x.dtype)
    return y, SLSTMState(*(s.to(x.dtype) for s in state))


def check_slstm_weights(x: Tensor, w_ih: Tensor | None, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None) -> None:
    """RuntimeError (as torch.nn's shape checks) for weights that do not make an sLSTM layer on input x."""
    if w_hh.dim() != 3 or w_hh.shape[1] != SLSTM_GATES * w_hh.shape[2]:
        raise RuntimeError(f"sLSTM: the recurrent weight should have shape [heads, 4 * head_dim, head_dim], got "
                           f"{list(w_hh.shape)}")  # fmt: skip
    H = w_hh.shape[0] * w_hh.shape[2]
    features = x.shape[-1] if w_ih is None else w_ih.shape[0]
    if features != SLSTM_GATES * H:
        what = "pre-activation input" if w_ih is None else "input weight"
        raise RuntimeError(f"sLSTM: the {what} has {features} gate features, expected 4 * hidden_size = {4 * H}")
    if w_ih is not None and w_ih.shape[1] != x.shape[-1]:
        raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {w_ih.shape[1]}, got {x.shape[-1]}")
    for name, b in (("b_ih", b_ih), ("b_hh", b_hh)):
        if b is not None and b.shape != (SLSTM_GATES * H,):
            raise RuntimeError(f"sLSTM: {name} should have shape [{SLSTM_GATES * H}], got {list(b.shape)}")


#: The tensors of one layer direction, in the order `slstm_vjp` (and the compiled op) takes them.
SLSTM_LAYER_INPUTS = ("x", "h0", "c0", "n0", "m0", "w_ih", "w_hh", "b_ih", "b_hh")


def slstm_vjp(
    formulation: str,
    inputs: tuple[Tensor | None, ...],
    grads: tuple[Tensor | None, ...],
    reverse: bool,
    lengths: Tensor | None,
    needs_grad: tuple[bool, ...],
) -> list[Tensor | None]:
    """The vector-Jacobian product of `slstm_layer`, itself differentiable (fusedrnn.reference.layer_vjp's role for
    sLSTM): inputs = SLSTM_LAYER_INPUTS, grads = upstream gradients of (y, h, c, n, m), None for zero."""

    def layer(full: tuple[Tensor | None, ...]) -> tuple[Tensor, ...]:
        x, h0, c0, n0, m0, w_ih, w_hh, b_ih, b_hh = full
        y, final = slstm_layer(x, SLSTMState(h0, c0, n0, m0), w_ih, w_hh, b_ih, b_hh, reverse, lengths,
                               formulation=formulation)  # fmt: skip
        return (y, *final)

    return recomputed_vjp(layer, inputs, grads, needs_grad)
