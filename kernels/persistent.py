"""Persistent split-hidden recurrence kernels for the GPU: W_hh stays on chip, one grid-wide barrier per step.

*GPU only, and not yet run on a GPU*: the programs of a launch exchange h (dgates in the backward) through global
memory every step and wait for each other with an atomic counter, so all of them must be resident at once (the host
launches at most one program per SM) — under Triton's interpreter, which runs programs one after another, a launch
with more than one program would spin forever, so the host refuses that there.

Grid: one program per slice of BLOCK_H hidden units; every program covers all batch rows (BLOCK_N >= N).
Forward, per step: h_{t-1} [N, H] is read from the state sequence (L2, not L1: other SMs wrote it), one `tl.dot`
against the program's W_hh slice [H, G*BLOCK_H] (all gates side by side, loaded once before the time loop) gives the
slice's recurrent terms, the cell update runs on registers (c never leaves them), h_t's slice is written, barrier.
Backward, per step: the slice's gate gradients from registers (dh, dc carried there) and the saved activations are
written, barrier, then dh_{t-1}'s slice = direct part + dgates_t [N, G*H] @ W_hh[:, slice] (G dots, K = H).
State layouts are the tiled kernels' (fusedrnn.kernels.forward / backward), so either backward takes either forward.
"""

import triton
import triton.language as tl

from .cells import cell_backward, load_f32, skip_finished_rows, store_gate_grads, step_forward
from .modes import GRU, LSTM


@triton.jit
def _load_shared(ptr, mask):
    """Data another program wrote during this launch: read through L2 (".cg"), never from a stale L1 line."""
    return tl.load(ptr, mask=mask, other=0.0, cache_modifier=".cg")


