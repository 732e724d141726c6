"""Layer-norm LSTM / GRU recurrence kernels for rows too wide for one tile (plan.plan_variant's "chunked" path).

Same contract, buffers and saved tensors as variants.variant_forward_kernel / variant_backward_kernel with NORM on
(so fusedrnn.triton_variant_ops runs the same host code around either), but one program owns BLOCK_N batch rows and
walks a step's G*H pre-activations in BLOCK_H-wide hidden tiles, several times per step:

  forward   1. h_{t-1} W_hh^T per tile -> the workspace (raw row), row sums      (mean)
            2. the raw row again -> sum of squared deviations                 (variance: two passes, as the reference)
            3. normalise, gains, biases, gates; the GRU finishes its step here; the LSTM keeps c~ and o in the
               workspace and sums c~
            4. (LSTM) c~'s variance   5. (LSTM) LN(c~), h~, zoneout, the states
  backward  A1. (LSTM) the gradient of LN(c~) and its two row sums   A2. gate gradients per tile, the gained
            gradients of the recurrent LN into the workspace and its two row sums   A3. the gradient of the raw
            recurrent matmul   B. dh_{t-1} += that @ W_hh (backward.recurrent_backward_matmul)

The row lives in a per-call fp32 workspace in global memory ([N, plan.CHUNKED_WORKSPACE_GATES*H]: each program only
its own rows, re-read within the step, so it stays in L1/L2) rather than in registers: a Triton program cannot index
a register tile by a loop variable. Between passes tl.debug_barrier orders a thread's reads after other threads' writes.

Cost: a step's whole G*H x H matmul runs in the program owning the rows (one program per 16 rows): any H works, but
the per-step work of one program grows as H^2 (plan.MAX_CHUNKED_NORM_HIDDEN bounds what is planned).

UNVERIFIED on a GPU: tested under Triton's interpreter in fp32 (tests/test_variants_triton.py: H = 136, 256, 1024)
and compiled for sm_90 without spills (tests/test_triton_compile.py); the bf16/fp16 tests there are `gpu`. What the
interpreter cannot show: races between warps across the tl.debug_barrier-separated passes, and the speed.
"""

import triton
import triton.language as tl

from .activations import tanh
from .cells import cell_backward, cell_forward, load_f32, load_gate_inputs, skip_finished_rows
from .backward import recurrent_backward_matmul
from .forward import _bias, _store_state, recurrent_tile
from .modes import GRU, LSTM
from .timesteps import backward_step_slots, forward_step_slots
from .variants import _gain, _masked, _zone, cell_norm_output, lstm_cell_carry, lstm_gate_grads, lstm_gates

EPS = tl.constexpr(1e-5)  # fusedrnn.reference.EPS


@triton.jit
def _row_sum(v, col_ok):
    return tl.sum(_masked(v, col_ok), axis=1)


@triton.jit
def _gate_sum(v0, v1, v2, v3, col_ok, GATES: tl.constexpr):
    """Row sums [BN] of up to four gate tiles' valid columns."""
    total = _row_sum(v0, col_ok)
    if GATES > 1:
        total += _row_sum(v1, col_ok) + _row_sum(v2, col_ok)
    if GATES > 3:
        total += _row_sum(v3, col_ok)
    return total


@triton.jit
def _store_gates(ptr, H, v0, v1, v2, v3, mask, GATES: tl.constexpr):
    """Store up to four gate tiles at ptr + k*H (converted to the buffer's dtype)."""
    ty = ptr.dtype.element_ty
    tl.store(ptr, v0.to(ty), mask=mask)
    if GATES > 1:
        tl.store(ptr + H, v1.to(ty), mask=mask)
        tl.store(ptr + 2 * H, v2.to(ty), mask=mask)
    if GATES > 3:
        tl.store(ptr + 3 * H, v3.to(ty), mask=mask)


