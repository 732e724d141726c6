"""torch.library ops around the Triton recurrence kernels (fusedrnn.kernels), with autograd and fake shapes.

Two ops, `torch.library.triton_op`s (fake shapes come from tracing the Python body; Inductor sees the Triton kernels;
under Triton's interpreter they are opaque custom ops instead, see `_op`), with autograd registered, so torch.compile
traces forward and backward without graph breaks (the autograd, shared with the native ops, is in
fusedrnn.autograd_paths: the backward op below at first order, fusedrnn.reference.layer_vjp where the backward must
itself be differentiable: double backward, torch.func):

  fusedrnn::triton_recurrence_forward(x, h0?, c0?, w_ih, w_hh, b_ih?, b_hh?, w_hr?, lengths?, mode, reverse, save)
      -> (y [T,N,P], h_n [N,P], c_n [N,H] | [0], saved [T,N,SLOTS*H] | [0], hs [S,N,P] fp32, cs [S,N,H] fp32 | [0])
      (P: the LSTM projection size with w_hr [P, H], else H; the projection runs on the tiled kernels only)
      1 matmul (x W_ih^T + b_ih for all T steps) + 1 kernel launch for the whole sequence: the persistent kernels
      on CUDA wherever fusedrnn.kernels.plan says they fit, else the tiled ones (FUSEDRNN_TRITON_KERNEL forces
      either; FUSEDRNN_TRITON_TUNE overrides tiles and warps). Under Triton's interpreter the persistent kernels
      run one launch per step, whose boundary is their barrier (the default there is tiled).
  fusedrnn::triton_recurrence_backward(dy, dh_n, dc_n?, x, w_ih, w_hh, w_hr?, saved, hs, cs, lengths?, mode,
                                       reverse, bias)
      -> (dx, dh0, dc0 | [0], dW_ih, dW_hh, db_ih | [0], db_hh | [0], dW_hr | [0])
      1 kernel launch for the whole sequence (gate gradients, dh/dc carried; chosen as in the forward, each pass
      on its own) + 4 matmuls and 2 reductions over T*N (+ 1 for dW_hr = sum_t dh_t^T (o_t * tanh(c_t)), with
      dh_t [T, N, P] from the kernel and o, c from what the forward saved).

A persistent launch whose grid barrier timed out (its programs were not all resident) raises RuntimeError after the
launch: one host sync on a flag per launch, in `fusedrnn::triton_checked_state`, which also runs in compiled graphs
(not while a CUDA graph is captured). In eager mode the launch is cooperative, so the driver refuses a grid that
cannot be resident at once.

What the forward saves for the backward (only when autograd needs it; else S = 2 and nothing else is kept):
  hs  [T+1, N, P] fp32   every hidden state, h0 included (dW_hh = sum_t dgates_t^T h_{t-1}; GRU and RNN derivatives)
  cs  [T+1, N, H] fp32   every cell state, c0 included (LSTM only)
  saved [T, N, 4H] input dtype: LSTM i, f, g, o; GRU r, z, n, W_hn h + b_hn; nothing for the Elman RNN
plus x and the weights themselves: per step and row 16H bytes (LSTM, bf16), 24H (LSTM, fp32), 12H (GRU, bf16), 4H
(RNN). The reference (autograd through fusedrnn.reference) keeps per step at least the gate pre-activations, every
activation, c, tanh(c) and h in the input dtype, i.e. no less than this.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
import triton
from torch import Tensor
from torch._subclasses.fake_tensor import is_fake
from torch.library import custom_op, triton_op

from fusedrnn.kernels import plan as kernel_plan
from fusedrnn.kernels.backward import recurrence_backward_kernel
from fusedrnn.kernels.forward import recurrence_forward_kernel
from fusedrnn.kernels.modes import MODE_IDS, SAVED_SLOTS
from fusedrnn.kernels.persistent import persistent_backward_kernel, persistent_forward_kernel

from . import autograd_paths
from .reference import GATES

LSTM_ID = MODE_IDS["LSTM"]
GRU_ID = MODE_IDS["GRU"]
#: Grid-barrier polls before a persistent program gives up and flags an error (fusedrnn.kernels.persistent). One
#: poll is an L2 atomic round trip (~1 us on an H100), so this is seconds: far beyond any legitimate wait for the
#: slowest program of a step, short enough that a launch whose programs are not all resident fails instead of hanging.
SPIN_LIMIT = 2**22


@functools.cache
def _cuda_device(index: int) -> kernel_plan.Device:
    props = torch.cuda.get_device_properties(index)
    shared = getattr(props, "shared_memory_per_block_optin", 0) or kernel_plan.H100_SHARED_BYTES
    return kernel_plan.Device.cuda(props.multi_processor_count, shared)


def plan_for(x: Tensor, N: int, H: int, gates: int, backward: bool, projection: bool = False):
    """The kernels (fusedrnn.kernels.plan) for one pass on `x`'s device, following FUSEDRNN_TRITON_KERNEL and
    FUSEDRNN_TRITON_TUNE; raises kernel_plan.Refused where forced persistent kernels do not fit."""
    if x.device.type == "cuda":
        device = _cuda_device(x.device.index if x.device.index is not None else torch.cuda.current_device())
    else:
        device = kernel_plan.Device.interpreter_device()
    problem = kernel_plan.Problem(batch=N, hidden=H, gates=gates, element_size=x.element_size(),
                                  exact_fp32=dot_precision(x.dtype) == "ieee" and x.dtype == torch.float32,
                                  projection=projection)
    return kernel_plan.choose(problem, backward, device, kernel_plan.kernel_from_env(), kernel_plan.tuning_from_env())


def _spans(plan: kernel_plan.PersistentPlan, stages: int) -> list[tuple[int, int]]:
    """(step0, steps) of each persistent launch: the whole sequence at once on a GPU; one stage per launch under
    the interpreter, where the launch boundary is the barrier (its programs run one after another)."""
    if plan.one_step_per_launch:
        return [(stage, 1) for stage in range(stages)]
    return [(0, stages)]


def _pieces(plan: kernel_plan.PersistentPlan) -> dict:
    """The reduction pieces as the persistent kernels' K0 ... K3."""
    return {f"K{index}": width for index, width in enumerate(plan.k_pieces)}


