"""torch.library ops around xLSTM's sLSTM kernels (fusedrnn.kernels.slstm, issue #21), registered like
fusedrnn.triton_heads_ops' (whose launch helpers they share), with the autograd shared with the other layer ops
(fusedrnn.autograd_paths; double backward through fusedrnn.reference_slstm.slstm_vjp).

  fusedrnn::triton_slstm_forward(x, h0?, c0?, n0?, m0?, w_ih?, w_hh [K, 4*d, d], b_ih?, b_hh?, lengths?, reverse,
                                 tirex, save)
      -> (y [T,N,H], h_n, c_n, n_n, m_n [N,H], a [T,N,4*H], states [S,4,N,H] fp32)
      1 matmul a = x W_ih^T + b_ih + b_hh for all T steps (x is already projected when w_ih is None) + 1 launch of
      K x ceil(N / 16) programs for the whole sequence (plan.plan_slstm). With `save` the states of every step are
      kept (S = T + 1) for the backward, else two slots alternate.
  fusedrnn::triton_slstm_backward(dy, dh_n, dc_n, dn_n, dm_n, x, w_ih?, w_hh, a, states, lengths?, reverse, tirex)
      -> (dx, dh0, dc0, dn0, dm0, dW_ih | [0], dW_hh [K, 4*d, d], db [4*H])
      1 launch (the gates recomputed from the saved states, their gradients da, the carries, dh_{t-1} += da_t R per
      head) + matmuls over all T*N rows: dx, dW_ih, and dW_hh as one batched matmul over heads; db = sum of da (both
      biases add to the same pre-activations).

Storage is the input dtype (fp32, fp16, bf16); the state and the pointwise math are fp32 in the kernels, the state
buffers fp32 here, y and the final state returned in the input dtype (as fusedrnn.reference_slstm does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fusedrnn.kernels import plan as kernel_plan
from fusedrnn.kernels.slstm import slstm_backward_kernel, slstm_forward_kernel

from . import autograd_paths
from .reference_slstm import (SLSTM_GATES, SLSTM_LAYER_INPUTS, TIREX_FORGET_CLAMP, SLSTMState, check_slstm_weights,
                              slstm_vjp)  # fmt: skip
from .triton_ops import _launchable, _op, _placeholder, dot_precision, wrap_triton

#: The state's parts (h, c, n, m): one slot of the kernels' states buffer.
SLSTM_STATES = len(SLSTMState._fields)


def slstm_plan(x: Tensor, N: int, w_hh: Tensor) -> kernel_plan.HeadsPlan:
    K, _, d = w_hh.shape
    return kernel_plan.plan_slstm(N, K * d, K, x.element_size())


def _pre_activations(x: Tensor, w_ih: Tensor | None, b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor:
    """a [T, N, 4*H] = x W_ih^T + b_ih + b_hh (x itself plus the biases when already projected), the biases folded
    into one as fusedrnn.triton_heads_ops does; a new tensor: an op's output may not alias its input."""
    bias = b_ih if b_hh is None else (b_hh if b_ih is None else b_ih + b_hh)
    if w_ih is not None:
        return F.linear(x, w_ih, bias).contiguous()
    return (x.clone() if bias is None else x + bias).contiguous()


