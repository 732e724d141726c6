"""Forward recurrence: one launch runs every time step of one layer and direction.

Grid: one program per tile of BLOCK_N batch rows. A program owns its rows for the whole sequence; per step it loops
over the hidden tiles (BLOCK_H columns of every gate at once), computes the tile's recurrent matmul against the
concatenated W_hh with `tl.dot` (K = width of h, in BLOCK_K chunks), adds the precomputed input projection, applies
the cell's nonlinearities and state update in fp32, and writes h (and c) into the state sequence. With an LSTM
projection (PROJ) the hidden tiles write o * tanh(c) to a scratch row instead, and a second phase per step forms
h = W_hr (o * tanh(c)) tile by tile of P (K = H). A `tl.debug_barrier` ends each phase: the next one reads every
column this program just wrote, and nobody else writes it, so no grid-wide synchronisation is needed (which is also
why the same code runs under Triton's interpreter).
"""

import triton
import triton.language as tl

from .cells import load_f32, step_forward
from .modes import LSTM
from .timesteps import forward_step_slots


@triton.jit
def _hh_dot(acc, h, w_hh_ptr, gate, H, P, cols, col_ok, ks, k_ok, PRECISION: tl.constexpr):
    """acc[BN, BH] += h[BN, BK] @ W_hh[gate*H + cols, ks]^T (W_hh is [G*H, P], row-major)."""
    w = tl.load(
        w_hh_ptr + (gate * H + cols)[None, :] * P + ks[:, None], mask=col_ok[None, :] & k_ok[:, None], other=0.0
    )
    return tl.dot(h, w, acc, input_precision=PRECISION)


