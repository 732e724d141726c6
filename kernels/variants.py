"""Recurrence kernels of issue #15's variants: LayerNorm-LSTM / GRU, IndRNN, zoneout (fusedrnn.reference's math).

One forward and one backward kernel, specialised by constexpr flags like the plain ones (forward.py, backward.py,
whose tile helpers they reuse); the input projection (and its layer norm, a per-(t, n) row operation with no
recurrence) is done by the host over all T*N rows, so these kernels see gi = LN(x W_ih^T; g_ih) + b_ih.

Why this layout (plan.plan_variant states the tiles and refusals):
  layer norm  normalises the G*H recurrent pre-activations of each (t, n) row, and the LSTM's c~ over H, once per
              step. One program owns BLOCK_N batch rows x ALL G*H columns of a step (BLOCK_H >= H, one hidden tile),
              so the mean and variance are in-program reductions: no cross-program exchange, same step structure as
              the tiled kernels (h written, tl.debug_barrier, read back next step). Bounded by what one program holds
              (plan.MAX_NORM_HIDDEN); the persistent split-hidden kernels would need a cross-program reduction per
              step and are refused (see plan.plan_variant).
  zoneout     (no layer norm) the tiled kernels' loop over hidden tiles, plus a mask load per tile and step: any H.
  IndRNN      h~ = act(gi + u * h_prev + b_hh) has no matmul: each hidden unit depends only on itself, so the grid
              is (batch tiles, hidden tiles) and every program runs the whole sequence on its own units with no
              barrier at all (persistent by construction).
"""

import triton
import triton.language as tl

from .activations import sigmoid, tanh
from .backward import recurrent_backward_matmul
from .cells import cell_backward, cell_forward, load_f32, load_gate_inputs, skip_finished_rows
from .forward import _bias, _store_state, recurrent_tile
from .modes import GRU, INDRNN_TANH, LSTM, RNN_TANH
from .timesteps import backward_step_slots, forward_step_slots


@triton.jit
def _masked(v, col_ok):
    return tl.where(col_ok[None, :], v, 0.0)


@triton.jit
def _row_stats(v0, v1, v2, v3, col_ok, width, GATES: tl.constexpr):
    """Mean [BN, 1] and 1/sqrt(biased var + eps) over the `width` valid columns of up to four gate tiles."""
    total = tl.sum(_masked(v0, col_ok), axis=1)
    if GATES > 1:
        total += tl.sum(_masked(v1, col_ok), axis=1) + tl.sum(_masked(v2, col_ok), axis=1)
    if GATES > 3:
        total += tl.sum(_masked(v3, col_ok), axis=1)
    mean = (total / width)[:, None]
    d0 = _masked(v0 - mean, col_ok)
    d1 = _masked(v1 - mean, col_ok)
    d2 = _masked(v2 - mean, col_ok)
    d3 = _masked(v3 - mean, col_ok)
    square = tl.sum(d0 * d0, axis=1)
    if GATES > 1:
        square += tl.sum(d1 * d1, axis=1) + tl.sum(d2 * d2, axis=1)
    if GATES > 3:
        square += tl.sum(d3 * d3, axis=1)
    rstd = (1.0 / tl.sqrt(square / width + 1e-5))[:, None]  # reference.EPS
    return mean, rstd


@triton.jit
def _norm_backward_terms(g0, g1, g2, g3, x0, x1, x2, x3, col_ok, width, GATES: tl.constexpr):
    """Row means [BN, 1] of g and of g * xhat (the two reductions of layer norm's backward)."""
    s1 = tl.sum(_masked(g0, col_ok), axis=1)
    s2 = tl.sum(_masked(g0 * x0, col_ok), axis=1)
    if GATES > 1:
        s1 += tl.sum(_masked(g1, col_ok), axis=1) + tl.sum(_masked(g2, col_ok), axis=1)
        s2 += tl.sum(_masked(g1 * x1, col_ok), axis=1) + tl.sum(_masked(g2 * x2, col_ok), axis=1)
    if GATES > 3:
        s1 += tl.sum(_masked(g3, col_ok), axis=1)
        s2 += tl.sum(_masked(g3 * x3, col_ok), axis=1)
    return (s1 / width)[:, None], (s2 / width)[:, None]


