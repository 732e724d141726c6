"""torch.library ops around the multi-head kernels (fusedrnn.kernels.heads, issue #21): LSTM / GRU / Elman RNN whose
W_hh is block-diagonal, stored as [K, G*d, d]. Registered like fusedrnn.triton_ops' (whose launch helpers they use),
with the autograd shared with the other layer ops (fusedrnn.autograd_paths; double backward through the reference,
which computes heads too).

  fusedrnn::triton_heads_forward(x, h0?, c0?, w_ih, w_hh [K, G*d, d], b_ih?, b_hh?, lengths?, mode, reverse, save)
      -> (y [T,N,H], h_n [N,H], c_n [N,H] | [0], saved [T,N,SLOTS*H] | [0], hs [S,N,H] fp32, cs [S,N,H] fp32 | [0])
      1 matmul x W_ih^T + b_ih + b_hh for all T steps (the GRU's b_hn stays apart: the reset gate scales it) + 1
      launch of K x ceil(N / 16) programs for the whole sequence (plan.plan_heads).
  fusedrnn::triton_heads_backward(dy, dh_n, dc_n?, x, w_ih, w_hh, saved, hs, cs, lengths?, mode, reverse, bias)
      -> (dx, dh0, dc0 | [0], dW_ih, dW_hh [K, G*d, d], db_ih | [0], db_hh | [0])
      1 launch (gate gradients, dh / dc carried, dh_{t-1} += dgates_t R per head) + matmuls over all T*N rows:
      dx, dW_ih, and dW_hh as one batched matmul over heads (only the diagonal blocks exist).

What the forward saves is the plain ops' (fusedrnn.triton_ops): hs, cs and the gate activations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fusedrnn.kernels import plan as kernel_plan
from fusedrnn.kernels.heads import heads_backward_kernel, heads_forward_kernel
from fusedrnn.kernels.modes import MODE_IDS, SAVED_SLOTS

from . import autograd_paths
from .triton_ops import _launchable, _mode_name, _op, _placeholder, dot_precision, state_sequences, wrap_triton

LSTM_ID = MODE_IDS["LSTM"]
GRU_ID = MODE_IDS["GRU"]


def heads_plan(x: Tensor, N: int, w_hh: Tensor) -> kernel_plan.HeadsPlan:
    K, Gd, d = w_hh.shape
    problem = kernel_plan.Problem(batch=N, hidden=K * d, gates=Gd // d, element_size=x.element_size())
    return kernel_plan.plan_heads(problem, K)


def _input_projection(x: Tensor, w_ih: Tensor, b_ih: Tensor | None, b_hh: Tensor | None, is_gru: bool) -> Tensor:
    """gi [T, N, G*H] = x W_ih^T + b_ih + b_hh, the GRU's b_hn left out (the kernel adds it where r scales it)."""
    bias = b_ih
    if b_hh is not None:
        folded = b_hh
        if is_gru:
            H = b_hh.shape[0] // 3
            folded = torch.cat([b_hh[: 2 * H], b_hh.new_zeros(H)])
        bias = folded if bias is None else bias + folded
    return F.linear(x, w_ih, bias).contiguous()


