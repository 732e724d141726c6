"""Backward recurrence: one launch runs every time step of one layer and direction in reverse order.

Grid: one program per tile of BLOCK_N batch rows, as in the forward. Each step has two phases separated by
`tl.debug_barrier` (all data involved belongs to the program's own rows):
  A. per hidden tile: dh = dh_carry + dy_t; the cell's local derivatives (from the saved activations and states)
     give the pre-activation gate gradients dgates_t, written to dgi (and, for the GRU, whose n-gate gradient w.r.t.
     the recurrent term differs by the factor r, to dgh); LSTM's dc carry is updated in place; the part of dh_{t-1}
     that bypasses W_hh (GRU: dh * z; rows past their length: all of dh) is written to the other dh slot.
  B. per hidden tile of dh_{t-1}: += dgh_t @ W_hh with `tl.dot` (K = G*H, gate by gate).
Weight and bias gradients are not formed here: the host does them as a few large matmuls over all T*N rows.
"""

import triton
import triton.language as tl

from .cells import cell_backward, load_f32, skip_finished_rows, store_gate_grads
from .modes import GRU, LSTM


@triton.jit
def _dgh_dot(acc, dgh_t, w_hh_ptr, gate, GH, H, rows, row_ok, cols, col_ok, BLOCK_K: tl.constexpr,
             PRECISION: tl.constexpr):
    """acc[BN, BH] += dgh_t[rows, gate*H + :] @ W_hh[gate*H + :, cols] (W_hh is [G*H, H], row-major)."""
    for k0 in range(0, H, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < H
        d_mask = row_ok[:, None] & k_ok[None, :]
        d = tl.load(dgh_t + rows[:, None] * GH + (gate * H + ks)[None, :], mask=d_mask, other=0.0)
        w_mask = k_ok[:, None] & col_ok[None, :]
        w = tl.load(w_hh_ptr + (gate * H + ks)[:, None] * H + cols[None, :], mask=w_mask, other=0.0)
        acc = tl.dot(d.to(w.dtype), w, acc, input_precision=PRECISION)
    return acc


@triton.jit(do_not_specialize=["T", "reverse"])  # N, H specialised by class (multiple of 16 or not, 1): vector loads
def recurrence_backward_kernel(
    dy_ptr,  # [T, N, H] gradient of the output sequence (any float dtype)
    saved_ptr,  # [T, N, SLOTS*H] activations saved by the forward
    hs_ptr,  # [T+1, N, H] fp32 state sequence from the forward (slot t + reverse is the state before step t)
    cs_ptr,  # [T+1, N, H] fp32 cell states (LSTM)
    w_hh_ptr,  # [G*H, H]
    lengths_ptr,  # [N] integer (if HAS_LENGTHS)
    dh_ptr,  # [2, N, H] fp32: slot 0 holds dL/dh_n on entry; slot T % 2 holds dL/dh_0 on exit
    dc_ptr,  # [N, H] fp32 (LSTM): dL/dc_n on entry, dL/dc_0 on exit
    dgi_ptr,  # [T, N, G*H] out: dL/d(gate pre-activation), the gradient of x W_ih^T + b_ih
    dgh_ptr,  # [T, N, G*H] out (GRU only): the gradient of W_hh h + b_hh; other cells use dgi
    T,
    N,
    H,
    MODE: tl.constexpr,
    GATES: tl.constexpr,
    reverse,  # 0 or 1, a runtime value: one compiled kernel serves both directions
    HAS_LENGTHS: tl.constexpr,
    SLOTS: tl.constexpr,
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
    for step in range(T):
        t = (T - 1 - step) + reverse * (2 * step + 1 - T)  # forward direction: T-1 .. 0; reverse: 0 .. T-1
        prev = t + reverse
        new = t + 1 - reverse
        dh_in = dh_ptr + (step % 2) * state_size
        dh_out = dh_ptr + ((step + 1) % 2) * state_size
        dy_t = dy_ptr + tl.cast(t, tl.int64) * state_size
        saved_t = saved_ptr + tl.cast(t, tl.int64) * N * SLOTS * H
        dgi_t = dgi_ptr + tl.cast(t, tl.int64) * N * GH
        dgh_t = dgh_ptr + tl.cast(t, tl.int64) * N * GH
        h_prev_ptr = hs_ptr + tl.cast(prev, tl.int64) * state_size
        h_new_ptr = hs_ptr + tl.cast(new, tl.int64) * state_size
        if HAS_LENGTHS:
            valid = (t < length)[:, None]
        # Phase A: gate gradients, tile by tile.
        for j0 in range(0, H, BLOCK_H):
            cols = j0 + tl.arange(0, BLOCK_H)
            col_ok = cols < H
            mask = row_ok[:, None] & col_ok[None, :]
            tile = rows[:, None] * H + cols[None, :]
            dy = load_f32(dy_t + tile, mask)
            if HAS_LENGTHS:
                dy = tl.where(valid, dy, 0.0)  # padded outputs are constant zeros
            dh = load_f32(dh_in + tile, mask) + dy
            gate_out = dgi_t + rows[:, None] * GH + cols[None, :]
            saved = saved_t + rows[:, None] * (SLOTS * H) + cols[None, :]
            if SLOTS > 0:
                a0 = load_f32(saved, mask)
                a1 = load_f32(saved + H, mask)
                a2 = load_f32(saved + 2 * H, mask)
                a3 = load_f32(saved + 3 * H, mask)
            else:
                a0, a1, a2, a3 = dh, dh, dh, dh  # unused
            h_prev = load_f32(h_prev_ptr + tile, mask)
            h_new = load_f32(h_new_ptr + tile, mask)
            if MODE == LSTM:
                c_prev = load_f32(cs_ptr + tl.cast(prev, tl.int64) * state_size + tile, mask)
                c_new = load_f32(cs_ptr + tl.cast(new, tl.int64) * state_size + tile, mask)
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
            tl.store(dh_out + tile, direct, mask=mask)
        tl.debug_barrier()
        # Phase B: dh_{t-1} += dgates_t @ W_hh, tile by tile of dh_{t-1}.
        if MODE == GRU:
            src = dgh_t
        else:
            src = dgi_t
        for j0 in range(0, H, BLOCK_H):
            cols = j0 + tl.arange(0, BLOCK_H)
            col_ok = cols < H
            mask = row_ok[:, None] & col_ok[None, :]
            tile = rows[:, None] * H + cols[None, :]
            acc = tl.load(dh_out + tile, mask=mask, other=0.0)
            for gate in tl.static_range(GATES):
                acc = _dgh_dot(acc, src, w_hh_ptr, gate, GH, H, rows, row_ok, cols, col_ok, BLOCK_K, PRECISION)
            tl.store(dh_out + tile, acc, mask=mask)
        tl.debug_barrier()
