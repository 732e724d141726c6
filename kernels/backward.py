"""Backward recurrence: one launch runs every time step of one layer and direction in reverse order.

Grid: one program per tile of BLOCK_N batch rows, as in the forward. Each step has two phases separated by
`tl.debug_barrier` (all data involved belongs to the program's own rows):
  A. per hidden tile: dh = dh_carry + dy_t; the cell's local derivatives (from the saved activations and states)
     give the pre-activation gate gradients dgates_t, written to dgi (and, for the GRU, whose n-gate gradient w.r.t.
     the recurrent term differs by the factor r, to dgh); LSTM's dc carry is updated in place; the part of dh_{t-1}
     that bypasses W_hh (GRU: dh * z; rows past their length: all of dh) is written to the other dh slot.
     With an LSTM projection (PROJ, h = W_hr raw, raw = o * tanh(c), h of width P) a phase A0 first forms the total
     dL/dh_t [BN, P] per tile of P (stored to dhp for the host's dW_hr; rows past their length pass it to dh_{t-1}),
     and phase A takes dL/draw = dL/dh_t @ W_hr (K = P) as its dh.
  B. per tile of dh_{t-1} (width P): += dgh_t @ W_hh with `tl.dot` (K = G*H, gate by gate).
Weight and bias gradients are not formed here: the host does them as a few large matmuls over all T*N rows.
"""

import triton
import triton.language as tl

from .cells import cell_backward, load_f32, skip_finished_rows, store_gate_grads
from .modes import GRU, LSTM
from .timesteps import backward_step_slots