@triton.jit
def recurrent_tile(h_prev_ptr, w_hh_ptr, rows, row_ok, cols, col_ok, H, P, GATES: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    """The recurrent matmul of all gates of one tile, h_prev [BN, P] @ W_hh[gate rows of the tile]^T: four fp32
    [BLOCK_N, BLOCK_H] accumulators (unused gates stay zero)."""
    acc0 = tl.zeros([BLOCK_N, BLOCK_H], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK_N, BLOCK_H], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_N, BLOCK_H], dtype=tl.float32)
    acc3 = tl.zeros([BLOCK_N, BLOCK_H], dtype=tl.float32)
    for k0 in range(0, P, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < P
        h = tl.load(h_prev_ptr + rows[:, None] * P + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        h = h.to(w_hh_ptr.dtype.element_ty)
        acc0 = _hh_dot(acc0, h, w_hh_ptr, 0, H, P, cols, col_ok, ks, k_ok, PRECISION)
        if GATES > 1:
            acc1 = _hh_dot(acc1, h, w_hh_ptr, 1, H, P, cols, col_ok, ks, k_ok, PRECISION)
            acc2 = _hh_dot(acc2, h, w_hh_ptr, 2, H, P, cols, col_ok, ks, k_ok, PRECISION)
        if GATES > 3:
            acc3 = _hh_dot(acc3, h, w_hh_ptr, 3, H, P, cols, col_ok, ks, k_ok, PRECISION)
    return acc0, acc1, acc2, acc3


@triton.jit
def _bias(b_ptr, gate: tl.constexpr, H, cols, col_ok, HAS_BIAS: tl.constexpr, GATES: tl.constexpr):
    """b_hh of one gate of the tile as a [1, BH] row; 0 without bias or for a gate the cell does not have."""
    if HAS_BIAS and gate < GATES:
        return tl.load(b_ptr + gate * H + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    else:
        return 0.0


@triton.jit
def _store_state(h, h_prev, h_ptr, y_ptr, mask, valid, HAS_LENGTHS: tl.constexpr):
    """Store one tile of h_t and of the output y_t. Rows past their length keep their state and output zeros
    (fusedrnn.reference's semantics)."""
    y = h
    if HAS_LENGTHS:
        y = tl.where(valid, h, 0.0)
        h = tl.where(valid, h, h_prev)
    tl.store(h_ptr, h, mask=mask)
    tl.store(y_ptr, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["T", "reverse"])  # N, H specialised by class (multiple of 16 or not, 1): vector loads
def recurrence_forward_kernel(
    gi_ptr,  # [T, N, G*H] input projection x W_ih^T + b_ih, input dtype
    w_hh_ptr,  # [G*H, H] input dtype
    b_hh_ptr,  # [G*H] (read only if HAS_BIAS)
    lengths_ptr,  # [N] integer (read only if HAS_LENGTHS): row n is valid for t < lengths[n]
    hs_ptr,  # [S, N, P] fp32 state sequence; the host put h0 in the first slot read
    cs_ptr,  # [S, N, H] fp32 cell states (LSTM only), c0 in the first slot read
    y_ptr,  # [T, N, P] output, input dtype
    saved_ptr,  # [T, N, SLOTS*H] gate activations for the backward (written only if SAVE), input dtype
    w_hr_ptr,  # [P, H] LSTM projection (read only if PROJ), input dtype
    raw_ptr,  # [N, H] fp32 scratch (only if PROJ): o * tanh(c) of the step, before the projection
    T,
    N,
    H,
    P,  # width of h: the projection size with PROJ, else H
    MODE: tl.constexpr,
    GATES: tl.constexpr,
    reverse,  # 0 or 1, a runtime value: one compiled kernel serves both directions
    HAS_BIAS: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    SAVE: tl.constexpr,  # S = T + 1: the whole state sequence is kept; else S = 2 (ping-pong)
    SLOTS: tl.constexpr,
    PROJ: tl.constexpr,  # LSTM with projection: h_t = W_hr (o * tanh(c_t)), a second matmul phase per step
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
    for step in range(T):
        t, prev, new = forward_step_slots(step, T, reverse, SAVE)
        h_prev_ptr = hs_ptr + tl.cast(prev, tl.int64) * state_size
        h_new_ptr = hs_ptr + tl.cast(new, tl.int64) * state_size
        gi_t = gi_ptr + tl.cast(t, tl.int64) * N * GATES * H
        c_prev_ptr = cs_ptr + tl.cast(prev, tl.int64) * N * H
        c_new_ptr = cs_ptr + tl.cast(new, tl.int64) * N * H
        y_t = y_ptr + tl.cast(t, tl.int64) * state_size
        saved_t = saved_ptr + tl.cast(t, tl.int64) * N * SLOTS * H
        if HAS_LENGTHS:
            valid = (t < length)[:, None]
        else:
            valid = row_ok[:, None]  # unused
        for j0 in range(0, H, BLOCK_H):
            cols = j0 + tl.arange(0, BLOCK_H)
            col_ok = cols < H
            mask = row_ok[:, None] & col_ok[None, :]
            tile = rows[:, None] * H + cols[None, :]
            acc0, acc1, acc2, acc3 = recurrent_tile(h_prev_ptr, w_hh_ptr, rows, row_ok, cols, col_ok, H, P, GATES,
                                                    BLOCK_N, BLOCK_H, BLOCK_K, PRECISION)  # fmt: skip
            if PROJ:
                h_prev = acc0  # unused: the LSTM cell does not read h_prev, and lengths apply in the projection phase
            else:
                h_prev = load_f32(h_prev_ptr + tile, mask)
            if MODE == LSTM:
                c_prev = load_f32(c_prev_ptr + tile, mask)
            else:
                c_prev = h_prev  # unused
            h, c, a0, a1, a2, a3 = step_forward(
                gi_t + rows[:, None] * (GATES * H) + cols[None, :], H, mask,
                acc0 + _bias(b_hh_ptr, 0, H, cols, col_ok, HAS_BIAS, GATES),
                acc1 + _bias(b_hh_ptr, 1, H, cols, col_ok, HAS_BIAS, GATES),
                acc2 + _bias(b_hh_ptr, 2, H, cols, col_ok, HAS_BIAS, GATES),
                acc3 + _bias(b_hh_ptr, 3, H, cols, col_ok, HAS_BIAS, GATES),
                h_prev, c_prev, MODE, GATES,
            )  # fmt: skip
            if MODE == LSTM:
                if HAS_LENGTHS:
                    c = tl.where(valid, c, c_prev)
                tl.store(c_new_ptr + tile, c, mask=mask)
            if SAVE:
                if SLOTS > 0:
                    out_ty = saved_ptr.dtype.element_ty
                    saved = saved_t + rows[:, None] * (SLOTS * H) + cols[None, :]
                    tl.store(saved, a0.to(out_ty), mask=mask)
                    tl.store(saved + H, a1.to(out_ty), mask=mask)
                    tl.store(saved + 2 * H, a2.to(out_ty), mask=mask)
                    tl.store(saved + 3 * H, a3.to(out_ty), mask=mask)
            if PROJ:
                tl.store(raw_ptr + tile, h, mask=mask)
            else:
                _store_state(h, h_prev, h_new_ptr + tile, y_t + tile, mask, valid, HAS_LENGTHS)
        # Every hidden tile of this step is written before anything reads it back (all by this program).
        tl.debug_barrier()
        if PROJ:  # h_t [BN, P] = raw [BN, H] @ W_hr^T, tile by tile of P
            for j0 in range(0, P, BLOCK_H):
                cols = j0 + tl.arange(0, BLOCK_H)
                col_ok = cols < P
                mask = row_ok[:, None] & col_ok[None, :]
                tile = rows[:, None] * P + cols[None, :]
                acc = tl.zeros([BLOCK_N, BLOCK_H], dtype=tl.float32)
                for k0 in range(0, H, BLOCK_K):
                    ks = k0 + tl.arange(0, BLOCK_K)
                    k_ok = ks < H
                    raw = tl.load(raw_ptr + rows[:, None] * H + ks[None, :], mask=row_ok[:, None] & k_ok[None, :],
                                  other=0.0)  # fmt: skip
                    w = tl.load(w_hr_ptr + cols[None, :] * H + ks[:, None], mask=col_ok[None, :] & k_ok[:, None],
                                other=0.0)  # fmt: skip
                    acc = tl.dot(raw.to(w.dtype), w, acc, input_precision=PRECISION)
                h_prev = load_f32(h_prev_ptr + tile, mask)
                _store_state(acc, h_prev, h_new_ptr + tile, y_t + tile, mask, valid, HAS_LENGTHS)
            tl.debug_barrier()
