"""torch.library ops around the Triton recurrence kernels (fusedrnn.kernels), with autograd and fake shapes.

Two ops, `torch.library.triton_op`s (fake shapes come from tracing the Python body; Inductor sees the Triton kernels;
under Triton's interpreter they are opaque custom ops instead, see `_op`), with autograd registered, so torch.compile
traces forward and backward without graph breaks:

  fusedrnn::triton_recurrence_forward(x, h0?, c0?, w_ih, w_hh, b_ih?, b_hh?, lengths?, mode, reverse, save)
      -> (y [T,N,H], h_n [N,H], c_n [N,H] | [0], saved [T,N,SLOTS*H] | [0], hs [S,N,H] fp32, cs [S,N,H] fp32 | [0])
      1 matmul (x W_ih^T + b_ih for all T steps) + 1 kernel launch for the whole sequence (tiled kernels, or the
      persistent ones where FUSEDRNN_TRITON_KERNEL=persistent and the call fits; see fusedrnn.kernels).
  fusedrnn::triton_recurrence_backward(dy, dh_n, dc_n?, x, w_ih, w_hh, saved, hs, cs, lengths?, mode, reverse, bias)
      -> (dx, dh0, dc0 | [0], dW_ih, dW_hh, db_ih | [0], db_hh | [0])
      1 kernel launch for the whole sequence (gate gradients, dh/dc carried) + 4 matmuls and 2 reductions over T*N.

What the forward saves for the backward (only when autograd needs it; else S = 2 and nothing else is kept):
  hs  [T+1, N, H] fp32   every hidden state, h0 included (dW_hh = sum_t dgates_t^T h_{t-1}; GRU and RNN derivatives)
  cs  [T+1, N, H] fp32   every cell state, c0 included (LSTM only)
  saved [T, N, 4H] input dtype: LSTM i, f, g, o; GRU r, z, n, W_hn h + b_hn; nothing for the Elman RNN
plus x and the weights themselves: per step and row 16H bytes (LSTM, bf16), 24H (LSTM, fp32), 12H (GRU, bf16), 4H
(RNN). The reference (autograd through fusedrnn.reference) keeps per step at least the gate pre-activations, every
activation, c, tanh(c) and h in the input dtype, i.e. no less than this.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.nn.functional as F
import triton
from torch import Tensor
from torch._subclasses.fake_tensor import is_fake
from torch.library import custom_op, triton_op, wrap_triton

from fusedrnn.kernels.backward import recurrence_backward_kernel
from fusedrnn.kernels.forward import recurrence_forward_kernel
from fusedrnn.kernels.modes import MODE_IDS, SAVED_SLOTS
from fusedrnn.kernels.persistent import persistent_backward_kernel, persistent_forward_kernel

from .backends.triton import interpreter_enabled
from .reference import GATES

#: tl.dot needs every dimension >= 16 when compiled for a GPU (the interpreter would accept less): the batch tile is
#: exactly that, and hidden / reduction tiles are padded up to it and masked.
MIN_DOT = 16
#: Largest hidden / reduction tiles of the tiled kernels: 4 gate accumulators of [16, 64] fp32 plus 4 weight tiles of
#: [32, 64] per reduction step; with a 64-deep reduction tile ptxas spilled at 4 warps (compile_check --ptxas).
MAX_TILE_H = 64
MAX_TILE_K = 32
LSTM_ID = MODE_IDS["LSTM"]
GRU_ID = MODE_IDS["GRU"]


#: Chooses the recurrence kernels: "tiled" (default; fusedrnn.kernels.forward/backward, verified under the
#: interpreter) or "persistent" (fusedrnn.kernels.persistent, where the call fits; GPU only, not yet run on one).
KERNEL_ENV = "FUSEDRNN_TRITON_KERNEL"
#: Persistent limits: every program covers all batch rows in one tile (an [N, 4*BH] fp32 accumulator and an [N, H]
#: operand per step), and holds its W_hh slice ([H, 4*BH] forward, 4 x [H, BH] backward) on chip for the sequence.
MAX_PERSISTENT_BATCH = 64
MAX_PERSISTENT_HIDDEN = 1024
#: A program's W_hh slice is a dot operand, so it lives in shared memory (228 KB per H100 SM); ptxas/Triton measured
#: 160 KB for a 128 KB slice (bf16, H=768, backward) and 320 KB for 256 KB (fp32), which cannot launch.
MAX_W_SLICE_BYTES = 128 * 1024
#: Shared memory one program may use on an H100/H200 (227 KB per block, opted in); Triton refuses to launch beyond.
MAX_SHARED_BYTES = 227 * 1024
#: Besides the W_hh slice, the compiled persistent kernels stage their per-step [BLOCK_N, BLOCK_K] dot operand in
#: shared memory: the forward's h_{t-1} in fp32 (it is loaded as the fp32 state), the backward's dgates in the input
#: dtype. Measured with compile_check (sm_90, bf16): N=64, H=1024 needs 320 KB forward and 260 KB backward.
FORWARD_OPERAND_BYTES = 4
#: 8 warps for the tiled kernels too: at 4, ptxas spilled the 4-gate specialisations (compile_check --ptxas).
TILED_WARPS = 8
#: 8 warps: 256 threads share the on-chip W_hh slice (about 128 registers each at H=1024, bf16, backward).
PERSISTENT_WARPS = 8


@dataclasses.dataclass(frozen=True)
class PersistentPlan:
    block_n: int
    block_k: int
    block_h_forward: int
    block_h_backward: int
    gates_p2: int


def persistent_plan(x: Tensor, N: int, H: int, gates: int) -> PersistentPlan | None:
    """The persistent kernels' tiling for this call, or None for the tiled kernels (not requested, or it does not
    fit). Every program must be resident at once (they wait for each other each step): at most one per SM on a GPU;
    under the interpreter, which runs programs one after another, only a single program."""
    if os.environ.get(KERNEL_ENV, "tiled") != "persistent":
        return None
    resident = torch.cuda.get_device_properties(x.device).multi_processor_count if x.device.type == "cuda" else 1
    return persistent_tiles(N, H, gates, resident, x.element_size())


def persistent_tiles(N: int, H: int, gates: int, resident: int, element_size: int) -> PersistentPlan | None:
    """Tiles for at most `resident` programs, or None where the persistent kernels do not fit."""
    if N > MAX_PERSISTENT_BATCH or H > MAX_PERSISTENT_HIDDEN:
        return None
    gates_p2 = 1 if gates == 1 else 4
    per_program = triton.next_power_of_2(triton.cdiv(H, resident))
    plan = PersistentPlan(
        block_n=max(MIN_DOT, triton.next_power_of_2(N)),
        block_k=max(MIN_DOT, triton.next_power_of_2(H)),
        block_h_forward=max(MIN_DOT // gates_p2, per_program),  # the forward's dot is [N, H] @ [H, gates_p2 * BH]
        block_h_backward=max(MIN_DOT, per_program),  # the backward's dots are [N, H] @ [H, BH]
        gates_p2=gates_p2,
    )
    if max(triton.cdiv(H, plan.block_h_forward), triton.cdiv(H, plan.block_h_backward)) > resident:
        return None
    slice_elements = plan.block_k * gates_p2 * max(plan.block_h_forward, plan.block_h_backward)
    if slice_elements * element_size > MAX_W_SLICE_BYTES:
        return None
    operand = plan.block_n * plan.block_k
    forward_bytes = plan.block_k * gates_p2 * plan.block_h_forward * element_size + operand * FORWARD_OPERAND_BYTES
    backward_bytes = (plan.block_k * gates_p2 * plan.block_h_backward + operand) * element_size
    if max(forward_bytes, backward_bytes) > MAX_SHARED_BYTES:
        return None
    return plan


def _tiles(hidden: int) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_H, BLOCK_K) of the tiled kernels. Fixed, not fitted to the hidden size: each distinct value
    is one more compiled kernel per cell and dtype, and JIT time on a GPU machine is dearer than the padding of
    hidden sizes below 64 (whose steps are tiny anyway)."""
    return MIN_DOT, MAX_TILE_H, MAX_TILE_K


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision: fp32 follows torch's matmul setting (exact unless the user allowed TF32); the
    option is ignored for 16-bit inputs."""
    if dtype != torch.float32:
        return "tf32"  # Triton's default, the usual path for fp16/bf16 operands (the option only affects fp32)
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def _launchable(probe: Tensor) -> bool:
    """Whether to launch (through `wrap_triton`, which records the kernel when torch.compile traces the op). Under
    Triton's interpreter `wrap_triton` hands back the bare kernel, which would run on fake tensors while the op's
    shapes are traced: there the launch is skipped, since the op allocates all its outputs before launching.
    (Kernels are named in `wrap_triton(...)` calls in the op bodies themselves, where torch.library finds them for
    its compile-cache keys.)"""
    return not (is_fake(probe) and interpreter_enabled())


def _op(name: str):
    """Register `fn` as a torch.library op: a `triton_op` (torch.compile sees and can inline the kernels), except under
    Triton's interpreter, where `wrap_triton` cannot record a kernel, so the triton_op decomposition that AOTAutograd
    performs would drop it; there the op is an opaque custom op whose fake kernel is the same body without launch."""

    def register(fn):
        if not interpreter_enabled():
            return triton_op(name, fn, mutates_args=())
        op = custom_op(name, fn, mutates_args=())
        op.register_fake(fn)
        return op

    return register


def _placeholder(like: Tensor) -> Tensor:
    """A distinct tensor for a pointer argument the kernel never touches in this specialisation (passing another
    argument instead would alias two kernel arguments, which torch.compile's functionalisation must not see)."""
    return like.new_empty((1,))


def _mode_name(mode: int) -> str:
    return next(name for name, value in MODE_IDS.items() if value == mode)


@_op("fusedrnn::triton_recurrence_forward")
def recurrence_forward(
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
    H = w_hh.shape[1]
    gates = GATES[_mode_name(mode)]
    slots = SAVED_SLOTS[mode]
    is_lstm = mode == LSTM_ID
    gi = F.linear(x, w_ih, b_ih).contiguous()  # the input projection of all T steps: one matmul
    states = T + 1 if save else 2
    first = T if save and reverse else 0  # the slot holding the initial state (see recurrence_forward_kernel)
    last = (0 if reverse else T) if save else T % 2  # the slot holding the final state
    hs = x.new_empty((states, N, H), dtype=torch.float32)
    if h0 is None:
        hs[first].zero_()
    else:
        hs[first].copy_(h0)
    cs = x.new_empty((states, N, H) if is_lstm else (0,), dtype=torch.float32)
    if is_lstm:
        if c0 is None:
            cs[first].zero_()
        else:
            cs[first].copy_(c0)
    y = x.new_empty((T, N, H))
    saved = x.new_empty((T, N, slots * H) if save and slots else (0,))
    pointers = (
        gi,
        w_hh.contiguous(),
        b_hh.contiguous() if b_hh is not None else _placeholder(x),  # never read without HAS_BIAS
        lengths.contiguous() if lengths is not None else _placeholder(x),  # never read without HAS_LENGTHS
        hs,
        cs if is_lstm else _placeholder(x),  # never touched unless LSTM
        y,
        saved if save and slots else _placeholder(x),  # never touched unless SAVE and SLOTS
    )
    flags = dict(MODE=mode, GATES=gates, reverse=int(reverse), HAS_BIAS=b_hh is not None,
                 HAS_LENGTHS=lengths is not None, SAVE=save, SLOTS=slots, PRECISION=dot_precision(x.dtype))  # fmt: skip
    plan = persistent_plan(x, N, H, gates)
    if plan is None:
        block_n, block_h, block_k = _tiles(H)
        grid = (triton.cdiv(N, block_n),)
        if _launchable(x):
            wrap_triton(recurrence_forward_kernel)[grid](
                *pointers, T, N, H, **flags, BLOCK_N=block_n, BLOCK_H=block_h, BLOCK_K=block_k,
                num_warps=TILED_WARPS,
            )  # fmt: skip
    else:
        sync = x.new_zeros((1,), dtype=torch.int32)
        grid = (triton.cdiv(H, plan.block_h_forward),)
        if _launchable(x):
            wrap_triton(persistent_forward_kernel)[grid](
                *pointers, sync, T, N, H, **flags, GATES_P2=plan.gates_p2, BLOCK_N=plan.block_n,
                BLOCK_H=plan.block_h_forward, BLOCK_K=plan.block_k, num_warps=PERSISTENT_WARPS,
            )  # fmt: skip
    h_n = hs[last].to(x.dtype, copy=True)
    c_n = cs[last].to(x.dtype, copy=True) if is_lstm else x.new_empty((0,))
    return y, h_n, c_n, saved, hs, cs


@_op("fusedrnn::triton_recurrence_backward")
def recurrence_backward(
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
    H = w_hh.shape[1]
    gates = GATES[_mode_name(mode)]
    is_lstm = mode == LSTM_ID
    dh = x.new_zeros((2, N, H), dtype=torch.float32)
    dh[0].copy_(grad_hn)
    if is_lstm:
        # Row-major, whatever the strides of the upstream gradient (`.to(copy=True)` would keep a transposed layout).
        dc = x.new_zeros((N, H), dtype=torch.float32)
        if grad_cn is not None:
            dc.copy_(grad_cn)
    else:
        dc = _placeholder(x)  # never touched
    dgi = x.new_empty((T, N, gates * H))
    dgh = x.new_empty((T, N, gates * H)) if mode == GRU_ID else _placeholder(x)  # phase B reads dgi then
    pointers = (
        grad_y.contiguous(),
        saved if saved.numel() else _placeholder(x),
        hs,
        cs if is_lstm else _placeholder(x),
        w_hh.contiguous(),
        lengths.contiguous() if lengths is not None else _placeholder(x),
        dh,
        dc,
        dgi,
        dgh,
    )
    flags = dict(MODE=mode, GATES=gates, reverse=int(reverse), HAS_LENGTHS=lengths is not None,
                 SLOTS=SAVED_SLOTS[mode], PRECISION=dot_precision(x.dtype))  # fmt: skip
    plan = persistent_plan(x, N, H, gates)
    if plan is None:
        block_n, block_h, block_k = _tiles(H)
        grid = (triton.cdiv(N, block_n),)
        if _launchable(x):
            wrap_triton(recurrence_backward_kernel)[grid](
                *pointers, T, N, H, **flags, BLOCK_N=block_n, BLOCK_H=block_h, BLOCK_K=block_k,
                num_warps=TILED_WARPS,
            )  # fmt: skip
    else:
        sync = x.new_zeros((1,), dtype=torch.int32)
        grid = (triton.cdiv(H, plan.block_h_backward),)
        if _launchable(x):
            wrap_triton(persistent_backward_kernel)[grid](
                *pointers, sync, T, N, H, **flags, BLOCK_N=plan.block_n, BLOCK_H=plan.block_h_backward,
                BLOCK_K=plan.block_k, num_warps=PERSISTENT_WARPS,
            )  # fmt: skip
    # Everything else is a few large matmuls over all T*N rows.
    dgi_rows = dgi.view(T * N, gates * H)
    dgh_rows = dgh.view(T * N, gates * H) if mode == GRU_ID else dgi_rows
    h_prev = hs[1 : T + 1] if reverse else hs[:T]  # the state before each step t, in time order
    dx = (dgi_rows @ w_ih).view(T, N, I)
    dw_ih = dgi_rows.t() @ x.reshape(T * N, I)
    dw_hh = dgh_rows.t() @ h_prev.reshape(T * N, H).to(x.dtype)
    if bias:
        db_ih = dgi_rows.sum(0, dtype=torch.float32).to(x.dtype)
        db_hh = dgh_rows.sum(0, dtype=torch.float32).to(x.dtype)
    else:
        db_ih, db_hh = x.new_empty((0,)), x.new_empty((0,))  # two tensors: outputs may not alias
    dh0 = dh[T % 2].to(x.dtype, copy=True)
    dc0 = dc.to(x.dtype, copy=True) if is_lstm else x.new_empty((0,))
    return dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh


def _setup_context(ctx, inputs, output) -> None:
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, mode, reverse, save = inputs
    _, _, _, saved, hs, cs = output
    ctx.save_for_backward(x, w_ih, w_hh, saved, hs, cs, lengths)
    ctx.mode, ctx.reverse, ctx.save = mode, reverse, save
    ctx.has_h0, ctx.has_c0, ctx.has_bias = h0 is not None, c0 is not None, b_ih is not None
    ctx.mark_non_differentiable(saved, hs, cs)


def _backward(ctx, grad_y, grad_hn, grad_cn, *_unused):
    x, w_ih, w_hh, saved, hs, cs, lengths = ctx.saved_tensors
    if not ctx.save:
        raise RuntimeError("fusedrnn triton backend: the forward ran without saving activations (autograd was off)")
    T, N, _ = x.shape
    H = w_hh.shape[1]
    if grad_y is None:
        grad_y = x.new_zeros((T, N, H))
    if grad_hn is None:
        grad_hn = x.new_zeros((N, H))
    is_lstm = ctx.mode == LSTM_ID
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh = recurrence_backward(
        grad_y, grad_hn, grad_cn if is_lstm else None, x, w_ih, w_hh, saved, hs, cs, lengths,
        ctx.mode, ctx.reverse, ctx.has_bias,
    )  # fmt: skip
    return (
        dx,
        dh0 if ctx.has_h0 else None,
        dc0 if ctx.has_c0 else None,
        dw_ih,
        dw_hh,
        db_ih if ctx.has_bias else None,
        db_hh if ctx.has_bias else None,
        None,
        None,
        None,
        None,
    )


recurrence_forward.register_autograd(_backward, setup_context=_setup_context)


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
    """`fusedrnn.reference.rnn_layer`'s contract (without projection) on the Triton kernels."""
    mode_id = MODE_IDS[mode]
    tensors = (x, hx, cx, w_ih, w_hh, b_ih, b_hh)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    y, h_n, c_n, *_ = recurrence_forward(
        x, hx, cx if mode == "LSTM" else None, w_ih, w_hh, b_ih, b_hh, lengths, mode_id, reverse, save
    )
    return y, h_n, (c_n if mode == "LSTM" else None)