@triton.jit
def _grid_barrier(sync_ptr, step):
    """Wait until every program of the launch has finished step `step` (the counter only grows: no reset race)."""
    tl.debug_barrier()  # all of this program's stores of the step are issued before it signals
    tl.atomic_add(sync_ptr, 1, sem="release", scope="gpu")
    target = (step + 1) * tl.num_programs(0)
    arrived = tl.atomic_add(sync_ptr, 0, sem="acquire", scope="gpu")
    while arrived < target:
        arrived = tl.atomic_add(sync_ptr, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()


@triton.jit
def _split_gates(acc, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, GATES_P2: tl.constexpr):
    """[BN, GATES_P2*BH] with gate-major columns -> four [BN, BH] tiles (placeholders beyond GATES_P2)."""
    if GATES_P2 == 1:
        return acc, acc, acc, acc
    else:
        a = tl.permute(tl.reshape(acc, [BLOCK_N, 2, 2, BLOCK_H]), (0, 3, 1, 2))  # [BN, BH, gate // 2, gate % 2]
        even, odd = tl.split(a)
        g0, g2 = tl.split(even)
        g1, g3 = tl.split(odd)
        return g0, g1, g2, g3


@triton.jit(do_not_specialize=["T", "N", "H", "reverse"])  # one kernel for every size
def persistent_forward_kernel(
    gi_ptr, w_hh_ptr, b_hh_ptr, lengths_ptr, hs_ptr, cs_ptr, y_ptr, saved_ptr,  # as recurrence_forward_kernel
    sync_ptr,  # [1] int32, zero at launch
    T, N, H,
    MODE: tl.constexpr, GATES: tl.constexpr, reverse, HAS_BIAS: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, SAVE: tl.constexpr, SLOTS: tl.constexpr,
    GATES_P2: tl.constexpr,  # 1 or 4: GATES rounded up to a power of two (the GRU's fourth gate is all zeros)
    BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,  # BLOCK_K >= H: the whole reduction
    PRECISION: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    rows = tl.arange(0, BLOCK_N)
    row_ok = rows < N
    cols = pid * BLOCK_H + tl.arange(0, BLOCK_H)
    col_ok = cols < H
    mask = row_ok[:, None] & col_ok[None, :]
    tile = rows[:, None] * H + cols[None, :]
    ks = tl.arange(0, BLOCK_K)
    k_ok = ks < H
    # This program's W_hh slice, loaded once: column r is gate r // BLOCK_H of hidden unit pid*BLOCK_H + r % BLOCK_H.
    r = tl.arange(0, GATES_P2 * BLOCK_H)
    r_gate = r // BLOCK_H
    r_unit = pid * BLOCK_H + r % BLOCK_H
    r_ok = (r_gate < GATES) & (r_unit < H)
    w = tl.load(w_hh_ptr + (r_gate * H + r_unit)[None, :] * H + ks[:, None], mask=k_ok[:, None] & r_ok[None, :],
                other=0.0)  # fmt: skip
    if HAS_BIAS:
        bias = tl.load(b_hh_ptr + r_gate * H + r_unit, mask=r_ok, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros([GATES_P2 * BLOCK_H], dtype=tl.float32)
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
    state_size = N * H
    if SAVE:
        first = reverse * T
    else:
        first = 0
    first_offset = tl.cast(first, tl.int64) * state_size  # 64-bit: T * N * H may exceed 2**31 for long sequences
    h = load_f32(hs_ptr + first_offset + tile, mask)  # this program's slice of the state, kept in registers
    if MODE == LSTM:
        c = load_f32(cs_ptr + first_offset + tile, mask)
    else:
        c = h  # unused
    for step in range(T):
        t = step + reverse * (T - 1 - 2 * step)
        if SAVE:
            prev = t + reverse
            new = t + 1 - reverse
        else:
            prev = step % 2
            new = (step + 1) % 2
        h_all = _load_shared(hs_ptr + tl.cast(prev, tl.int64) * state_size + rows[:, None] * H + ks[None, :],
                             row_ok[:, None] & k_ok[None, :])  # fmt: skip
        acc = tl.dot(h_all.to(w.dtype), w, input_precision=PRECISION) + bias[None, :]
        gh0, gh1, gh2, gh3 = _split_gates(acc, BLOCK_N, BLOCK_H, GATES_P2)
        gi_tile = gi_ptr + tl.cast(t, tl.int64) * N * GATES * H + rows[:, None] * (GATES * H) + cols[None, :]
        h_new, c_new, a0, a1, a2, a3 = step_forward(gi_tile, H, mask, gh0, gh1, gh2, gh3, h, c, MODE, GATES)
        y = h_new
        if HAS_LENGTHS:
            valid = (t < length)[:, None]
            y = tl.where(valid, h_new, 0.0)
            h_new = tl.where(valid, h_new, h)
            c_new = tl.where(valid, c_new, c)
        h = h_new
        c = c_new
        tl.store(hs_ptr + tl.cast(new, tl.int64) * state_size + tile, h, mask=mask)
        tl.store(y_ptr + tl.cast(t, tl.int64) * state_size + tile, y.to(y_ptr.dtype.element_ty), mask=mask)
        if MODE == LSTM:
            tl.store(cs_ptr + tl.cast(new, tl.int64) * state_size + tile, c, mask=mask)
        if SAVE:
            if SLOTS > 0:
                out_ty = saved_ptr.dtype.element_ty
                saved = saved_ptr + tl.cast(t, tl.int64) * N * SLOTS * H + rows[:, None] * (SLOTS * H) + cols[None, :]
                tl.store(saved, a0.to(out_ty), mask=mask)
                tl.store(saved + H, a1.to(out_ty), mask=mask)
                tl.store(saved + 2 * H, a2.to(out_ty), mask=mask)
                tl.store(saved + 3 * H, a3.to(out_ty), mask=mask)
        _grid_barrier(sync_ptr, step)


@triton.jit
def _w_hh_columns(w_hh_ptr, gate: tl.constexpr, H, ks, k_ok, cols, col_ok, GATES: tl.constexpr):
    """W_hh[gate*H + ks, cols] as a [BK, BH] dot operand (zeros for a gate the cell does not have)."""
    if gate < GATES:
        return tl.load(w_hh_ptr + (gate * H + ks)[:, None] * H + cols[None, :], mask=k_ok[:, None] & col_ok[None, :],
                       other=0.0)  # fmt: skip
    else:
        return tl.zeros([ks.shape[0], cols.shape[0]], dtype=w_hh_ptr.dtype.element_ty)


@triton.jit(do_not_specialize=["T", "N", "H", "reverse"])  # one kernel for every size
def persistent_backward_kernel(
    dy_ptr, saved_ptr, hs_ptr, cs_ptr, w_hh_ptr, lengths_ptr, dh_ptr, dc_ptr, dgi_ptr, dgh_ptr,  # as the tiled one
    sync_ptr,  # [1] int32, zero at launch
    T, N, H,
    MODE: tl.constexpr, GATES: tl.constexpr, reverse, HAS_LENGTHS: tl.constexpr,
    SLOTS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    rows = tl.arange(0, BLOCK_N)
    row_ok = rows < N
    cols = pid * BLOCK_H + tl.arange(0, BLOCK_H)
    col_ok = cols < H
    mask = row_ok[:, None] & col_ok[None, :]
    tile = rows[:, None] * H + cols[None, :]
    ks = tl.arange(0, BLOCK_K)
    k_ok = ks < H
    # The W_hh columns of this program's hidden slice, per gate, loaded once.
    w0 = _w_hh_columns(w_hh_ptr, 0, H, ks, k_ok, cols, col_ok, GATES)
    w1 = _w_hh_columns(w_hh_ptr, 1, H, ks, k_ok, cols, col_ok, GATES)
    w2 = _w_hh_columns(w_hh_ptr, 2, H, ks, k_ok, cols, col_ok, GATES)
    w3 = _w_hh_columns(w_hh_ptr, 3, H, ks, k_ok, cols, col_ok, GATES)
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
    state_size = N * H
    GH = GATES * H
    dh = load_f32(dh_ptr + tile, mask)  # dL/dh_n; then dL/dh carried in registers
    if MODE == LSTM:
        dc = load_f32(dc_ptr + tile, mask)
    else:
        dc = dh  # unused
    for step in range(T):
        t = (T - 1 - step) + reverse * (2 * step + 1 - T)
        prev = t + reverse
        new = t + 1 - reverse
        dy = load_f32(dy_ptr + tl.cast(t, tl.int64) * state_size + tile, mask)
        if HAS_LENGTHS:
            valid = (t < length)[:, None]
            dy = tl.where(valid, dy, 0.0)
        dh = dh + dy
        if SLOTS > 0:
            saved = saved_ptr + tl.cast(t, tl.int64) * N * SLOTS * H + rows[:, None] * (SLOTS * H) + cols[None, :]
            a0 = load_f32(saved, mask)
            a1 = load_f32(saved + H, mask)
            a2 = load_f32(saved + 2 * H, mask)
            a3 = load_f32(saved + 3 * H, mask)
        else:
            a0, a1, a2, a3 = dh, dh, dh, dh  # unused
        h_prev = load_f32(hs_ptr + tl.cast(prev, tl.int64) * state_size + tile, mask)
        h_new = load_f32(hs_ptr + tl.cast(new, tl.int64) * state_size + tile, mask)
        if MODE == LSTM:
            c_prev = load_f32(cs_ptr + tl.cast(prev, tl.int64) * state_size + tile, mask)
            c_new = load_f32(cs_ptr + tl.cast(new, tl.int64) * state_size + tile, mask)
        else:
            c_prev, c_new = dh, dh  # unused
        d0, d1, d2, d2_hh, d3, dc_prev, direct = cell_backward(dh, dc, a0, a1, a2, a3, h_prev, h_new, c_prev, c_new,
                                                               MODE)  # fmt: skip
        if HAS_LENGTHS:
            d0, d1, d2, d2_hh, d3, dc_prev, direct = skip_finished_rows(
                valid, d0, d1, d2, d2_hh, d3, dc_prev, direct, dc, dh
            )
        dc = dc_prev
        dgi_t = dgi_ptr + tl.cast(t, tl.int64) * N * GH
        dgh_t = dgh_ptr + tl.cast(t, tl.int64) * N * GH
        store_gate_grads(dgi_t + rows[:, None] * GH + cols[None, :], dgh_t + rows[:, None] * GH + cols[None, :],
                         d0, d1, d2, d2_hh, d3, H, mask, MODE, GATES)  # fmt: skip
        if MODE == GRU:
            src = dgh_t
        else:
            src = dgi_t
        _grid_barrier(sync_ptr, step)
        # dh_{t-1} of this slice: the direct part plus dgates_t (every program's slices) @ W_hh[:, slice].
        k_mask = row_ok[:, None] & k_ok[None, :]
        d_rows = src + rows[:, None] * GH + ks[None, :]
        acc = tl.dot(_load_shared(d_rows, k_mask), w0, direct, input_precision=PRECISION)
        if GATES > 1:
            acc = tl.dot(_load_shared(d_rows + H, k_mask), w1, acc, input_precision=PRECISION)
            acc = tl.dot(_load_shared(d_rows + 2 * H, k_mask), w2, acc, input_precision=PRECISION)
        if GATES > 3:
            acc = tl.dot(_load_shared(d_rows + 3 * H, k_mask), w3, acc, input_precision=PRECISION)
        dh = acc
    tl.store(dh_ptr + (T % 2) * state_size + tile, dh, mask=mask)  # where the host reads dL/dh_0 (as the tiled one)
    if MODE == LSTM:
        tl.store(dc_ptr + tile, dc, mask=mask)
