"""torch.library ops around issue #15's variant kernels (fusedrnn.kernels.variants): LayerNorm-LSTM / GRU, IndRNN and
zoneout (of those and of the plain LSTM / GRU / Elman RNN), with the autograd shared with the other layer ops
(fusedrnn.autograd_paths). Registered like fusedrnn.triton_ops' (whose launch helpers they use).

  fusedrnn::triton_variant_forward(x, h0?, c0?, w_ih, w_hh, b_ih?, b_hh?, w_hr?, ln_ih?, ln_hh?, ln_c_weight?,
                                   ln_c_bias?, zoneout_h?, zoneout_c?, lengths?, mode, reverse, save)
      -> (y, h_n, c_n | [0], saved, hs, cs, xhat, cn, rstd)   (the tensors in fusedrnn.reference.LAYER_INPUTS order;
      w_hr is always None: the variants have no projection)
      1 matmul x W_ih^T over all T*N rows (+ its layer norm and b_ih: per (t, n) row, no recurrence, so done here in
      torch over all rows at once) + 1 kernel launch for the whole sequence (plan.plan_variant: rowwise, chunked
      (fusedrnn.kernels.variants_chunked: layer norm above plan.MAX_NORM_HIDDEN, with an fp32 workspace
      [N, plan.workspace_columns]), tiled or elementwise).
  fusedrnn::triton_variant_backward(...) -> gradients of x, h0, c0, w_ih, w_hh, b_ih, b_hh, ln_ih, ln_hh,
      ln_c_weight, ln_c_bias
      1 kernel launch (gate gradients and, with layer norm, the gradient through both per-step norms) + matmuls and
      reductions over T*N: dx, dW_ih, dW_hh (IndRNN: du = sum dgates * h_{t-1}), the biases and the LN gains (the
      input-side LN backward is done here, from the recomputed x W_ih^T).

Saved for the backward (SAVE), beyond the plain ops' hs, cs, saved (IndRNN, Elman RNN: h~, which zoneout makes
differ from h):
xhat [T, N, G*H] fp32 and rstd [T, N, 2] fp32 (layer norm: the normalised recurrent pre-activations and both 1/std),
cn [T, N, H] fp32 (LSTM: c~ before zoneout, or its normalised value with layer norm).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fusedrnn.kernels import plan as kernel_plan
from fusedrnn.kernels.modes import MODE_IDS, SAVED_SLOTS
from fusedrnn.kernels.variants import variant_backward_kernel, variant_forward_kernel
from fusedrnn.kernels.variants_chunked import chunked_norm_backward_kernel, chunked_norm_forward_kernel

from . import autograd_paths
from .reference import ELEMENTWISE_RECURRENCE, EPS, GATES, LayerNormWeights, ZoneoutMasks, layer_inputs
from .triton_ops import _launchable, _op, _placeholder, _stages, dot_precision, state_sequences, wrap_triton

LSTM_ID = MODE_IDS["LSTM"]
GRU_ID = MODE_IDS["GRU"]
ELEMENTWISE_IDS = tuple(MODE_IDS[name] for name in ELEMENTWISE_RECURRENCE)


def _slots(mode: int) -> int:
    """Saved activations per row, in units of H: the plain kernels' (SAVED_SLOTS), except that the Elman RNN saves
    h~ here, since zoneout makes its state differ from h~."""
    return max(SAVED_SLOTS[mode], 1)


def _mode_name(mode: int) -> str:
    return next(name for name, value in MODE_IDS.items() if value == mode)


def variant_plan(x: Tensor, N: int, H: int, gates: int, layer_norm: bool, elementwise: bool) -> kernel_plan.VariantPlan:
    problem = kernel_plan.Problem(batch=N, hidden=H, gates=gates, element_size=x.element_size())
    return kernel_plan.plan_variant(problem, layer_norm, elementwise, kernel_plan.kernel_from_env(),
                                    kernel_plan.tuning_from_env())  # fmt: skip


def _normalised(v: Tensor) -> tuple[Tensor, Tensor]:
    """(v - mean) * rstd and rstd [..., 1] over the last dimension, in fp32 (reference.layer_norm without gains)."""
    v = v.float()
    centred = v - v.mean(-1, keepdim=True)
    rstd = torch.rsqrt(centred.square().mean(-1, keepdim=True) + EPS)
    return centred * rstd, rstd


def _input_side(x: Tensor, w_ih: Tensor, b_ih: Tensor | None, ln_ih: Tensor | None) -> Tensor:
    """gi [T, N, G*H]: x W_ih^T, layer-normalised with gain ln_ih if given, plus b_ih."""
    if ln_ih is None:
        return F.linear(x, w_ih, b_ih).contiguous()
    xhat, _ = _normalised(F.linear(x, w_ih))
    gi = xhat * ln_ih.float()
    return (gi if b_ih is None else gi + b_ih.float()).to(x.dtype).contiguous()


def _empty(x: Tensor) -> Tensor:
    """A distinct empty output for an absent one (outputs may not alias)."""
    return x.new_empty((0,))


@_op("fusedrnn::triton_variant_forward")
def variant_forward(
    x: Tensor,
    h0: Tensor | None,
    c0: Tensor | None,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    w_hr: Tensor | None,
    ln_ih: Tensor | None,
    ln_hh: Tensor | None,
    ln_c_weight: Tensor | None,
    ln_c_bias: Tensor | None,
    zoneout_h: Tensor | None,
    zoneout_c: Tensor | None,
    lengths: Tensor | None,
    mode: int,
    reverse: bool,
    save: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    T, N, _ = x.shape
    gates = GATES[_mode_name(mode)]
    H = w_hh.shape[0] // gates
    slots = _slots(mode)
    is_lstm = mode == LSTM_ID
    norm = ln_ih is not None
    elementwise = mode in ELEMENTWISE_IDS
    gi = _input_side(x, w_ih, b_ih, ln_ih)
    hs, cs, _, last = state_sequences(x, h0, c0, H, H, is_lstm, save, reverse)
    y = x.new_empty((T, N, H))
    saved = x.new_empty((T, N, slots * H) if save else (0,))
    xhat = x.new_empty((T, N, gates * H) if save and norm else (0,), dtype=torch.float32)
    rstd = x.new_empty((T, N, 2) if save and norm else (0,), dtype=torch.float32)
    cn = x.new_empty((T, N, H) if save and is_lstm else (0,), dtype=torch.float32)

    def given(t: Tensor | None, used: bool = True) -> Tensor:
        return t.contiguous() if t is not None and used else _placeholder(x)

    plan = variant_plan(x, N, H, gates, norm, elementwise)
    if _launchable(x) and plan.kernel == "chunked":
        workspace = x.new_empty((N, plan.workspace_columns), dtype=torch.float32)
        wrap_triton(chunked_norm_forward_kernel)[plan.grid](
            gi, w_hh.contiguous(), given(b_hh), ln_hh.contiguous(), given(ln_c_weight), given(ln_c_bias),
            given(zoneout_h), given(zoneout_c), given(lengths), hs, given(cs, is_lstm), y, given(saved, save),
            given(xhat, save), given(cn, save and is_lstm), given(rstd, save), workspace, plan.workspace_columns,
            T, N, H, MODE=mode, GATES=gates, reverse=int(reverse), HAS_BIAS=b_hh is not None,
            HAS_LENGTHS=lengths is not None, SAVE=save, SLOTS=slots, ZONEOUT_H=zoneout_h is not None,
            ZONEOUT_C=zoneout_c is not None, BLOCK_N=plan.block_n, BLOCK_H=plan.block_h, BLOCK_K=plan.block_k,
            PRECISION=dot_precision(x.dtype), num_warps=plan.warps, **_stages(plan),
        )  # fmt: skip
    elif _launchable(x):
        wrap_triton(variant_forward_kernel)[plan.grid](
            gi, w_hh.contiguous(), given(b_hh), given(ln_hh), given(ln_c_weight), given(ln_c_bias),
            given(zoneout_h), given(zoneout_c), given(lengths), hs, given(cs, is_lstm), y, given(saved, save),
            given(xhat, save and norm), given(cn, save and is_lstm), given(rstd, save and norm), T, N, H,
            MODE=mode, GATES=gates, reverse=int(reverse), HAS_BIAS=b_hh is not None,
            HAS_LENGTHS=lengths is not None, SAVE=save, SLOTS=slots, NORM=norm, ZONEOUT_H=zoneout_h is not None,
            ZONEOUT_C=zoneout_c is not None, ELEMENTWISE=elementwise, BLOCK_N=plan.block_n, BLOCK_H=plan.block_h,
            BLOCK_K=plan.block_k, PRECISION=dot_precision(x.dtype), num_warps=plan.warps, **_stages(plan),
        )  # fmt: skip
    h_n = hs[last].to(x.dtype, copy=True)
    c_n = cs[last].to(x.dtype, copy=True) if is_lstm else _empty(x)
    return y, h_n, c_n, saved, hs, cs, xhat, cn, rstd


@_op("fusedrnn::triton_variant_backward")
def variant_backward(
    grad_y: Tensor,
    grad_hn: Tensor,
    grad_cn: Tensor | None,
    x: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    ln_ih: Tensor | None,
    ln_hh: Tensor | None,
    ln_c_weight: Tensor | None,
    ln_c_bias: Tensor | None,
    zoneout_h: Tensor | None,
    zoneout_c: Tensor | None,
    saved: Tensor,
    hs: Tensor,
    cs: Tensor,
    xhat: Tensor,
    cn: Tensor,
    rstd: Tensor,
    lengths: Tensor | None,
    mode: int,
    reverse: bool,
    bias: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    T, N, I = x.shape
    gates = GATES[_mode_name(mode)]
    H = w_hh.shape[0] // gates
    GH = gates * H
    is_lstm, is_gru = mode == LSTM_ID, mode == GRU_ID
    norm = ln_ih is not None
    elementwise = mode in ELEMENTWISE_IDS
    dh = x.new_zeros((2, N, H), dtype=torch.float32)
    dh[0].copy_(grad_hn)
    dc = x.new_zeros((N, H) if is_lstm else (1,), dtype=torch.float32)
    if is_lstm and grad_cn is not None:
        dc.copy_(grad_cn)
    dgi = x.new_empty((T, N, GH))
    dgh = x.new_empty((T, N, GH)) if is_gru else _placeholder(x)
    draw = x.new_empty((T, N, GH)) if norm else _placeholder(x)
    dcn = x.new_empty((T, N, H), dtype=torch.float32) if norm and is_lstm else _placeholder(x)

    def given(t: Tensor | None) -> Tensor:
        return t.contiguous() if t is not None and t.numel() else _placeholder(x)

    plan = variant_plan(x, N, H, gates, norm, elementwise)
    if _launchable(x) and plan.kernel == "chunked":
        workspace = x.new_empty((N, plan.workspace_columns), dtype=torch.float32)
        wrap_triton(chunked_norm_backward_kernel)[plan.grid](
            grad_y.contiguous(), saved, hs, given(cs), xhat, given(cn), rstd, w_hh.contiguous(), ln_hh.contiguous(),
            given(ln_c_weight), given(ln_c_bias), given(zoneout_h), given(zoneout_c), given(lengths), dh, dc, dgi,
            dgh, draw, dcn, workspace, plan.workspace_columns, T, N, H,
            MODE=mode, GATES=gates, reverse=int(reverse), HAS_BIAS=bias, HAS_LENGTHS=lengths is not None,
            SLOTS=_slots(mode), ZONEOUT_H=zoneout_h is not None, ZONEOUT_C=zoneout_c is not None,
            BLOCK_N=plan.block_n, BLOCK_H=plan.block_h, BLOCK_K=plan.block_k, PRECISION=dot_precision(x.dtype),
            num_warps=plan.warps, **_stages(plan),
        )  # fmt: skip
    elif _launchable(x):
        wrap_triton(variant_backward_kernel)[plan.grid](
            grad_y.contiguous(), saved, hs, given(cs), given(xhat), given(cn), given(rstd), w_hh.contiguous(),
            given(ln_hh), given(ln_c_weight), given(ln_c_bias), given(zoneout_h), given(zoneout_c), given(lengths),
            dh, dc, dgi, dgh, draw, dcn, T, N, H,
            MODE=mode, GATES=gates, reverse=int(reverse), HAS_BIAS=bias, HAS_LENGTHS=lengths is not None,
            SLOTS=_slots(mode), NORM=norm, ZONEOUT_H=zoneout_h is not None, ZONEOUT_C=zoneout_c is not None,
            ELEMENTWISE=elementwise, BLOCK_N=plan.block_n, BLOCK_H=plan.block_h, BLOCK_K=plan.block_k,
            PRECISION=dot_precision(x.dtype), num_warps=plan.warps, **_stages(plan),
        )  # fmt: skip
    rows = T * N
    dgi_rows = dgi.view(rows, GH)
    dgh_rows = dgh.view(rows, GH) if is_gru else dgi_rows  # gradient of gh = LN(h W_hh^T) + b_hh
    h_prev = (hs[1 : T + 1] if reverse else hs[:T]).reshape(rows, H)  # the state before each step, in time order

    def total(v: Tensor) -> Tensor:
        return v.sum(0, dtype=torch.float32).to(x.dtype)

    # Input side: back through LN(x W_ih^T; g_ih), recomputed (one matmul) rather than saved.
    if norm:
        xhat_in, rstd_in = _normalised(F.linear(x, w_ih).view(rows, GH))
        g = dgi_rows.float() * ln_ih.float()
        d_raw_in = rstd_in * (g - g.mean(-1, keepdim=True) - xhat_in * (g * xhat_in).mean(-1, keepdim=True))
        d_raw_in = d_raw_in.to(x.dtype)
        dln_ih = total(dgi_rows * xhat_in)
        dln_hh = total(dgh_rows * xhat.view(rows, GH))
    else:
        d_raw_in = dgi_rows
        dln_ih, dln_hh = _empty(x), _empty(x)
    dx = (d_raw_in @ w_ih).view(T, N, I)
    dw_ih = d_raw_in.t() @ x.reshape(rows, I)
    if elementwise:
        dw_hh = total(dgi_rows * h_prev)  # u [H]: sum over t, n of dgates * h_{t-1}
    else:
        d_raw_hh = draw.view(rows, GH) if norm else dgh_rows
        dw_hh = d_raw_hh.t() @ h_prev.to(x.dtype)
    if norm and is_lstm:
        dcn_rows = dcn.view(rows, H)
        dln_cw = total(dcn_rows * cn.view(rows, H))
        dln_cb = total(dcn_rows) if bias else _empty(x)
    else:
        dln_cw, dln_cb = _empty(x), _empty(x)
    db_ih = total(dgi_rows) if bias else _empty(x)
    db_hh = total(dgh_rows) if bias else _empty(x)
    final = T % 2  # the dh slot holding dL/dh_0
    dh0 = dh[final].to(x.dtype, copy=True)
    dc0 = dc.to(x.dtype, copy=True) if is_lstm else _empty(x)
    return dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dln_ih, dln_hh, dln_cw, dln_cb


#: Positions of the op's arguments: LAYER_INPUTS (14 tensors), then lengths, mode, reverse, save.
INPUTS = 14


def _setup_context(ctx, inputs, output) -> None:
    *tensors, lengths, mode, reverse, save = inputs
    _, _, _, saved, hs, cs, xhat, cn, rstd = output
    ctx.save_for_backward(*tensors, saved, hs, cs, xhat, cn, rstd, lengths)
    ctx.mode, ctx.reverse, ctx.save = mode, reverse, save
    ctx.mark_non_differentiable(saved, hs, cs, xhat, cn, rstd)


def _recompute(ctx) -> autograd_paths.Recompute:
    saved = ctx.saved_tensors
    return autograd_paths.Recompute(_mode_name(ctx.mode), tuple(saved[:INPUTS]), ctx.reverse, saved[-1])


def _kernel_backward(ctx, grad_y, grad_hn, grad_cn, *_unused):
    saved_tensors = ctx.saved_tensors
    x, h0, c0, w_ih, w_hh, b_ih, _b_hh, _w_hr, ln_ih, ln_hh, ln_cw, ln_cb, zh, zc = saved_tensors[:INPUTS]
    saved, hs, cs, xhat, cn, rstd, lengths = saved_tensors[INPUTS:]
    if not ctx.save:
        raise RuntimeError("fusedrnn triton backend: the forward ran without saving activations (autograd was off)")
    T, N, _ = x.shape
    H = hs.shape[-1]
    grad_y = x.new_zeros((T, N, H)) if grad_y is None else grad_y
    grad_hn = x.new_zeros((N, H)) if grad_hn is None else grad_hn
    is_lstm = ctx.mode == LSTM_ID
    has_bias = b_ih is not None
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dln_ih, dln_hh, dln_cw, dln_cb = variant_backward(
        grad_y, grad_hn, grad_cn if is_lstm else None, x, w_ih, w_hh, ln_ih, ln_hh, ln_cw, ln_cb, zh, zc, saved,
        hs, cs, xhat, cn, rstd, lengths, ctx.mode, ctx.reverse, has_bias,
    )  # fmt: skip
    return (
        dx,
        dh0 if h0 is not None else None,
        dc0 if c0 is not None else None,
        dw_ih,
        dw_hh,
        db_ih if has_bias else None,
        db_hh if has_bias else None,
        None,  # w_hr: always None here
        dln_ih if ln_ih is not None else None,
        dln_hh if ln_hh is not None else None,
        dln_cw if ln_cw is not None else None,
        dln_cb if ln_cb is not None else None,
        None,  # zoneout masks are constants
        None,
        None,
        None,
        None,
        None,
    )


_LAYER = autograd_paths.LayerAutograd(
    "TritonVariantLayer",
    variant_forward,
    _setup_context,
    _kernel_backward,
    _recompute,
    input_positions=range(INPUTS),
    arity=INPUTS + 4,
)
variant_forward.register_autograd(_LAYER.backward, setup_context=_setup_context)


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
    *,
    norm: LayerNormWeights | None = None,
    zoneout: ZoneoutMasks | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """`fusedrnn.reference.rnn_layer`'s contract for the variants (no projection) on the Triton kernels."""
    tensors = layer_inputs(x, hx, cx if mode == "LSTM" else None, w_ih, w_hh, b_ih, b_hh, None, norm, zoneout)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    y, h_n, c_n, *_ = _LAYER.apply(*tensors, lengths, MODE_IDS[mode], reverse, save, differentiable=save)
    return y, h_n, (c_n if mode == "LSTM" else None)