@_op("fusedrnn::triton_heads_forward")
def heads_forward(
    x: Tensor,
    h0: Tensor | None,
    c0: Tensor | None,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    lengths: Tensor | None,
    mode: int,
    reverse: bool,
    save: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    T, N, _ = x.shape
    K, Gd, d = w_hh.shape
    gates, H = Gd // d, K * d
    slots = SAVED_SLOTS[mode]
    is_lstm, is_gru = mode == LSTM_ID, mode == GRU_ID
    gi = _input_projection(x, w_ih, b_ih, b_hh, is_gru)
    hs, cs, _, last = state_sequences(x, h0, c0, H, H, is_lstm, save, reverse)
    y = x.new_empty((T, N, H))
    saved = x.new_empty((T, N, slots * H) if save and slots else (0,))
    plan = heads_plan(x, N, w_hh)
    if _launchable(x) and T * N * H:  # an empty grid or sequence: nothing to run
        wrap_triton(heads_forward_kernel)[plan.grid](
            gi, w_hh.contiguous(), b_hh.contiguous() if is_gru and b_hh is not None else _placeholder(x),
            lengths.contiguous() if lengths is not None else _placeholder(x), hs, cs if is_lstm else _placeholder(x),
            y, saved if save and slots else _placeholder(x), T, N, H, d, MODE=mode, GATES=gates,
            reverse=int(reverse), HAS_B_HN=is_gru and b_hh is not None, HAS_LENGTHS=lengths is not None, SAVE=save,
            SLOTS=slots, BLOCK_N=plan.block_n, BLOCK_H=plan.block_h, BLOCK_K=plan.block_k,
            PRECISION=dot_precision(x.dtype), num_warps=plan.warps, maxnreg=plan.forward_registers,
        )  # fmt: skip
    h_n = hs[last].to(x.dtype, copy=True)
    c_n = cs[last].to(x.dtype, copy=True) if is_lstm else x.new_empty((0,))
    return y, h_n, c_n, saved, hs, cs


@_op("fusedrnn::triton_heads_backward")
def heads_backward(
    grad_y: Tensor,
    grad_hn: Tensor,
    grad_cn: Tensor | None,
    x: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    saved: Tensor,
    hs: Tensor,
    cs: Tensor,
    lengths: Tensor | None,
    mode: int,
    reverse: bool,
    bias: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    T, N, I = x.shape
    K, Gd, d = w_hh.shape
    gates, H = Gd // d, K * d
    GH = gates * H
    is_lstm, is_gru = mode == LSTM_ID, mode == GRU_ID
    dh = x.new_zeros((2, N, H), dtype=torch.float32)
    dh[0].copy_(grad_hn)
    dc = x.new_zeros((N, H) if is_lstm else (1,), dtype=torch.float32)
    if is_lstm and grad_cn is not None:
        dc.copy_(grad_cn)
    dgi = x.new_empty((T, N, GH))
    dgh = x.new_empty((T, N, GH)) if is_gru else _placeholder(x)  # phase B reads dgi then
    plan = heads_plan(x, N, w_hh)
    if _launchable(x) and T * N * H:
        wrap_triton(heads_backward_kernel)[plan.grid](
            grad_y.contiguous(), saved if saved.numel() else _placeholder(x), hs, cs if is_lstm else _placeholder(x),
            w_hh.contiguous(), lengths.contiguous() if lengths is not None else _placeholder(x), dh, dc, dgi, dgh,
            T, N, H, d, MODE=mode, GATES=gates, reverse=int(reverse), HAS_LENGTHS=lengths is not None,
            SLOTS=SAVED_SLOTS[mode], BLOCK_N=plan.block_n, BLOCK_H=plan.block_h, BLOCK_K=plan.block_k,
            PRECISION=dot_precision(x.dtype), num_warps=plan.warps, maxnreg=plan.backward_registers,
        )  # fmt: skip
    elif T * N * H == 0:  # no launch wrote them: every gate gradient is zero
        dgi.zero_()
        if is_gru:
            dgh.zero_()
    rows = T * N
    dgi_rows = dgi.view(rows, GH)
    dgh_rows = dgh.view(rows, GH) if is_gru else dgi_rows  # the gradient of h R^T + b_hh
    h_prev = (hs[1 : T + 1] if reverse else hs[:T]).reshape(rows, H)  # the state before each step, in time order
    dx = (dgi_rows @ w_ih).view(T, N, I)
    dw_ih = dgi_rows.t() @ x.reshape(rows, I)
    # dR_k = sum over rows of dgates[head k] ^T h_prev[head k]: [K, G*d, rows] @ [K, rows, d], one batched matmul.
    dgh_heads = dgh_rows.view(rows, gates, K, d).permute(2, 1, 3, 0).reshape(K, Gd, rows)
    dw_hh = torch.bmm(dgh_heads, h_prev.to(x.dtype).view(rows, K, d).transpose(0, 1))
    if bias:
        db_ih = dgi_rows.sum(0, dtype=torch.float32).to(x.dtype)
        db_hh = dgh_rows.sum(0, dtype=torch.float32).to(x.dtype)
    else:
        db_ih, db_hh = x.new_empty((0,)), x.new_empty((0,))  # two tensors: outputs may not alias
    final = T % 2  # the dh slot holding dL/dh_0
    dh0 = dh[final].to(x.dtype, copy=True)
    dc0 = dc.to(x.dtype, copy=True) if is_lstm else x.new_empty((0,))
    return dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh


def _setup_context(ctx, inputs, output) -> None:
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, mode, reverse, save = inputs
    _, _, _, saved, hs, cs = output
    ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, saved, hs, cs, lengths)
    ctx.mode, ctx.reverse, ctx.save = mode, reverse, save
    ctx.mark_non_differentiable(saved, hs, cs)


def _recompute(ctx) -> autograd_paths.Recompute:
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, _saved, _hs, _cs, lengths = ctx.saved_tensors
    return autograd_paths.Recompute(_mode_name(ctx.mode), (x, h0, c0, w_ih, w_hh, b_ih, b_hh), ctx.reverse, lengths)


def _kernel_backward(ctx, grad_y, grad_hn, grad_cn, *_unused):
    x, h0, c0, w_ih, w_hh, b_ih, _b_hh, saved, hs, cs, lengths = ctx.saved_tensors
    if not ctx.save:
        raise RuntimeError("fusedrnn triton backend: the forward ran without saving activations (autograd was off)")
    T, N, _ = x.shape
    H = hs.shape[-1]
    grad_y = x.new_zeros((T, N, H)) if grad_y is None else grad_y
    grad_hn = x.new_zeros((N, H)) if grad_hn is None else grad_hn
    is_lstm = ctx.mode == LSTM_ID
    has_bias = b_ih is not None
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh = heads_backward(
        grad_y, grad_hn, grad_cn if is_lstm else None, x, w_ih, w_hh, saved, hs, cs, lengths, ctx.mode, ctx.reverse,
        has_bias,
    )  # fmt: skip
    return (dx, dh0 if h0 is not None else None, dc0 if c0 is not None else None, dw_ih, dw_hh,
            db_ih if has_bias else None, db_hh if has_bias else None, None, None, None, None)  # fmt: skip


_LAYER = autograd_paths.LayerAutograd(
    "TritonHeadsLayer",
    heads_forward,
    _setup_context,
    _kernel_backward,
    _recompute,
    input_positions=range(7),  # the seven tensors first, then lengths, mode, reverse, save
    arity=11,
)
heads_forward.register_autograd(_LAYER.backward, setup_context=_setup_context)


def rnn_layer(
    mode: str,
    x: Tensor,
    hx: Tensor | None,
    cx: Tensor | None,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    reverse: bool = False,
    lengths: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """`fusedrnn.reference.rnn_layer`'s contract for a multi-head w_hh [K, G*d, d] on the Triton kernels."""
    tensors = (x, hx, cx if mode == "LSTM" else None, w_ih, w_hh, b_ih, b_hh)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    y, h_n, c_n, *_ = _LAYER.apply(*tensors, lengths, MODE_IDS[mode], reverse, save, differentiable=save)
    return y, h_n, (c_n if mode == "LSTM" else None)