def _check_barrier(sync: Tensor, kernel: str) -> None:
    """Raise if a persistent launch's barrier timed out. Skipped on fake tensors (shapes only) and while a CUDA graph is
    captured (reading the flag synchronises, which capture forbids): there the check is not carried, though the
    kernel still ends instead of hanging."""
    if is_fake(sync) or (sync.is_cuda and torch.cuda.is_current_stream_capturing()):
        return
    if sync[1].item():
        raise RuntimeError(
            f"fusedrnn triton: the {kernel} kernel's grid barrier timed out: not all of its programs were resident "
            f"at once (another kernel occupying SMs?), so its results are invalid. Set "
            f"{kernel_plan.KERNEL_ENV}=tiled to avoid the persistent kernels."
        )


@custom_op("fusedrnn::triton_checked_state", mutates_args=())
def checked_state(sync: Tensor, state: Tensor, dtype: torch.dtype, kernel: str) -> Tensor:
    """A copy of `state` in `dtype` (h_n of a forward, dL/dh_0 of a backward), made only once the persistent launch
    behind `sync` is known not to have timed out (`_check_barrier`). An op of its own, not a check in the ops' bodies:
    torch.compile traces those bodies, where the flag cannot be read, but records this call and runs it after the
    launch, so a compiled graph raises on a timed-out barrier too instead of returning invalid results."""
    _check_barrier(sync, kernel)
    return state.to(dtype, copy=True)


@checked_state.register_fake
def _checked_state_fake(sync: Tensor, state: Tensor, dtype: torch.dtype, kernel: str) -> Tensor:
    return state.to(dtype, copy=True)


def _cooperative(x: Tensor) -> dict:
    """The persistent kernels' launch option on a GPU in eager mode: `launch_cooperative_grid` (triton >= 3.6) makes the
    driver refuse a grid whose programs cannot all be resident at once, instead of every program spinning at the
    first barrier until SPIN_LIMIT. Not while torch.compile traces: torch's `wrap_triton` (2.11-2.14) treats only
    num_warps, num_stages and the like as launch options; there the spin bound and the flag stand alone. (Under the
    interpreter the option is dropped, as every launch option is.)"""
    eager = not torch.compiler.is_compiling() and not is_fake(x)  # fake: Inductor decomposing the triton_op
    return {"launch_cooperative_grid": True} if x.is_cuda and eager else {}