@triton.jit
def _gain(ptr, gate: tl.constexpr, H, cols, col_ok):
    return tl.load(ptr + gate * H + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]


@triton.jit
def _zone(m_ptr, tile, mask, new, old, ZONEOUT: tl.constexpr):
    """Zoneout of one state tile: m * old + (1 - m) * new (m = 1 keeps the previous value), as the reference."""
    if ZONEOUT:
        m = load_f32(m_ptr + tile, mask)
        return m * old + (1.0 - m) * new
    else:
        return new


@triton.jit
def _column_range(H, ELEMENTWISE: tl.constexpr, BLOCK_H: tl.constexpr):
    """[col_start, col_end) of the hidden units this program steps: one BLOCK_H tile per grid axis 1 program for
    IndRNN (ELEMENTWISE, no matmul couples the columns), otherwise all H."""
    if ELEMENTWISE:
        col_start = tl.program_id(1) * BLOCK_H
        col_end = col_start + BLOCK_H
    else:
        col_start = 0
        col_end = H
    return col_start, col_end


@triton.jit
def lstm_gates(pre0, pre1, pre2, pre3, c_prev):
    """The LSTM's i, f, g, o and c~ = f c_{t-1} + i g (h comes later: with layer norm it needs the norm of c~)."""
    a0 = sigmoid(pre0)
    a1 = sigmoid(pre1)
    a2 = tanh(pre2)
    a3 = sigmoid(pre3)
    return a0, a1, a2, a3, a1 * c_prev + a0 * a2


@triton.jit
def cell_norm_output(c_keep, ln_cw_ptr, ln_cb_ptr, H, cols, col_ok, HAS_BIAS: tl.constexpr):
    """LN(c~) from its normalised value: c_keep * g_c (+ b_c)."""
    c_out = c_keep * _gain(ln_cw_ptr, 0, H, cols, col_ok)
    if HAS_BIAS:
        c_out += _gain(ln_cb_ptr, 0, H, cols, col_ok)
    return c_out


@triton.jit
def lstm_cell_carry(dc_ptr, c_prev_ptr, cn_ptr, zc_ptr, tile, mask, ZONEOUT_C: tl.constexpr):
    """An LSTM tile's backward inputs: (dc, c_{t-1}, c_keep, dc~, dc_kept): the carried gradient of c_t, the state
    before the step, the saved c~ (with layer norm its normalised value), and dc split by the cell zoneout into the
    part through c~ and the part c_{t-1} keeps."""
    dc = load_f32(dc_ptr + tile, mask)
    c_prev = load_f32(c_prev_ptr + tile, mask)
    c_keep = load_f32(cn_ptr + tile, mask)
    if ZONEOUT_C:
        mc = load_f32(zc_ptr + tile, mask)
        return dc, c_prev, c_keep, (1.0 - mc) * dc, mc * dc
    else:
        return dc, c_prev, c_keep, dc, tl.zeros_like(dc)


@triton.jit
def lstm_gate_grads(dc_tilde, dh_tilde, tc, a0, a1, a2, a3, c_prev):
    """The LSTM's gate pre-activation gradients (i, f, g, o) from the whole gradient of c~ and of h~ (tc: tanh of
    what h~ was made from), and the part of dc_{t-1} through c~."""
    d0 = dc_tilde * a2 * a0 * (1.0 - a0)
    d1 = dc_tilde * c_prev * a1 * (1.0 - a1)
    d2 = dc_tilde * a0 * (1.0 - a2 * a2)
    d3 = dh_tilde * tc * a3 * (1.0 - a3)
    return d0, d1, d2, d3, dc_tilde * a1