def _flags(states: Tensor, first: int, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
    """(n0_zero, max_len): device scalars the kernels read for xlstm's first-step rule (fusedrnn.kernels.slstm's
    docstring), so the host never syncs on them; max_len is an unread placeholder without lengths."""
    n0_zero = (states[first, 2] == 0).all()
    return n0_zero, (lengths.max() if lengths is not None else states.new_empty((1,), dtype=torch.int64))


@_op("fusedrnn::triton_slstm_forward")
def slstm_forward(
    x: Tensor,
    h0: Tensor | None,
    c0: Tensor | None,
    n0: Tensor | None,
    m0: Tensor | None,
    w_ih: Tensor | None,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    lengths: Tensor | None,
    reverse: bool,
    tirex: bool,
    save: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    T, N, _ = x.shape
    K, _, d = w_hh.shape
    H = K * d
    a = _pre_activations(x, w_ih, b_ih, b_hh)
    slots = T + 1 if save else 2
    first = T if save and reverse else 0  # slots as in fusedrnn.kernels.timesteps
    last = (0 if reverse else T) if save else T % 2
    states = x.new_empty((slots, SLSTM_STATES, N, H), dtype=torch.float32)  # the kernel writes every other slot
    for part, initial in enumerate((h0, c0, n0, m0)):
        if initial is None:
            states[first, part].zero_()
        else:
            states[first, part].copy_(initial)
    y = x.new_empty((T, N, H))
    n0_zero, max_len = _flags(states, first, lengths)
    plan = slstm_plan(x, N, w_hh)
    if _launchable(x) and T * N * H:  # an empty grid or sequence: nothing to run
        wrap_triton(slstm_forward_kernel)[plan.grid](
            a, w_hh.contiguous(), states, y, lengths.contiguous() if lengths is not None else _placeholder(x),
            n0_zero, max_len, T, N, H, d, int(reverse), HAS_LENGTHS=lengths is not None, SAVE=save, TIREX=tirex,
            FORGET_CLAMP=TIREX_FORGET_CLAMP, BLOCK_N=plan.block_n, BLOCK_H=plan.block_h, BLOCK_K=plan.block_k,
            PRECISION=dot_precision(x.dtype), num_warps=plan.warps, maxnreg=plan.forward_registers,
        )  # fmt: skip
    h_n, c_n, n_n, m_n = (states[last, part].to(x.dtype, copy=True) for part in range(SLSTM_STATES))
    return y, h_n, c_n, n_n, m_n, a, states


@_op("fusedrnn::triton_slstm_backward")
def slstm_backward(
    grad_y: Tensor,
    grad_h: Tensor,
    grad_c: Tensor,
    grad_n: Tensor,
    grad_m: Tensor,
    x: Tensor,
    w_ih: Tensor | None,
    w_hh: Tensor,
    a: Tensor,
    states: Tensor,
    lengths: Tensor | None,
    reverse: bool,
    tirex: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    T, N, I = x.shape
    K, Gd, d = w_hh.shape
    H = K * d
    dh = x.new_zeros((2, N, H), dtype=torch.float32)
    dh[0].copy_(grad_h)
    dcnm = torch.stack([grad_c, grad_n, grad_m]).to(torch.float32)
    da = x.new_empty((T, N, SLSTM_GATES * H))
    n0_zero, max_len = _flags(states, T if reverse else 0, lengths)
    plan = slstm_plan(x, N, w_hh)
    if _launchable(x) and T * N * H:
        wrap_triton(slstm_backward_kernel)[plan.grid](
            a, w_hh.contiguous(), states, grad_y.contiguous(), dh, dcnm, da,
            lengths.contiguous() if lengths is not None else _placeholder(x), n0_zero, max_len, T, N, H, d,
            int(reverse), HAS_LENGTHS=lengths is not None, TIREX=tirex, FORGET_CLAMP=TIREX_FORGET_CLAMP,
            BLOCK_N=plan.block_n, BLOCK_H=plan.block_h, BLOCK_K=plan.block_k, PRECISION=dot_precision(x.dtype),
            num_warps=plan.warps, maxnreg=plan.backward_registers,
        )  # fmt: skip
    elif T * N * H == 0:  # no launch wrote it: every gate gradient is zero
        da.zero_()
    rows = T * N
    da_rows = da.view(rows, SLSTM_GATES * H)
    h_prev = (states[1 : T + 1, 0] if reverse else states[:T, 0]).reshape(rows, H)  # before each step, time order
    dx = da if w_ih is None else (da_rows @ w_ih).view(T, N, I)
    dw_ih = da_rows.t() @ x.reshape(rows, I) if w_ih is not None else x.new_empty((0,))
    # dR_k = sum over rows of da[head k]^T h_prev[head k]: [K, 4*d, rows] @ [K, rows, d], one batched matmul.
    da_heads = da_rows.view(rows, SLSTM_GATES, K, d).permute(2, 1, 3, 0).reshape(K, Gd, rows)
    dw_hh = torch.bmm(da_heads, h_prev.to(x.dtype).view(rows, K, d).transpose(0, 1))
    db = da_rows.sum(0, dtype=torch.float32).to(x.dtype)
    dh0 = dh[T % 2].to(x.dtype, copy=True)  # the dh slot holding dL/dh_0
    dc0, dn0, dm0 = (dcnm[part].to(x.dtype, copy=True) for part in range(3))
    return dx, dh0, dc0, dn0, dm0, dw_ih, dw_hh, db


#: The op's arguments: reference_slstm.SLSTM_LAYER_INPUTS (positions 0-8), then lengths, reverse, tirex, save.
_INPUTS = range(len(SLSTM_LAYER_INPUTS))
_ARITY = len(_INPUTS) + 4
_OUTPUTS = 5  # y, h_n, c_n, n_n, m_n: the differentiable ones


def _setup_context(ctx, inputs, output) -> None:
    *tensors, lengths, reverse, tirex, save = inputs
    a, states = output[-2:]
    ctx.save_for_backward(*tensors, a, states, lengths)
    ctx.reverse, ctx.tirex, ctx.save = reverse, tirex, save
    ctx.mark_non_differentiable(a, states)


def _recompute(ctx) -> autograd_paths.Recompute:
    *inputs, _a, _states, lengths = ctx.saved_tensors
    return autograd_paths.Recompute("tirex" if ctx.tirex else "xlstm", tuple(inputs), ctx.reverse, lengths)


def _kernel_backward(ctx, grad_y, *grad_final):
    x, h0, c0, n0, m0, w_ih, w_hh, b_ih, b_hh, a, states, lengths = ctx.saved_tensors
    if not ctx.save:
        raise RuntimeError("fusedrnn triton backend: the sLSTM forward ran without saving its states "
                           "(autograd was off)")
    T, N, _ = x.shape
    H = states.shape[-1]
    grad_y = x.new_zeros((T, N, H)) if grad_y is None else grad_y
    grad_final = [x.new_zeros((N, H)) if g is None else g for g in grad_final[: _OUTPUTS - 1]]
    dx, dh0, dc0, dn0, dm0, dw_ih, dw_hh, db = slstm_backward(grad_y, *grad_final, x, w_ih, w_hh, a, states, lengths,
                                                              ctx.reverse, ctx.tirex)  # fmt: skip
    # Both biases are added to the same pre-activations: the same gradient, a copy each (no two grads alias).
    db_ih = db if b_ih is not None else None
    db_hh = (db.clone() if b_ih is not None else db) if b_hh is not None else None
    initial = [g if s is not None else None for g, s in zip((dh0, dc0, dn0, dm0), (h0, c0, n0, m0))]
    return (dx, *initial, dw_ih if w_ih is not None else None, dw_hh, db_ih, db_hh, None, None, None, None)


_LAYER = autograd_paths.LayerAutograd(
    "TritonSLSTMLayer",
    slstm_forward,
    _setup_context,
    _kernel_backward,
    _recompute,
    input_positions=_INPUTS,
    arity=_ARITY,
    vjp=slstm_vjp,
    outputs=_OUTPUTS,
)
slstm_forward.register_autograd(_LAYER.backward, setup_context=_setup_context)


def slstm_layer(x, state, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False, lengths=None, *, formulation="xlstm"):
    """fusedrnn.reference_slstm.slstm_layer's contract on the Triton kernels (fp32, fp16 or bf16 tensors)."""
    check_slstm_weights(x, w_ih, w_hh, b_ih, b_hh)
    initial = (None,) * SLSTM_STATES if state is None else tuple(state)
    tensors = (x, *initial, w_ih, w_hh, b_ih, b_hh)  # SLSTM_LAYER_INPUTS
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    lengths = None if lengths is None else lengths.to(torch.int64)
    y, *final, _a, _states = _LAYER.apply(*tensors, lengths, reverse, formulation == "tirex", save,
                                          differentiable=save)  # fmt: skip
    return y, SLSTMState(*final)