def _stages(plan: kernel_plan.TiledPlan) -> dict:
    """num_stages for a tiled launch: Triton's default unless tuned."""
    return {} if plan.stages is None else {"num_stages": plan.stages}


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision: fp32 follows torch's matmul setting (exact unless the user allowed TF32); the
    option is ignored for 16-bit inputs."""
    if dtype != torch.float32:
        return "tf32"  # Triton's default, the usual path for fp16/bf16 operands (the option only affects fp32)
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def _kernels_traceable() -> bool:
    """Capability probe: whether the installed torch's `wrap_triton` turns this Triton's kernel objects into a wrapper
    that records the launch in a traced graph, as it does for real `@triton.jit` kernels on a GPU machine. Under
    Triton's interpreter the kernels are interpreter objects, which torch either hands back bare (2.14) or rejects with
    a RuntimeError (2.11); asking torch itself, not comparing version numbers, keeps this right for any pair."""
    try:
        return torch.library.wrap_triton(recurrence_forward_kernel) is not recurrence_forward_kernel
    except RuntimeError:
        return False


#: Probed once, when the ops below are registered: it decides both how they are registered and how they launch.
KERNELS_TRACEABLE = _kernels_traceable()


def _launcher(kernel):
    """The kernel as the op bodies launch it (`wrap_triton(kernel)[grid](...)`): through `torch.library.wrap_triton`
    where that can record it (called per launch, since triton_op turns the recording off when it runs eagerly),
    else the bare kernel, which is what a torch that accepts interpreter kernels would hand back anyway."""
    return torch.library.wrap_triton(kernel) if KERNELS_TRACEABLE else kernel


#: The op bodies call `wrap_triton(...)` by that name on purpose: triton_op finds the kernels of an op (for its
#: compile-cache keys) by scanning the body's source for that call. Bound here to `_launcher`, so that the same bodies
#: also run where torch's `wrap_triton` rejects the kernel objects.
wrap_triton = _launcher


def _launchable(probe: Tensor) -> bool:
    """Whether to launch. Where the kernels cannot be traced (`KERNELS_TRACEABLE` is false) a launch would run the bare
    kernel on fake tensors while the op's shapes are traced: there the launch is skipped, since the op allocates all
    its outputs before launching."""
    return KERNELS_TRACEABLE or not is_fake(probe)


def _op(name: str):
    """Register `fn` as a torch.library op: a `triton_op` where the kernels can be traced (torch.compile sees and can
    inline them), else an opaque custom op whose fake kernel is the same body without launch (the triton_op
    decomposition that AOTAutograd performs would drop a kernel `wrap_triton` cannot record)."""

    def register(fn):
        if KERNELS_TRACEABLE:
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


def state_sequences(x: Tensor, h0: Tensor | None, c0: Tensor | None, width: int, hidden: int, is_lstm: bool,
                    save: bool, reverse: bool) -> tuple[Tensor, Tensor, int, int]:
    """The forward kernels' fp32 state buffers (hs [S, N, width], cs [S, N, hidden] for the LSTM, else empty) with
    the initial state (zeros for None) in its slot; returns them, that slot and the slot the final state ends in.
    S = T + 1 slots when saving for the backward (slot t + 1 - reverse holds the state after step t; see
    recurrence_forward_kernel), else 2 alternating slots."""
    T, N = x.shape[0], x.shape[1]
    first = T if save and reverse else 0
    last = (0 if reverse else T) if save else T % 2
    slots = T + 1 if save else 2
    hs = x.new_empty((slots, N, width), dtype=torch.float32)
    cs = x.new_empty((slots, N, hidden) if is_lstm else (0,), dtype=torch.float32)
    for buffer, initial, used in ((hs, h0, True), (cs, c0, is_lstm)):
        if used and initial is None:
            buffer[first].zero_()
        elif used:
            buffer[first].copy_(initial)
    return hs, cs, first, last


@_op("fusedrnn::triton_recurrence_forward")
def recurrence_forward(
    x: Tensor,
    h0: Tensor | None,
    c0: Tensor | None,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    w_hr: Tensor | None,
    lengths: Tensor | None,
    mode: int,
    reverse: bool,
    save: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    T, N, _ = x.shape
    gates = GATES[_mode_name(mode)]
    H = w_hh.shape[0] // gates
    P = w_hh.shape[1]  # width of h: the projection size, else H
    slots = SAVED_SLOTS[mode]
    is_lstm = mode == LSTM_ID
    gi = F.linear(x, w_ih, b_ih).contiguous()  # the input projection of all T steps: one matmul
    hs, cs, first, last = state_sequences(x, h0, c0, P, H, is_lstm, save, reverse)
    y = x.new_empty((T, N, P))
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
    plan = plan_for(x, N, H, gates, backward=False, projection=w_hr is not None)
    if plan.kernel == "tiled":
        projection = (
            w_hr.contiguous() if w_hr is not None else _placeholder(x),  # never read without PROJ
            x.new_empty((N, H), dtype=torch.float32) if w_hr is not None else _placeholder(x),  # o * tanh(c)
        )
        if _launchable(x):
            wrap_triton(recurrence_forward_kernel)[(plan.grid,)](
                *pointers, *projection, T, N, H, P, **flags, PROJ=w_hr is not None, BLOCK_N=plan.block_n,
                BLOCK_H=plan.block_h, BLOCK_K=plan.block_k, num_warps=plan.warps, **_stages(plan),
            )  # fmt: skip
    else:
        hx = x.new_empty((2, N, H))  # h in the input dtype, exchanged between the programs
        hx[0].copy_(hs[first])
        sync = x.new_zeros((2,), dtype=torch.int64)
        if _launchable(x):
            for step0, steps in _spans(plan, T):
                wrap_triton(persistent_forward_kernel)[(plan.grid,)](
                    *pointers, hx, sync, T, N, H, step0, steps, SPIN_LIMIT, **flags, GATES_P2=plan.gates_p2,
                    BLOCK_N=plan.block_n, BLOCK_H=plan.block_h, **_pieces(plan), num_warps=plan.warps,
                    num_stages=1, **_cooperative(x),
                )  # fmt: skip
        h_n = checked_state(sync, hs[last], x.dtype, "persistent forward")
    if plan.kernel == "tiled":
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
    w_hr: Tensor | None,
    saved: Tensor,
    hs: Tensor,
    cs: Tensor,
    lengths: Tensor | None,
    mode: int,
    reverse: bool,
    bias: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    T, N, I = x.shape
    gates = GATES[_mode_name(mode)]
    H = w_hh.shape[0] // gates
    P = w_hh.shape[1]
    is_lstm = mode == LSTM_ID
    dh = x.new_zeros((2, N, P), dtype=torch.float32)
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
    plan = plan_for(x, N, H, gates, backward=True, projection=w_hr is not None)
    dhp = x.new_empty((T, N, P), dtype=torch.float32) if w_hr is not None else None  # dL/dh_t, for dW_hr
    if plan.kernel == "tiled":
        projection = (w_hr.contiguous(), dhp) if w_hr is not None else (_placeholder(x), _placeholder(x))
        if _launchable(x):
            wrap_triton(recurrence_backward_kernel)[(plan.grid,)](
                *pointers, *projection, T, N, H, P, **flags, PROJ=w_hr is not None, BLOCK_N=plan.block_n,
                BLOCK_H=plan.block_h, BLOCK_K=plan.block_k, num_warps=plan.warps, **_stages(plan),
            )  # fmt: skip
        final = T % 2  # the dh slot holding dL/dh_0 (see recurrence_backward_kernel)
    else:
        sync = x.new_zeros((2,), dtype=torch.int64)
        if _launchable(x):
            for step0, steps in _spans(plan, T + 1):  # stages 0 .. T (see persistent_backward_kernel)
                wrap_triton(persistent_backward_kernel)[(plan.grid,)](
                    *pointers, sync, T, N, H, step0, steps, SPIN_LIMIT, **flags, BLOCK_N=plan.block_n,
                    BLOCK_H=plan.block_h, **_pieces(plan), num_warps=plan.warps, num_stages=1, **_cooperative(x),
                )  # fmt: skip
        final = (T + 1) % 2
    # Everything else is a few large matmuls over all T*N rows.
    dgi_rows = dgi.view(T * N, gates * H)
    dgh_rows = dgh.view(T * N, gates * H) if mode == GRU_ID else dgi_rows
    h_prev = hs[1 : T + 1] if reverse else hs[:T]  # the state before each step t, in time order
    dx = (dgi_rows @ w_ih).view(T, N, I)
    dw_ih = dgi_rows.t() @ x.reshape(T * N, I)
    dw_hh = dgh_rows.t() @ h_prev.reshape(T * N, P).to(x.dtype)
    if w_hr is not None:  # dW_hr = sum_t dL/dh_t^T (o_t * tanh(c_t)), from the saved o and c
        c_after = cs[:T] if reverse else cs[1 : T + 1]  # the cell state after each step t, in time order
        raw = saved.view(T, N, 4, H)[:, :, 3].float() * torch.tanh(c_after)
        dw_hr = (dhp.view(T * N, P).t() @ raw.view(T * N, H)).to(x.dtype)
    else:
        dw_hr = x.new_empty((0,))
    if bias:
        db_ih = dgi_rows.sum(0, dtype=torch.float32).to(x.dtype)
        db_hh = dgh_rows.sum(0, dtype=torch.float32).to(x.dtype)
    else:
        db_ih, db_hh = x.new_empty((0,)), x.new_empty((0,))  # two tensors: outputs may not alias
    # The persistent launch's flag is read last (a host sync): the GEMMs above are queued behind the kernel first.
    if plan.kernel == "tiled":
        dh0 = dh[final].to(x.dtype, copy=True)
    else:
        dh0 = checked_state(sync, dh[final], x.dtype, "persistent backward")
    dc0 = dc.to(x.dtype, copy=True) if is_lstm else x.new_empty((0,))
    return dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr


def _setup_context(ctx, inputs, output) -> None:
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, mode, reverse, save = inputs
    _, _, _, saved, hs, cs = output
    # h0, c0 and the biases are for the differentiable backward (fusedrnn.autograd_paths), which recomputes the layer;
    # being inputs, saving them costs nothing.
    ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, saved, hs, cs, lengths)
    ctx.mode, ctx.reverse, ctx.save = mode, reverse, save
    ctx.mark_non_differentiable(saved, hs, cs)


def _recompute(ctx) -> autograd_paths.Recompute:
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, _saved, _hs, _cs, lengths = ctx.saved_tensors
    return autograd_paths.Recompute(_mode_name(ctx.mode), (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr), ctx.reverse,
                                    lengths)  # fmt: skip


def _kernel_backward(ctx, grad_y, grad_hn, grad_cn, *_unused):
    x, h0, c0, w_ih, w_hh, b_ih, _b_hh, w_hr, saved, hs, cs, lengths = ctx.saved_tensors
    if not ctx.save:
        raise RuntimeError("fusedrnn triton backend: the forward ran without saving activations (autograd was off)")
    T, N, _ = x.shape
    P = w_hh.shape[1]
    if grad_y is None:
        grad_y = x.new_zeros((T, N, P))
    if grad_hn is None:
        grad_hn = x.new_zeros((N, P))
    is_lstm = ctx.mode == LSTM_ID
    has_bias = b_ih is not None
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr = recurrence_backward(
        grad_y, grad_hn, grad_cn if is_lstm else None, x, w_ih, w_hh, w_hr, saved, hs, cs, lengths,
        ctx.mode, ctx.reverse, has_bias,
    )  # fmt: skip
    return (
        dx,
        dh0 if h0 is not None else None,
        dc0 if c0 is not None else None,
        dw_ih,
        dw_hh,
        db_ih if has_bias else None,
        db_hh if has_bias else None,
        dw_hr if w_hr is not None else None,
        None,
        None,
        None,
        None,
    )


_LAYER = autograd_paths.LayerAutograd(
    "TritonLayer",
    recurrence_forward,
    _setup_context,
    _kernel_backward,
    _recompute,
    input_positions=range(8),  # the eight tensors first, then lengths, mode, reverse, save
    arity=12,
)
recurrence_forward.register_autograd(_LAYER.backward, setup_context=_setup_context)


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
    """`fusedrnn.reference.rnn_layer`'s contract on the Triton kernels (w_hr: the LSTM projection, tiled only)."""
    mode_id = MODE_IDS[mode]
    tensors = (x, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    y, h_n, c_n, *_ = _LAYER.apply(
        x, hx, cx if mode == "LSTM" else None, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, mode_id, reverse, save,
        differentiable=save,
    )
    return y, h_n, (c_n if mode == "LSTM" else None)