@triton.jit
def _matmul_rows(acc, a_ptr, a_stride, w_ptr, w_stride, K, rows, row_ok, cols, col_ok, BLOCK_K: tl.constexpr,
                 PRECISION: tl.constexpr):  # fmt: skip
    """acc[BN, BH] += A[rows, :K] @ W[:K, cols], both row-major with row strides a_stride and w_stride."""
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < K
        a = tl.load(a_ptr + rows[:, None] * a_stride + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptr + ks[:, None] * w_stride + cols[None, :], mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(a.to(w.dtype), w, acc, input_precision=PRECISION)
    return acc


@triton.jit
def recurrent_backward_matmul(dh_out, src, w_hh_ptr, rows, row_ok, H, P, GATES: tl.constexpr, BLOCK_H: tl.constexpr,
                              BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    """Phase B: dh_{t-1} [rows, P] += src [rows, G*H] @ W_hh [G*H, P], tile by tile of dh_{t-1}, gate by gate (src:
    the gradient of h W_hh^T)."""
    GH = GATES * H
    for j0 in range(0, P, BLOCK_H):
        cols = j0 + tl.arange(0, BLOCK_H)
        col_ok = cols < P
        mask = row_ok[:, None] & col_ok[None, :]
        tile = rows[:, None] * P + cols[None, :]
        acc = tl.load(dh_out + tile, mask=mask, other=0.0)
        for gate in tl.static_range(GATES):
            acc = _matmul_rows(acc, src + gate * H, GH, w_hh_ptr + gate * H * P, P, H, rows, row_ok, cols, col_ok,
                               BLOCK_K, PRECISION)  # fmt: skip
        tl.store(dh_out + tile, acc, mask=mask)


@triton.jit(do_not_specialize=["T", "reverse"])  # N, H specialised by class (multiple of 16 or not, 1): vector loads
def recurrence_backward_kernel(
    dy_ptr,  # [T, N, P] gradient of the output sequence (any float dtype)
    saved_ptr,  # [T, N, SLOTS*H] activations saved by the forward
    hs_ptr,  # [T+1, N, P] fp32 state sequence from the forward (slot t + reverse is the state before step t)
    cs_ptr,  # [T+1, N, H] fp32 cell states (LSTM)
    w_hh_ptr,  # [G*H, P]
    lengths_ptr,  # [N] integer (if HAS_LENGTHS)
    dh_ptr,  # [2, N, P] fp32: slot 0 holds dL/dh_n on entry; slot T % 2 holds dL/dh_0 on exit
    dc_ptr,  # [N, H] fp32 (LSTM): dL/dc_n on entry, dL/dc_0 on exit
    dgi_ptr,  # [T, N, G*H] out: dL/d(gate pre-activation), the gradient of x W_ih^T + b_ih
    dgh_ptr,  # [T, N, G*H] out (GRU only): the gradient of W_hh h + b_hh; other cells use dgi
    w_hr_ptr,  # [P, H] LSTM projection (read only if PROJ)
    dhp_ptr,  # [T, N, P] fp32 out (only if PROJ): dL/dh_t of the rows that stepped (zero elsewhere)
    T,
    N,
    H,
    P,  # width of h: the projection size with PROJ, else H
    MODE: tl.constexpr,
    GATES: tl.constexpr,
    reverse,  # 0 or 1, a runtime value: one compiled kernel serves both directions
    HAS_LENGTHS: tl.constexpr,
    SLOTS: tl.constexpr,
    PROJ: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
    state_size = N * P
    GH = GATES * H
    for step in range(T):
        t, prev, new = backward_step_slots(step, T, reverse)
        dh_in = dh_ptr + (step % 2) * state_size
        dh_out = dh_ptr + ((step + 1) % 2) * state_size
        dy_t = dy_ptr + tl.cast(t, tl.int64) * state_size
        dhp_t = dhp_ptr + tl.cast(t, tl.int64) * state_size
        saved_t = saved_ptr + tl.cast(t, tl.int64) * N * SLOTS * H
        dgi_t = dgi_ptr + tl.cast(t, tl.int64) * N * GH
        dgh_t = dgh_ptr + tl.cast(t, tl.int64) * N * GH
        h_prev_ptr = hs_ptr + tl.cast(prev, tl.int64) * state_size
        h_new_ptr = hs_ptr + tl.cast(new, tl.int64) * state_size
        if HAS_LENGTHS:
            valid = (t < length)[:, None]
        if PROJ:
            # Phase A0: the total dL/dh_t, tile by tile of P.
            for j0 in range(0, P, BLOCK_H):
                cols = j0 + tl.arange(0, BLOCK_H)
                mask = row_ok[:, None] & (cols < P)[None, :]
                tile = rows[:, None] * P + cols[None, :]
                dh = load_f32(dh_in + tile, mask)
                dy = load_f32(dy_t + tile, mask)
                through = tl.zeros_like(dh)  # not dh * 0.0: an inf upstream gradient would become NaN
                if HAS_LENGTHS:  # rows past their length did not step: their (output-free) dh goes to h_{t-1}
                    through = tl.where(valid, 0.0, dh)
                    dh = tl.where(valid, dh + dy, 0.0)
                else:
                    dh = dh + dy
                tl.store(dhp_t + tile, dh, mask=mask)
                tl.store(dh_out + tile, through, mask=mask)
            tl.debug_barrier()
        # Phase A: gate gradients, tile by tile.
        for j0 in range(0, H, BLOCK_H):
            cols = j0 + tl.arange(0, BLOCK_H)
            col_ok = cols < H
            mask = row_ok[:, None] & col_ok[None, :]
            tile = rows[:, None] * H + cols[None, :]
            if PROJ:  # dL/draw = dL/dh_t @ W_hr; padded outputs are already out of dhp
                dh = _matmul_rows(tl.zeros([BLOCK_N, BLOCK_H], dtype=tl.float32), dhp_t, P, w_hr_ptr, H, P, rows,
                                  row_ok, cols, col_ok, BLOCK_K, PRECISION)  # fmt: skip
                h_prev, h_new = dh, dh  # unused by the LSTM cell
            else:
                dy = load_f32(dy_t + tile, mask)
                if HAS_LENGTHS:
                    dy = tl.where(valid, dy, 0.0)  # padded outputs are constant zeros
                dh = load_f32(dh_in + tile, mask) + dy
                h_prev = load_f32(h_prev_ptr + tile, mask)
                h_new = load_f32(h_new_ptr + tile, mask)
            gate_out = dgi_t + rows[:, None] * GH + cols[None, :]
            saved = saved_t + rows[:, None] * (SLOTS * H) + cols[None, :]
            if SLOTS > 0:
                a0 = load_f32(saved, mask)
                a1 = load_f32(saved + H, mask)
                a2 = load_f32(saved + 2 * H, mask)
                a3 = load_f32(saved + 3 * H, mask)
            else:
                a0, a1, a2, a3 = dh, dh, dh, dh  # unused
            if MODE == LSTM:
                c_prev = load_f32(cs_ptr + tl.cast(prev, tl.int64) * N * H + tile, mask)
                c_new = load_f32(cs_ptr + tl.cast(new, tl.int64) * N * H + tile, mask)
                dc = load_f32(dc_ptr + tile, mask)
            else:
                c_prev, c_new, dc = dh, dh, dh  # unused
            d0, d1, d2, d2_hh, d3, dc_prev, direct = cell_backward(
                dh, dc, a0, a1, a2, a3, h_prev, h_new, c_prev, c_new, MODE
            )
            if HAS_LENGTHS:
                d0, d1, d2, d2_hh, d3, dc_prev, direct = skip_finished_rows(
                    valid, d0, d1, d2, d2_hh, d3, dc_prev, direct, dc, dh
                )
            if MODE == LSTM:
                tl.store(dc_ptr + tile, dc_prev, mask=mask)
            store_gate_grads(gate_out, dgh_t + rows[:, None] * GH + cols[None, :], d0, d1, d2, d2_hh, d3, H, mask,
                             MODE, GATES)  # fmt: skip
            if not PROJ:  # with PROJ, phase A0 wrote the direct part (of width P)
                tl.store(dh_out + tile, direct, mask=mask)
        tl.debug_barrier()
        # Phase B: dh_{t-1} += dgates_t @ W_hh, tile by tile of dh_{t-1}.
        if MODE == GRU:
            src = dgh_t
        else:
            src = dgi_t
        recurrent_backward_matmul(dh_out, src, w_hh_ptr, rows, row_ok, H, P, GATES, BLOCK_H, BLOCK_K, PRECISION)
        tl.debug_barrier()
