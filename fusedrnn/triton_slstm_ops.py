"""xLSTM's sLSTM on Triton (issue #21): the forward and backward kernels (fusedrnn.kernels.slstm) with autograd.

Forward: the host computes the input projection of all steps (x W_ih^T + b_ih + b_hh), one launch runs the
recurrence and, for the backward, saves the state after every step [T, 4, N, H]. Backward: one launch walks the steps
back (recomputing each step's gates from the saved previous state) and writes the pre-activations' gradients and each
batch tile's share of dR; the host does the input projection's matmuls. Double backward is refused
(once_differentiable). Float32 only. Not yet a torch.library op, so the backend refuses torch.compile for it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
from torch import Tensor
from torch.autograd.function import once_differentiable

from .kernels.slstm import slstm_backward_kernel, slstm_forward_kernel
from . import reference_slstm
from .reference_slstm import SLSTM_GATES, TIREX_FORGET_CLAMP, SLSTMState, check_slstm_weights

#: tl.dot needs every dimension >= 16 on a GPU: the batch tile and the head tile are padded to at least this.
MIN_DOT_BLOCK = 16
#: Batch rows per program (the grid's second axis tiles the batch).
BLOCK_N = 16


def _launch_options(a: Tensor, w_hh: Tensor, state: SLSTMState, reverse: bool, lengths: Tensor | None,
                    formulation: str) -> tuple[tuple, tuple, dict]:  # fmt: skip
    """What both kernels take: (grid, the flag / length arguments, sizes and constexprs)."""
    T, N, _ = a.shape
    K, _, d = w_hh.shape
    n0_zero = (state.n == 0).all()  # a device scalar: the kernels read it, the host never syncs on it
    has_lengths = lengths is not None
    max_len = lengths.max() if has_lengths else n0_zero  # (an unread placeholder without lengths)
    flags = (lengths if has_lengths else n0_zero, n0_zero, max_len, T, N, K * d, d)
    constexprs = dict(BLOCK_N=BLOCK_N, BLOCK_D=max(MIN_DOT_BLOCK, triton.next_power_of_2(d)), REVERSE=reverse,
                      HAS_LENGTHS=has_lengths, TIREX=formulation == "tirex", FORGET_CLAMP=TIREX_FORGET_CLAMP)
    return (K, triton.cdiv(N, BLOCK_N)), flags, constexprs


def forward(a: Tensor, w_hh: Tensor, state: SLSTMState, reverse: bool, lengths: Tensor | None, formulation: str,
            save: bool) -> tuple[Tensor, SLSTMState, Tensor | None]:  # fmt: skip
    """a [T, N, 4*H] (projection and both biases), w_hh [K, 4*d, d], state of [N, H]: all float32, contiguous.
    Returns y [T, N, H], the final state and, with `save`, the states after every step [T, 4, N, H]."""
    T, N, _ = a.shape
    H = w_hh.shape[0] * w_hh.shape[2]
    y = a.new_empty(T, N, H)
    final = SLSTMState(*(torch.empty_like(s) for s in state))
    saved = a.new_empty(T, SLSTM_GATES, N, H) if save else None
    grid, flags, constexprs = _launch_options(a, w_hh, state, reverse, lengths, formulation)
    slstm_forward_kernel[grid](a, w_hh, *state, y, *final, saved if save else y, *flags, **constexprs, SAVE=save)
    return y, final, saved


def backward(a: Tensor, w_hh: Tensor, state: SLSTMState, saved: Tensor, dy: Tensor, d_final: SLSTMState,
             reverse: bool, lengths: Tensor | None, formulation: str) -> tuple[Tensor, Tensor, SLSTMState]:  # fmt: skip
    """The backward kernel: (da [T, N, 4*H], dw_hh [K, 4*d, d], the initial state's gradients); float32."""
    grid, flags, constexprs = _launch_options(a, w_hh, state, reverse, lengths, formulation)
    da = torch.empty_like(a)
    dr_tiles = a.new_empty(grid[1], *w_hh.shape)  # one share per batch tile, summed here: no atomics
    d_initial = SLSTMState(*(torch.empty_like(s) for s in state))
    slstm_backward_kernel[grid](a, w_hh, *state, saved, dy, *d_final, da, dr_tiles, *d_initial, *flags, **constexprs)
    return da, dr_tiles.sum(0), d_initial


class _SLSTMLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, h0, c0, n0, m0, reverse, lengths, formulation):
        a = x if w_ih is None else F.linear(x, w_ih, b_ih)
        if w_ih is None and b_ih is not None:
            a = a + b_ih
        if b_hh is not None:
            a = a + b_hh
        a, w = a.contiguous(), w_hh.contiguous()
        state = SLSTMState(*(s.contiguous() for s in (h0, c0, n0, m0)))
        y, final, saved = forward(a, w, state, reverse, lengths, formulation, save=True)
        ctx.save_for_backward(x, w_ih, a, w, *state, saved)
        ctx.options = (reverse, lengths, formulation, b_ih is not None, b_hh is not None)
        return (y, *final)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, *d_final):
        x, w_ih, a, w_hh, h0, c0, n0, m0, saved = ctx.saved_tensors
        reverse, lengths, formulation, has_b_ih, has_b_hh = ctx.options
        d_final = SLSTMState(*(g.contiguous() for g in d_final))
        da, dw_hh, d_initial = backward(a, w_hh, SLSTMState(h0, c0, n0, m0), saved, dy.contiguous(), d_final,
                                        reverse, lengths, formulation)  # fmt: skip
        needs = ctx.needs_input_grad
        db = da.sum((0, 1))
        dx = (da if w_ih is None else da @ w_ih) if needs[0] else None
        dw_ih = da.flatten(0, 1).t() @ x.flatten(0, 1) if w_ih is not None and needs[1] else None
        return (dx, dw_ih, dw_hh if needs[2] else None, db if has_b_ih and needs[3] else None,
                db if has_b_hh and needs[4] else None, *(g if need else None for g, need in zip(d_initial, needs[5:9])),
                None, None, None)  # fmt: skip


def slstm_layer(x, state, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False, lengths=None, *, formulation="xlstm"):
    """fusedrnn.reference_slstm.slstm_layer's contract, float32 tensors."""
    check_slstm_weights(x, w_ih, w_hh, b_ih, b_hh)
    if x.shape[1] == 0:  # an empty batch: no program to launch, nothing to compute
        return reference_slstm.slstm_layer(x, state, w_ih, w_hh, b_ih, b_hh, reverse, lengths, formulation=formulation)
    N, H = x.shape[1], w_hh.shape[0] * w_hh.shape[2]
    if state is None:
        zeros = x.new_zeros(N, H)
        state = SLSTMState(zeros, zeros, zeros, zeros)
    y, *final = _SLSTMLayer.apply(x, w_ih, w_hh, b_ih, b_hh, *state, reverse, lengths, formulation)
    return y, SLSTMState(*final)