@triton.jit(do_not_specialize=["T", "reverse"])
def chunked_norm_forward_kernel(
    gi_ptr,  # [T, N, G*H] LN(x W_ih^T; g_ih) + b_ih, input dtype
    w_hh_ptr,  # [G*H, H]
    b_hh_ptr,  # [G*H] (HAS_BIAS)
    ln_hh_ptr,  # [G*H]
    ln_cw_ptr,  # [H] (LSTM)
    ln_cb_ptr,  # [H] (LSTM and HAS_BIAS)
    zh_ptr,  # [T, N, H] (ZONEOUT_H)
    zc_ptr,  # [T, N, H] (ZONEOUT_C)
    lengths_ptr,  # [N] (HAS_LENGTHS)
    hs_ptr,  # [S, N, H] fp32 states (slots: timesteps.forward_step_slots)
    cs_ptr,  # [S, N, H] fp32 (LSTM)
    y_ptr,  # [T, N, H]
    saved_ptr,  # [T, N, SLOTS*H] (SAVE)
    xhat_ptr,  # [T, N, G*H] fp32 (SAVE)
    cn_ptr,  # [T, N, H] fp32 (SAVE and LSTM): LN(c~) before its gain
    rstd_ptr,  # [T, N, 2] fp32 (SAVE)
    ws_ptr,  # [N, ws_stride] fp32 workspace (plan.CHUNKED_WORKSPACE_GATES * H columns)
    ws_stride,
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
    ZONEOUT_H: tl.constexpr,
    ZONEOUT_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
    state_size = N * H
    GH = GATES * H
    ws_rows = ws_ptr + rows[:, None] * ws_stride
    for step in range(T):
        t, prev, new = forward_step_slots(step, T, reverse, SAVE)
        h_prev_ptr = hs_ptr + tl.cast(prev, tl.int64) * state_size
        h_new_ptr = hs_ptr + tl.cast(new, tl.int64) * state_size
        c_prev_ptr = cs_ptr + tl.cast(prev, tl.int64) * state_size
        c_new_ptr = cs_ptr + tl.cast(new, tl.int64) * state_size
        step_off = tl.cast(t, tl.int64) * state_size
        gates_t = tl.cast(t, tl.int64) * N * GH
        rstd_t = rstd_ptr + (tl.cast(t, tl.int64) * N + rows) * 2
        if HAS_LENGTHS:
            valid = (t < length)[:, None]
        else:
            valid = row_ok[:, None]  # unused
        # Pass 1: the raw recurrent row, tile by tile, into the workspace; its sum.
        total = tl.zeros([BLOCK_N], dtype=tl.float32)
        for j0 in range(0, H, BLOCK_H):
            cols = j0 + tl.arange(0, BLOCK_H)
            col_ok = cols < H
            mask = row_ok[:, None] & col_ok[None, :]
            acc0, acc1, acc2, acc3 = recurrent_tile(h_prev_ptr, w_hh_ptr, rows, row_ok, cols, col_ok, H, H, GATES,
                                                    BLOCK_N, BLOCK_H, BLOCK_K, PRECISION)  # fmt: skip
            _store_gates(ws_rows + cols[None, :], H, acc0, acc1, acc2, acc3, mask, GATES)
            total += _gate_sum(acc0, acc1, acc2, acc3, col_ok, GATES)
        tl.debug_barrier()
        mean = (total / GH)[:, None]
        # Pass 2: the variance about that mean.
        square = tl.zeros([BLOCK_N], dtype=tl.float32)
        for j0 in range(0, H, BLOCK_H):
            cols = j0 + tl.arange(0, BLOCK_H)
            col_ok = cols < H
            mask = row_ok[:, None] & col_ok[None, :]
            r0, r1, r2, r3 = load_gate_inputs(ws_rows + cols[None, :], H, mask, GATES)
            d0, d1, d2, d3 = r0 - mean, r1 - mean, r2 - mean, r3 - mean
            square += _gate_sum(d0 * d0, d1 * d1, d2 * d2, d3 * d3, col_ok, GATES)
        rstd = (1.0 / tl.sqrt(square / GH + EPS))[:, None]
        if SAVE:
            tl.store(rstd_t, tl.reshape(rstd, [BLOCK_N]), mask=row_ok)
        # Pass 3: normalise, gains and biases, the gates. GRU: the whole step; LSTM: c~ (and o) for its own norm.
        c_total = tl.zeros([BLOCK_N], dtype=tl.float32)
        for j0 in range(0, H, BLOCK_H):
            cols = j0 + tl.arange(0, BLOCK_H)
            col_ok = cols < H
            mask = row_ok[:, None] & col_ok[None, :]
            tile = rows[:, None] * H + cols[None, :]
            gate_tile = gates_t + rows[:, None] * GH + cols[None, :]
            r0, r1, r2, r3 = load_gate_inputs(ws_rows + cols[None, :], H, mask, GATES)
            x0, x1, x2, x3 = (r0 - mean) * rstd, (r1 - mean) * rstd, (r2 - mean) * rstd, (r3 - mean) * rstd
            if SAVE:
                _store_gates(xhat_ptr + gate_tile, H, x0, x1, x2, x3, mask, GATES)
            gh0 = x0 * _gain(ln_hh_ptr, 0, H, cols, col_ok) + _bias(b_hh_ptr, 0, H, cols, col_ok, HAS_BIAS, GATES)
            gh1 = x1 * _gain(ln_hh_ptr, 1, H, cols, col_ok) + _bias(b_hh_ptr, 1, H, cols, col_ok, HAS_BIAS, GATES)
            gh2 = x2 * _gain(ln_hh_ptr, 2, H, cols, col_ok) + _bias(b_hh_ptr, 2, H, cols, col_ok, HAS_BIAS, GATES)
            gi0, gi1, gi2, gi3 = load_gate_inputs(gi_ptr + gate_tile, H, mask, GATES)
            h_prev = load_f32(h_prev_ptr + tile, mask)
            saved = saved_ptr + tl.cast(t, tl.int64) * N * SLOTS * H + rows[:, None] * (SLOTS * H) + cols[None, :]
            if MODE == LSTM:
                gh3 = x3 * _gain(ln_hh_ptr, 3, H, cols, col_ok) + _bias(b_hh_ptr, 3, H, cols, col_ok, HAS_BIAS,
                                                                        GATES)  # fmt: skip
                c_prev = load_f32(c_prev_ptr + tile, mask)
                a0, a1, a2, a3, c_tilde = lstm_gates(gi0 + gh0, gi1 + gh1, gi2 + gh2, gi3 + gh3, c_prev)
                tl.store(ws_rows + GH + cols[None, :], c_tilde, mask=mask)
                tl.store(ws_rows + GH + H + cols[None, :], a3, mask=mask)
                c_total += _row_sum(c_tilde, col_ok)
            else:
                h_tilde, _c, a0, a1, a2, a3 = cell_forward(gi0 + gh0, gi1 + gh1, gi2, gh2, gi0, h_prev, h_prev, MODE)
                h = _zone(zh_ptr + step_off, tile, mask, h_tilde, h_prev, ZONEOUT_H)
                _store_state(h, h_prev, h_new_ptr + tile, y_ptr + step_off + tile, mask, valid, HAS_LENGTHS)
            if SAVE:
                _store_gates(saved, H, a0, a1, a2, a3, mask, SLOTS)
        tl.debug_barrier()
        if MODE == LSTM:
            c_mean = (c_total / H)[:, None]
            # Pass 4: c~'s variance.
            c_square = tl.zeros([BLOCK_N], dtype=tl.float32)
            for j0 in range(0, H, BLOCK_H):
                cols = j0 + tl.arange(0, BLOCK_H)
                col_ok = cols < H
                mask = row_ok[:, None] & col_ok[None, :]
                c_dev = load_f32(ws_rows + GH + cols[None, :], mask) - c_mean
                c_square += _row_sum(c_dev * c_dev, col_ok)
            c_rstd = (1.0 / tl.sqrt(c_square / H + EPS))[:, None]
            if SAVE:
                tl.store(rstd_t + 1, tl.reshape(c_rstd, [BLOCK_N]), mask=row_ok)
            # Pass 5: h~ = o tanh(LN(c~)), zoneout, the states.
            for j0 in range(0, H, BLOCK_H):
                cols = j0 + tl.arange(0, BLOCK_H)
                col_ok = cols < H
                mask = row_ok[:, None] & col_ok[None, :]
                tile = rows[:, None] * H + cols[None, :]
                c_tilde = load_f32(ws_rows + GH + cols[None, :], mask)
                o = load_f32(ws_rows + GH + H + cols[None, :], mask)
                c_keep = (c_tilde - c_mean) * c_rstd
                h_tilde = o * tanh(cell_norm_output(c_keep, ln_cw_ptr, ln_cb_ptr, H, cols, col_ok, HAS_BIAS))
                c_prev = load_f32(c_prev_ptr + tile, mask)
                c = _zone(zc_ptr + step_off, tile, mask, c_tilde, c_prev, ZONEOUT_C)
                if HAS_LENGTHS:
                    c = tl.where(valid, c, c_prev)
                tl.store(c_new_ptr + tile, c, mask=mask)
                if SAVE:
                    tl.store(cn_ptr + step_off + tile, c_keep, mask=mask)
                h_prev = load_f32(h_prev_ptr + tile, mask)
                h = _zone(zh_ptr + step_off, tile, mask, h_tilde, h_prev, ZONEOUT_H)
                _store_state(h, h_prev, h_new_ptr + tile, y_ptr + step_off + tile, mask, valid, HAS_LENGTHS)
        # The next step's matmul reads every column of h that this program just wrote.
        tl.debug_barrier()


@triton.jit
def _upstream(dy_ptr, dh_in, zh_ptr, step_off, tile, mask, valid, HAS_LENGTHS: tl.constexpr, ZONEOUT_H: tl.constexpr):
    """(dh, dh~, kept): the gradient of h_t (carried + dy_t), its part through h~ and the part zoneout sends
    straight to h_{t-1}."""
    dy = load_f32(dy_ptr + step_off + tile, mask)
    if HAS_LENGTHS:
        dy = tl.where(valid, dy, 0.0)
    dh = load_f32(dh_in + tile, mask) + dy
    if ZONEOUT_H:  # h = m h_prev + (1 - m) h~
        m = load_f32(zh_ptr + step_off + tile, mask)
        return dh, (1.0 - m) * dh, m * dh
    else:
        return dh, dh, tl.zeros_like(dh)


@triton.jit(do_not_specialize=["T", "reverse"])
def chunked_norm_backward_kernel(
    dy_ptr,  # [T, N, H]
    saved_ptr,  # [T, N, SLOTS*H]
    hs_ptr,  # [T+1, N, H] fp32
    cs_ptr,  # [T+1, N, H] fp32 (LSTM)
    xhat_ptr,  # [T, N, G*H] fp32
    cn_ptr,  # [T, N, H] fp32 (LSTM)
    rstd_ptr,  # [T, N, 2] fp32
    w_hh_ptr,  # [G*H, H]
    ln_hh_ptr,  # [G*H]
    ln_cw_ptr,  # [H] (LSTM)
    ln_cb_ptr,  # [H] (LSTM and HAS_BIAS)
    zh_ptr,  # [T, N, H] (ZONEOUT_H)
    zc_ptr,  # [T, N, H] (ZONEOUT_C)
    lengths_ptr,  # [N] (HAS_LENGTHS)
    dh_ptr,  # [2, N, H] fp32: slot 0 holds dL/dh_n on entry; slot T % 2 holds dL/dh_0 on exit
    dc_ptr,  # [N, H] fp32 (LSTM): dL/dc_n on entry, dL/dc_0 on exit
    dgi_ptr,  # [T, N, G*H] out: gradient of gi
    dgh_ptr,  # [T, N, G*H] out (GRU): gradient of gh = LN(h W_hh^T) + b_hh
    draw_ptr,  # [T, N, G*H] out: gradient of the raw recurrent matmul h W_hh^T
    dcn_ptr,  # [T, N, H] fp32 out (LSTM): gradient of LN(c~)
    ws_ptr,  # [N, ws_stride] fp32 workspace (plan.CHUNKED_WORKSPACE_GATES * H columns)
    ws_stride,
    T,
    N,
    H,
    MODE: tl.constexpr,
    GATES: tl.constexpr,
    reverse,
    HAS_BIAS: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    SLOTS: tl.constexpr,
    ZONEOUT_H: tl.constexpr,
    ZONEOUT_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
    state_size = N * H
    GH = GATES * H
    ws_rows = ws_ptr + rows[:, None] * ws_stride
    for step in range(T):
        t, prev, new = backward_step_slots(step, T, reverse)
        dh_in = dh_ptr + (step % 2) * state_size
        dh_out = dh_ptr + ((step + 1) % 2) * state_size
        step_off = tl.cast(t, tl.int64) * state_size
        gates_t = tl.cast(t, tl.int64) * N * GH
        rstd_t = rstd_ptr + (tl.cast(t, tl.int64) * N + rows) * 2
        saved_t = saved_ptr + tl.cast(t, tl.int64) * N * SLOTS * H + rows[:, None] * (SLOTS * H)
        if HAS_LENGTHS:
            valid = (t < length)[:, None]
        else:
            valid = row_ok[:, None]  # unused
        if MODE == LSTM:
            # Pass A1: the gradient of LN(c~) (through h~ = o tanh(LN(c~))) and the row sums of its norm's backward.
            s1c = tl.zeros([BLOCK_N], dtype=tl.float32)
            s2c = tl.zeros([BLOCK_N], dtype=tl.float32)
            for j0 in range(0, H, BLOCK_H):
                cols = j0 + tl.arange(0, BLOCK_H)
                col_ok = cols < H
                mask = row_ok[:, None] & col_ok[None, :]
                tile = rows[:, None] * H + cols[None, :]
                _dh, dh_tilde, _kept = _upstream(dy_ptr, dh_in, zh_ptr, step_off, tile, mask, valid, HAS_LENGTHS,
                                                 ZONEOUT_H)  # fmt: skip
                o = load_f32(saved_t + 3 * H + cols[None, :], mask)
                c_keep = load_f32(cn_ptr + step_off + tile, mask)
                tc = tanh(cell_norm_output(c_keep, ln_cw_ptr, ln_cb_ptr, H, cols, col_ok, HAS_BIAS))
                dcn = dh_tilde * o * (1.0 - tc * tc)
                if HAS_LENGTHS:
                    dcn = tl.where(valid, dcn, 0.0)
                tl.store(dcn_ptr + step_off + tile, dcn, mask=mask)
                g = dcn * _gain(ln_cw_ptr, 0, H, cols, col_ok)
                s1c += _row_sum(g, col_ok)
                s2c += _row_sum(g * c_keep, col_ok)
            tl.debug_barrier()
            mean_g_c = (s1c / H)[:, None]
            mean_gx_c = (s2c / H)[:, None]
            c_rstd = tl.load(rstd_t + 1, mask=row_ok, other=0.0)[:, None]
        # Pass A2: gate gradients per tile; the recurrent LN's gained gradients to the workspace, and their sums.
        s1 = tl.zeros([BLOCK_N], dtype=tl.float32)
        s2 = tl.zeros([BLOCK_N], dtype=tl.float32)
        for j0 in range(0, H, BLOCK_H):
            cols = j0 + tl.arange(0, BLOCK_H)
            col_ok = cols < H
            mask = row_ok[:, None] & col_ok[None, :]
            tile = rows[:, None] * H + cols[None, :]
            gate_tile = gates_t + rows[:, None] * GH + cols[None, :]
            dh, dh_tilde, kept = _upstream(dy_ptr, dh_in, zh_ptr, step_off, tile, mask, valid, HAS_LENGTHS,
                                           ZONEOUT_H)  # fmt: skip
            h_prev = load_f32(hs_ptr + tl.cast(prev, tl.int64) * state_size + tile, mask)
            a0, a1, a2, a3 = load_gate_inputs(saved_t + cols[None, :], H, mask, SLOTS)
            if MODE == LSTM:
                dc, c_prev, c_keep, dc_tilde, dc_kept = lstm_cell_carry(
                    dc_ptr, cs_ptr + tl.cast(prev, tl.int64) * state_size, cn_ptr + step_off, zc_ptr + step_off, tile,
                    mask, ZONEOUT_C)  # fmt: skip
                tc = tanh(cell_norm_output(c_keep, ln_cw_ptr, ln_cb_ptr, H, cols, col_ok, HAS_BIAS))
                g = load_f32(dcn_ptr + step_off + tile, mask) * _gain(ln_cw_ptr, 0, H, cols, col_ok)
                dc_tilde += c_rstd * (g - mean_g_c - c_keep * mean_gx_c)
                d0, d1, d2, d3, dc_prev = lstm_gate_grads(dc_tilde, dh_tilde, tc, a0, a1, a2, a3, c_prev)
                d2_hh = d2
                dc_prev += dc_kept
                direct = kept
            else:
                d0, d1, d2, d2_hh, d3, dc_prev, direct = cell_backward(dh_tilde, dh, a0, a1, a2, a3, h_prev, h_prev,
                                                                       h_prev, h_prev, MODE)  # fmt: skip
                dc = dc_prev
                direct += kept
            if HAS_LENGTHS:
                d0, d1, d2, d2_hh, d3, dc_prev, direct = skip_finished_rows(valid, d0, d1, d2, d2_hh, d3, dc_prev,
                                                                            direct, dc, dh)  # fmt: skip
            if MODE == LSTM:
                tl.store(dc_ptr + tile, dc_prev, mask=mask)
            _store_gates(dgi_ptr + gate_tile, H, d0, d1, d2, d3, mask, GATES)
            if MODE == GRU:  # the LSTM's gh gradient is dgi itself
                _store_gates(dgh_ptr + gate_tile, H, d0, d1, d2_hh, d3, mask, GATES)
            g0 = d0 * _gain(ln_hh_ptr, 0, H, cols, col_ok)
            g1 = d1 * _gain(ln_hh_ptr, 1, H, cols, col_ok)
            g2 = d2_hh * _gain(ln_hh_ptr, 2, H, cols, col_ok)
            g3 = g0
            if GATES > 3:
                g3 = d3 * _gain(ln_hh_ptr, 3, H, cols, col_ok)
            _store_gates(ws_rows + cols[None, :], H, g0, g1, g2, g3, mask, GATES)
            x0, x1, x2, x3 = load_gate_inputs(xhat_ptr + gate_tile, H, mask, GATES)
            s1 += _gate_sum(g0, g1, g2, g3, col_ok, GATES)
            s2 += _gate_sum(g0 * x0, g1 * x1, g2 * x2, g3 * x3, col_ok, GATES)
            tl.store(dh_out + tile, direct, mask=mask)
        tl.debug_barrier()
        mean_g = (s1 / GH)[:, None]
        mean_gx = (s2 / GH)[:, None]
        rstd = tl.load(rstd_t, mask=row_ok, other=0.0)[:, None]
        # Pass A3: the gradient of the raw recurrent matmul, from the workspace's gained gradients.
        for j0 in range(0, H, BLOCK_H):
            cols = j0 + tl.arange(0, BLOCK_H)
            col_ok = cols < H
            mask = row_ok[:, None] & col_ok[None, :]
            gate_tile = gates_t + rows[:, None] * GH + cols[None, :]
            g0, g1, g2, g3 = load_gate_inputs(ws_rows + cols[None, :], H, mask, GATES)
            x0, x1, x2, x3 = load_gate_inputs(xhat_ptr + gate_tile, H, mask, GATES)
            dv0 = rstd * (g0 - mean_g - x0 * mean_gx)
            dv1 = rstd * (g1 - mean_g - x1 * mean_gx)
            dv2 = rstd * (g2 - mean_g - x2 * mean_gx)
            dv3 = rstd * (g3 - mean_g - x3 * mean_gx)
            _store_gates(draw_ptr + gate_tile, H, dv0, dv1, dv2, dv3, mask, GATES)
        tl.debug_barrier()
        # Phase B: dh_{t-1} += draw_t @ W_hh.
        recurrent_backward_matmul(dh_out, draw_ptr + gates_t, w_hh_ptr, rows, row_ok, H, H, GATES, BLOCK_H, BLOCK_K,
                                  PRECISION)  # fmt: skip
        tl.debug_barrier()
