"""xLSTM's sLSTM on Triton (issue #21): the forward kernel (fusedrnn.kernels.slstm) with autograd.

Forward: the host computes the input projection of all steps in float32, one launch runs the recurrence. Backward:
no kernel yet; it recomputes the layer with the plain-PyTorch oracle (fusedrnn.reference_slstm) and takes its
vector-Jacobian product, so gradients are the oracle's (and as slow). Double backward is refused
(once_differentiable). Float32 only. Not yet a torch.library op, so the backend refuses torch.compile for it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
from torch import Tensor
from torch.autograd.function import once_differentiable

from .kernels.slstm import slstm_forward_kernel
from .reference_slstm import TIREX_FORGET_CLAMP, SLSTMState, check_slstm_weights
from .reference_slstm import slstm_layer as reference_slstm_layer

#: tl.dot needs every dimension >= 16 on a GPU: the batch tile and the head tile are padded to at least this.
MIN_DOT_BLOCK = 16
#: Batch rows per program (the grid's second axis tiles the batch).
BLOCK_N = 16


def forward(a: Tensor, w_hh: Tensor, state: SLSTMState, reverse: bool, lengths: Tensor | None,
            formulation: str) -> tuple[Tensor, SLSTMState]:  # fmt: skip
    """a [T, N, 4*H] (projection and both biases), w_hh [K, 4*d, d], state of [N, H]: all float32, contiguous."""
    T, N, _ = a.shape
    K, _, d = w_hh.shape
    H = K * d
    y = a.new_empty(T, N, H)
    final = SLSTMState(*(torch.empty_like(s) for s in state))
    n0_zero = (state.n == 0).all()  # a device scalar: the kernel reads it, the host never syncs on it
    has_lengths = lengths is not None
    max_len = lengths.max() if has_lengths else n0_zero  # (an unread placeholder without lengths)
    grid = (K, triton.cdiv(N, BLOCK_N))
    slstm_forward_kernel[grid](
        a, w_hh, *state, y, *final, lengths if has_lengths else n0_zero, n0_zero, max_len, T, N, H, d,
        BLOCK_N=BLOCK_N, BLOCK_D=max(MIN_DOT_BLOCK, triton.next_power_of_2(d)), REVERSE=reverse,
        HAS_LENGTHS=has_lengths, TIREX=formulation == "tirex", FORGET_CLAMP=TIREX_FORGET_CLAMP,
    )  # fmt: skip
    return y, final


class _SLSTMLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, h0, c0, n0, m0, reverse, lengths, formulation):
        ctx.save_for_backward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, n0, m0)
        ctx.options = (reverse, lengths, formulation)
        a = x if w_ih is None else F.linear(x, w_ih, b_ih)
        if w_ih is None and b_ih is not None:
            a = a + b_ih
        if b_hh is not None:
            a = a + b_hh
        state = SLSTMState(*(s.contiguous() for s in (h0, c0, n0, m0)))
        y, final = forward(a.contiguous(), w_hh.contiguous(), state, reverse, lengths, formulation)
        return (y, *final)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        inputs = ctx.saved_tensors
        reverse, lengths, formulation = ctx.options
        wanted = [i for i, t in enumerate(inputs) if t is not None and ctx.needs_input_grad[i]]
        result: list[Tensor | None] = [None] * len(inputs)
        if wanted:

            def layer(*values):
                full = list(inputs)
                for index, value in zip(wanted, values):
                    full[index] = value
                x, w_ih, w_hh, b_ih, b_hh, *state = full
                y, final = reference_slstm_layer(x, SLSTMState(*state), w_ih, w_hh, b_ih, b_hh, reverse, lengths,
                                                 formulation=formulation)  # fmt: skip
                return (y, *final)

            with torch.enable_grad():
                _, pullback = torch.func.vjp(layer, *(inputs[i] for i in wanted))
                for index, value in zip(wanted, pullback(tuple(grads))):
                    result[index] = value
        return (*result, None, None, None)


def slstm_layer(x, state, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False, lengths=None, *, formulation="xlstm"):
    """fusedrnn.reference_slstm.slstm_layer's contract, float32 tensors."""
    check_slstm_weights(x, w_ih, w_hh, b_ih, b_hh)
    N, H = x.shape[1], w_hh.shape[0] * w_hh.shape[2]
    if state is None:
        zeros = x.new_zeros(N, H)
        state = SLSTMState(zeros, zeros, zeros, zeros)
    y, *final = _SLSTMLayer.apply(x, w_ih, w_hh, b_ih, b_hh, *state, reverse, lengths, formulation)
    return y, SLSTMState(*final)