@triton.jit(do_not_specialize=["T", "reverse"])
def variant_forward_kernel(
    gi_ptr,  # [T, N, G*H] input side LN(x W_ih^T; g_ih) + b_ih (or x W_ih^T + b_ih), input dtype
    w_hh_ptr,  # [G*H, H]; IndRNN: u [H]
    b_hh_ptr,  # [G*H] (HAS_BIAS)
    ln_hh_ptr,  # [G*H] gain of the recurrent LN (NORM)
    ln_cw_ptr,  # [H] gain of the LSTM's cell LN (NORM and LSTM)
    ln_cb_ptr,  # [H] its bias (NORM, LSTM and HAS_BIAS)
    zh_ptr,  # [T, N, H] zoneout weight of h_{t-1} (ZONEOUT_H)
    zc_ptr,  # [T, N, H] zoneout weight of c_{t-1} (ZONEOUT_C)
    lengths_ptr,  # [N] (HAS_LENGTHS)
    hs_ptr,  # [S, N, H] fp32 states, slots as recurrence_forward_kernel's
    cs_ptr,  # [S, N, H] fp32 cell states (LSTM)
    y_ptr,  # [T, N, H] output, input dtype
    saved_ptr,  # [T, N, SLOTS*H] (SAVE): LSTM i, f, g, o; GRU r, z, n, gh_n; IndRNN and Elman RNN h~
    xhat_ptr,  # [T, N, G*H] fp32 (SAVE and NORM): the normalised recurrent pre-activations
    cn_ptr,  # [T, N, H] fp32 (SAVE and LSTM): c~ before zoneout, or its normalised xhat with NORM
    rstd_ptr,  # [T, N, 2] fp32 (SAVE and NORM): 1/std of the recurrent row and of c~
    T,
    N,
    H,
    MODE: tl.constexpr,
    GATES: tl.constexpr,
    reverse,
    HAS_BIAS: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    SAVE: tl.constexpr,
    SLOTS: tl.constexpr,
    NORM: tl.constexpr,
    ZONEOUT_H: tl.constexpr,
    ZONEOUT_C: tl.constexpr,
    ELEMENTWISE: tl.constexpr,  # IndRNN: grid axis 1 tiles the hidden units, no matmul
    BLOCK_N: tl.constexpr,
    BLOCK_H: tl.constexpr,  # NORM: >= H (the whole row in one tile)
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    col_start, col_end = _column_range(H, ELEMENTWISE, BLOCK_H)
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
    state_size = N * H
    GH = GATES * H
    for step in range(T):
        t, prev, new = forward_step_slots(step, T, reverse, SAVE)
        h_prev_ptr = hs_ptr + tl.cast(prev, tl.int64) * state_size
        h_new_ptr = hs_ptr + tl.cast(new, tl.int64) * state_size
        step_off = tl.cast(t, tl.int64) * state_size  # offset of step t in every [T, N, H] tensor
        if HAS_LENGTHS:
            valid = (t < length)[:, None]
        else:
            valid = row_ok[:, None]  # unused
        for j0 in range(col_start, col_end, BLOCK_H):
            cols = j0 + tl.arange(0, BLOCK_H)
            col_ok = cols < H
            mask = row_ok[:, None] & col_ok[None, :]
            tile = rows[:, None] * H + cols[None, :]
            gate_tile = tl.cast(t, tl.int64) * N * GH + rows[:, None] * GH + cols[None, :]
            h_prev = load_f32(h_prev_ptr + tile, mask)
            if ELEMENTWISE:
                u = tl.load(w_hh_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
                acc0 = u * h_prev
                acc1, acc2, acc3 = acc0, acc0, acc0
            else:
                acc0, acc1, acc2, acc3 = recurrent_tile(h_prev_ptr, w_hh_ptr, rows, row_ok, cols, col_ok, H, H,
                                                        GATES, BLOCK_N, BLOCK_H, BLOCK_K, PRECISION)  # fmt: skip
            if NORM:  # LN over the G*H recurrent pre-activations of each row: all of them are in this tile
                mean, rstd = _row_stats(acc0, acc1, acc2, acc3, col_ok, GH, GATES)
                acc0 = (acc0 - mean) * rstd
                acc1 = (acc1 - mean) * rstd
                acc2 = (acc2 - mean) * rstd
                acc3 = (acc3 - mean) * rstd
                if SAVE:
                    xhat = xhat_ptr + gate_tile
                    tl.store(xhat, acc0, mask=mask)
                    tl.store(xhat + H, acc1, mask=mask)
                    tl.store(xhat + 2 * H, acc2, mask=mask)
                    if GATES > 3:
                        tl.store(xhat + 3 * H, acc3, mask=mask)
                    rstd_t = rstd_ptr + (tl.cast(t, tl.int64) * N + rows) * 2
                    tl.store(rstd_t, tl.reshape(rstd, [BLOCK_N]), mask=row_ok)
                acc0 = acc0 * _gain(ln_hh_ptr, 0, H, cols, col_ok)
                acc1 = acc1 * _gain(ln_hh_ptr, 1, H, cols, col_ok)
                acc2 = acc2 * _gain(ln_hh_ptr, 2, H, cols, col_ok)
                if GATES > 3:
                    acc3 = acc3 * _gain(ln_hh_ptr, 3, H, cols, col_ok)
            gh0 = acc0 + _bias(b_hh_ptr, 0, H, cols, col_ok, HAS_BIAS, GATES)
            gh1 = acc1 + _bias(b_hh_ptr, 1, H, cols, col_ok, HAS_BIAS, GATES)
            gh2 = acc2 + _bias(b_hh_ptr, 2, H, cols, col_ok, HAS_BIAS, GATES)
            gh3 = acc3 + _bias(b_hh_ptr, 3, H, cols, col_ok, HAS_BIAS, GATES)
            gi0, gi1, gi2, gi3 = load_gate_inputs(gi_ptr + gate_tile, H, mask, GATES)
            if MODE == LSTM:
                c_prev = load_f32(cs_ptr + tl.cast(prev, tl.int64) * state_size + tile, mask)
                a0, a1, a2, a3, c_tilde = lstm_gates(gi0 + gh0, gi1 + gh1, gi2 + gh2, gi3 + gh3, c_prev)
                if NORM:  # LN of c~ over its H columns, all in this tile
                    c_mean, c_rstd = _row_stats(c_tilde, c_tilde, c_tilde, c_tilde, col_ok, H, 1)
                    c_keep = (c_tilde - c_mean) * c_rstd
                    c_out = cell_norm_output(c_keep, ln_cw_ptr, ln_cb_ptr, H, cols, col_ok, HAS_BIAS)
                    if SAVE:
                        tl.store(rstd_ptr + (tl.cast(t, tl.int64) * N + rows) * 2 + 1, tl.reshape(c_rstd, [BLOCK_N]),
                                 mask=row_ok)  # fmt: skip
                else:
                    c_keep = c_tilde
                    c_out = c_tilde
                h_tilde = a3 * tanh(c_out)
                c = _zone(zc_ptr + step_off, tile, mask, c_tilde, c_prev, ZONEOUT_C)
                if HAS_LENGTHS:
                    c = tl.where(valid, c, c_prev)
                tl.store(cs_ptr + tl.cast(new, tl.int64) * state_size + tile, c, mask=mask)
                if SAVE:
                    tl.store(cn_ptr + step_off + tile, c_keep, mask=mask)
            elif MODE == GRU:
                h_tilde, _c, a0, a1, a2, a3 = cell_forward(gi0 + gh0, gi1 + gh1, gi2, gh2, gi0, h_prev, h_prev, MODE)
            else:  # IndRNN, or the Elman RNN with zoneout
                pre = gi0 + gh0
                if MODE == INDRNN_TANH or MODE == RNN_TANH:
                    h_tilde = tanh(pre)
                else:
                    h_tilde = tl.maximum(pre, 0.0)
                a0, a1, a2, a3 = h_tilde, h_tilde, h_tilde, h_tilde
            if SAVE:
                out_ty = saved_ptr.dtype.element_ty
                saved = saved_ptr + tl.cast(t, tl.int64) * N * SLOTS * H + rows[:, None] * (SLOTS * H) + cols[None, :]
                tl.store(saved, a0.to(out_ty), mask=mask)
                if SLOTS > 1:
                    tl.store(saved + H, a1.to(out_ty), mask=mask)
                    tl.store(saved + 2 * H, a2.to(out_ty), mask=mask)
                    tl.store(saved + 3 * H, a3.to(out_ty), mask=mask)
            h = _zone(zh_ptr + step_off, tile, mask, h_tilde, h_prev, ZONEOUT_H)
            _store_state(h, h_prev, h_new_ptr + tile, y_ptr + step_off + tile, mask, valid, HAS_LENGTHS)
        # The next step's matmul reads every column of h that this program just wrote (IndRNN: only its own tile).
        tl.debug_barrier()


@triton.jit(do_not_specialize=["T", "reverse"])
def variant_backward_kernel(
    dy_ptr,  # [T, N, H]
    saved_ptr,  # [T, N, SLOTS*H]
    hs_ptr,  # [T+1, N, H] fp32
    cs_ptr,  # [T+1, N, H] fp32 (LSTM)
    xhat_ptr,  # [T, N, G*H] fp32 (NORM)
    cn_ptr,  # [T, N, H] fp32 (LSTM)
    rstd_ptr,  # [T, N, 2] fp32 (NORM)
    w_hh_ptr,  # [G*H, H]; IndRNN: u [H]
    ln_hh_ptr,  # [G*H] (NORM)
    ln_cw_ptr,  # [H] (NORM and LSTM)
    ln_cb_ptr,  # [H] (NORM, LSTM and HAS_BIAS)
    zh_ptr,  # [T, N, H] (ZONEOUT_H)
    zc_ptr,  # [T, N, H] (ZONEOUT_C)
    lengths_ptr,  # [N] (HAS_LENGTHS)
    dh_ptr,  # [2, N, H] fp32: slot 0 holds dL/dh_n on entry; slot T % 2 holds dL/dh_0 on exit
    dc_ptr,  # [N, H] fp32 (LSTM): dL/dc_n on entry, dL/dc_0 on exit
    dgi_ptr,  # [T, N, G*H] out: gradient of gi (the input side after its LN and bias)
    dgh_ptr,  # [T, N, G*H] out (GRU): gradient of gh = LN(h W_hh^T) + b_hh (the n gate's times r); else dgi
    draw_ptr,  # [T, N, G*H] out (NORM): gradient of the raw recurrent matmul h W_hh^T
    dcn_ptr,  # [T, N, H] fp32 out (NORM and LSTM): gradient of LN(c~), for the host's ln_c gradients
    T,
    N,
    H,
    MODE: tl.constexpr,
    GATES: tl.constexpr,
    reverse,
    HAS_BIAS: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    SLOTS: tl.constexpr,
    NORM: tl.constexpr,
    ZONEOUT_H: tl.constexpr,
    ZONEOUT_C: tl.constexpr,
    ELEMENTWISE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    col_start, col_end = _column_range(H, ELEMENTWISE, BLOCK_H)
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
    state_size = N * H
    GH = GATES * H
    for step in range(T):
        t, prev, new = backward_step_slots(step, T, reverse)
        dh_in = dh_ptr + (step % 2) * state_size
        dh_out = dh_ptr + ((step + 1) % 2) * state_size
        step_off = tl.cast(t, tl.int64) * state_size
        gates_t = tl.cast(t, tl.int64) * N * GH
        if HAS_LENGTHS:
            valid = (t < length)[:, None]
        else:
            valid = row_ok[:, None]  # unused
        # Phase A: gate gradients of each tile (NORM: the one tile holding the whole row).
        for j0 in range(col_start, col_end, BLOCK_H):
            cols = j0 + tl.arange(0, BLOCK_H)
            col_ok = cols < H
            mask = row_ok[:, None] & col_ok[None, :]
            tile = rows[:, None] * H + cols[None, :]
            gate_tile = gates_t + rows[:, None] * GH + cols[None, :]
            dy = load_f32(dy_ptr + step_off + tile, mask)
            if HAS_LENGTHS:
                dy = tl.where(valid, dy, 0.0)
            dh = load_f32(dh_in + tile, mask) + dy
            if ZONEOUT_H:  # h = m h_prev + (1 - m) h~
                m = load_f32(zh_ptr + step_off + tile, mask)
                dh_tilde = (1.0 - m) * dh
                kept = m * dh
            else:
                dh_tilde = dh
                kept = tl.zeros_like(dh)
            h_prev = load_f32(hs_ptr + tl.cast(prev, tl.int64) * state_size + tile, mask)
            saved = saved_ptr + tl.cast(t, tl.int64) * N * SLOTS * H + rows[:, None] * (SLOTS * H) + cols[None, :]
            a0 = load_f32(saved, mask)
            if MODE == LSTM:
                a1 = load_f32(saved + H, mask)
                a2 = load_f32(saved + 2 * H, mask)
                a3 = load_f32(saved + 3 * H, mask)
                dc, c_prev, c_keep, dc_tilde, dc_kept = lstm_cell_carry(
                    dc_ptr, cs_ptr + tl.cast(prev, tl.int64) * state_size, cn_ptr + step_off, zc_ptr + step_off, tile,
                    mask, ZONEOUT_C)  # fmt: skip
                if NORM:
                    tc = tanh(cell_norm_output(c_keep, ln_cw_ptr, ln_cb_ptr, H, cols, col_ok, HAS_BIAS))
                    dcn = dh_tilde * a3 * (1.0 - tc * tc)
                    if HAS_LENGTHS:
                        dcn = tl.where(valid, dcn, 0.0)
                    tl.store(dcn_ptr + step_off + tile, dcn, mask=mask)
                    g = dcn * _gain(ln_cw_ptr, 0, H, cols, col_ok)
                    s1, s2 = _norm_backward_terms(g, g, g, g, c_keep, c_keep, c_keep, c_keep, col_ok, H, 1)
                    c_rstd = tl.load(rstd_ptr + (tl.cast(t, tl.int64) * N + rows) * 2 + 1, mask=row_ok, other=0.0)
                    dc_tilde += c_rstd[:, None] * (g - s1 - c_keep * s2)
                else:
                    tc = tanh(c_keep)
                    dc_tilde += dh_tilde * a3 * (1.0 - tc * tc)
                d0, d1, d2, d3, dc_prev = lstm_gate_grads(dc_tilde, dh_tilde, tc, a0, a1, a2, a3, c_prev)
                d2_hh = d2
                dc_prev += dc_kept
                direct = kept
            elif MODE == GRU:
                a1 = load_f32(saved + H, mask)
                a2 = load_f32(saved + 2 * H, mask)
                a3 = load_f32(saved + 3 * H, mask)
                d0, d1, d2, d2_hh, d3, dc_prev, direct = cell_backward(dh_tilde, dh, a0, a1, a2, a3, h_prev, h_prev,
                                                                       h_prev, h_prev, MODE)  # fmt: skip
                dc = dc_prev
                direct += kept
            else:  # IndRNN or Elman RNN: a0 is h~
                if MODE == INDRNN_TANH or MODE == RNN_TANH:
                    d0 = dh_tilde * (1.0 - a0 * a0)
                else:
                    d0 = tl.where(a0 > 0, dh_tilde, 0.0)
                d1, d2, d2_hh, d3, dc, dc_prev = d0, d0, d0, d0, d0, d0
                direct = kept
                if ELEMENTWISE:  # IndRNN's u * h_{t-1}; the Elman RNN's W_hh goes through phase B
                    u = tl.load(w_hh_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
                    direct += d0 * u
            if HAS_LENGTHS:
                d0, d1, d2, d2_hh, d3, dc_prev, direct = skip_finished_rows(
                    valid, d0, d1, d2, d2_hh, d3, dc_prev, direct, dc, dh
                )
            if MODE == LSTM:
                tl.store(dc_ptr + tile, dc_prev, mask=mask)
            out_ty = dgi_ptr.dtype.element_ty
            dgi = dgi_ptr + gate_tile
            tl.store(dgi, d0.to(out_ty), mask=mask)
            if GATES > 1:
                tl.store(dgi + H, d1.to(out_ty), mask=mask)
                tl.store(dgi + 2 * H, d2.to(out_ty), mask=mask)
            if GATES > 3:
                tl.store(dgi + 3 * H, d3.to(out_ty), mask=mask)
            if MODE == GRU:  # the LSTM's and IndRNN's gh gradient is dgi itself
                dgh = dgh_ptr + gate_tile
                tl.store(dgh, d0.to(out_ty), mask=mask)
                tl.store(dgh + H, d1.to(out_ty), mask=mask)
                tl.store(dgh + 2 * H, d2_hh.to(out_ty), mask=mask)
                if GATES > 3:
                    tl.store(dgh + 3 * H, d3.to(out_ty), mask=mask)
            if NORM:  # back through LN(h W_hh^T; g_hh): the row's two reductions over all G*H columns, in this tile
                xhat = xhat_ptr + gate_tile
                x0 = load_f32(xhat, mask)
                x1 = load_f32(xhat + H, mask)
                x2 = load_f32(xhat + 2 * H, mask)
                x3 = x0
                g0 = d0 * _gain(ln_hh_ptr, 0, H, cols, col_ok)
                g1 = d1 * _gain(ln_hh_ptr, 1, H, cols, col_ok)
                g2 = d2_hh * _gain(ln_hh_ptr, 2, H, cols, col_ok)
                g3 = g0
                if GATES > 3:
                    x3 = load_f32(xhat + 3 * H, mask)
                    g3 = d3 * _gain(ln_hh_ptr, 3, H, cols, col_ok)
                s1, s2 = _norm_backward_terms(g0, g1, g2, g3, x0, x1, x2, x3, col_ok, GH, GATES)
                rstd = tl.load(rstd_ptr + (tl.cast(t, tl.int64) * N + rows) * 2, mask=row_ok, other=0.0)[:, None]
                draw = draw_ptr + gate_tile
                tl.store(draw, (rstd * (g0 - s1 - x0 * s2)).to(out_ty), mask=mask)
                tl.store(draw + H, (rstd * (g1 - s1 - x1 * s2)).to(out_ty), mask=mask)
                tl.store(draw + 2 * H, (rstd * (g2 - s1 - x2 * s2)).to(out_ty), mask=mask)
                if GATES > 3:
                    tl.store(draw + 3 * H, (rstd * (g3 - s1 - x3 * s2)).to(out_ty), mask=mask)
            tl.store(dh_out + tile, direct, mask=mask)
        tl.debug_barrier()
        if not ELEMENTWISE:  # Phase B: dh_{t-1} += (gradient of h W_hh^T) @ W_hh
            if NORM:
                src = draw_ptr + gates_t
            elif MODE == GRU:
                src = dgh_ptr + gates_t
            else:
                src = dgi_ptr + gates_t
            recurrent_backward_matmul(dh_out, src, w_hh_ptr, rows, row_ok, H, H, GATES, BLOCK_H, BLOCK_K, PRECISION)
            tl.debug_barrier()
